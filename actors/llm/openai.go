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

// openAIClient speaks the OpenAI chat completions API, POST
// {base_url}/chat/completions, which OpenAI, Groq, OpenRouter, Together,
// Mistral, DeepSeek, Ollama, vLLM and LM Studio all serve.
//
// Written by hand rather than with a vendor SDK: fangd needs the common
// subset of nine vendors (one POST, one JSON shape), each vendor's own
// spelling of cached tokens, and no hidden retries — an SDK that retries a
// 429 on its own would spend budget the ledger never reserved and hide the
// rate limit from our caller.
type openAIClient struct {
	// maxCompletionTokens sends max_completion_tokens instead of max_tokens:
	// OpenAI's own API deprecated max_tokens and its reasoning models refuse
	// it, while most compatible servers only know max_tokens.
	maxCompletionTokens bool
}

type oaiMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type oaiRequest struct {
	Model               string       `json:"model"`
	Messages            []oaiMessage `json:"messages"`
	MaxTokens           int          `json:"max_tokens,omitempty"`
	MaxCompletionTokens int          `json:"max_completion_tokens,omitempty"`
	Stream              bool         `json:"stream"`
}

type oaiResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		// DeepSeek reports its context cache this way.
		PromptCacheHitTokens int64 `json:"prompt_cache_hit_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

func (c openAIClient) chat(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request) (*Response, error) {
	body := oaiRequest{Model: req.Model, Messages: make([]oaiMessage, 0, len(req.Messages)+1)}
	if c.maxCompletionTokens {
		body.MaxCompletionTokens = req.MaxTokens
	} else {
		body.MaxTokens = req.MaxTokens
	}
	if req.System != "" {
		body.Messages = append(body.Messages, oaiMessage{Role: "system", Content: req.System})
	}
	for _, m := range req.Messages {
		body.Messages = append(body.Messages, oaiMessage(m))
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions", bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	if key != "" {
		hreq.Header.Set("Authorization", "Bearer "+key)
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
		return nil, statusError(prov, resp, openAIErrorText(data))
	}
	if len(data) > maxResponseBytes {
		return nil, newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a response over %d bytes", prov, maxResponseBytes))
	}
	var out oaiResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a response that is not chat completion JSON", prov)).withCause(err)
	}
	if len(out.Choices) == 0 {
		// OpenRouter reports some upstream failures as a 200 with an error.
		if reason := openAIErrorText(data); reason != "" && len(out.Error) > 0 {
			return nil, newProviderError(prov, OutcomeServerError, resp.StatusCode, 0, fmt.Sprintf("provider %s failed: %s", prov, cleanReason(reason)))
		}
		return nil, newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s answered with no choices", prov))
	}
	ch := out.Choices[0]
	r := &Response{Model: out.Model, StopReason: ch.FinishReason}
	switch {
	case ch.Message.Content != nil:
		r.Text = *ch.Message.Content
	case ch.Message.Refusal != nil:
		r.Text = *ch.Message.Refusal
	}
	if out.Usage != nil {
		r.Usage = Usage{InputTokens: out.Usage.PromptTokens, OutputTokens: out.Usage.CompletionTokens}
		if d := out.Usage.PromptTokensDetails; d != nil {
			r.Usage.CachedInputTokens = d.CachedTokens
		}
		if r.Usage.CachedInputTokens == 0 {
			r.Usage.CachedInputTokens = out.Usage.PromptCacheHitTokens
		}
		r.Usage.CachedInputTokens = min(r.Usage.CachedInputTokens, r.Usage.InputTokens)
	} else {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text), true
	}
	return r, nil
}

// openAIErrorText digs the reason out of the error shapes compatible
// servers use: {"error":{"message":...}}, {"error":"..."}, {"message":...}.
func openAIErrorText(data []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  string          `json:"detail"`
	}
	if json.Unmarshal(data, &v) != nil {
		return strings.TrimSpace(string(data[:min(len(data), 300)]))
	}
	if len(v.Error) > 0 {
		var obj struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		if json.Unmarshal(v.Error, &obj) == nil && obj.Message != "" {
			return obj.Message
		}
		var s string
		if json.Unmarshal(v.Error, &s) == nil {
			return s
		}
	}
	if v.Message != "" {
		return v.Message
	}
	return v.Detail
}
