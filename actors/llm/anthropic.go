package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// anthropicVersion is the Messages API version fangd speaks.
const anthropicVersion = "2023-06-01"

// anthropicClient speaks Anthropic's Messages API, POST {base_url}/v1/messages.
type anthropicClient struct{}

type anthRequest struct {
	Model     string    `json:"model"`
	MaxTokens int       `json:"max_tokens"`
	System    string    `json:"system,omitempty"`
	Messages  []Message `json:"messages"`
}

type anthResponse struct {
	Type    string `json:"type"`
	Model   string `json:"model"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason string `json:"stop_reason"`
	Usage      *struct {
		InputTokens              int64 `json:"input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	} `json:"usage"`
}

type anthError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func (anthropicClient) chat(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request) (*Response, error) {
	raw, err := json.Marshal(anthRequest{Model: req.Model, MaxTokens: req.MaxTokens, System: req.System, Messages: req.Messages})
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/messages", bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("anthropic-version", anthropicVersion)
	if key != "" {
		hreq.Header.Set("x-api-key", key)
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e anthError
		reason := strings.TrimSpace(string(data[:min(len(data), 300)]))
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			reason = e.Error.Type + ": " + e.Error.Message
		}
		return nil, statusError(prov, resp, reason)
	}
	if len(data) > maxResponseBytes {
		return nil, newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a response over %d bytes", prov, maxResponseBytes))
	}
	var out anthResponse
	if err := json.Unmarshal(data, &out); err != nil || out.Type != "message" {
		pe := newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a response that is not a Messages API message", prov))
		if err != nil {
			pe.withCause(err)
		}
		return nil, pe
	}
	r := &Response{Model: out.Model, StopReason: out.StopReason}
	var text strings.Builder
	for _, c := range out.Content {
		if c.Type == "text" {
			text.WriteString(c.Text)
		}
	}
	r.Text = text.String()
	if u := out.Usage; u != nil {
		// Anthropic's input_tokens excludes the cached parts; fangd's
		// InputTokens counts the whole prompt, as OpenAI's API does.
		r.Usage = Usage{
			InputTokens:       u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens,
			CachedInputTokens: u.CacheReadInputTokens,
			CacheWriteTokens:  u.CacheCreationInputTokens,
			OutputTokens:      u.OutputTokens,
		}
	} else {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text), true
	}
	return r, nil
}
