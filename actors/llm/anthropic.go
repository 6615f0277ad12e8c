package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// anthropicVersion is the Messages API version fangd speaks.
const anthropicVersion = "2023-06-01"

// anthropicClient speaks Anthropic's Messages API, POST {base_url}/v1/messages.
type anthropicClient struct{}

type anthRequest struct {
	Model     string        `json:"model"`
	MaxTokens int           `json:"max_tokens"`
	System    string        `json:"system,omitempty"`
	Messages  []anthMessage `json:"messages"`
	Tools     []anthTool    `json:"tools,omitempty"`
	// Temperature is 0-1 on Anthropic's API (agents are validated
	// against MaxTemperature).
	Temperature *float64 `json:"temperature,omitempty"`
	Stream      bool     `json:"stream,omitempty"`
}

// anthMessage's Content is a string for plain text and a list of blocks
// when the message carries tool_use or tool_result blocks.
type anthMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

type anthBlock struct {
	Type string `json:"type"`
	// text
	Text string `json:"text,omitempty"`
	// tool_use
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// tool_result
	ToolUseID string `json:"tool_use_id,omitempty"`
	Content   string `json:"content,omitempty"`
	IsError   bool   `json:"is_error,omitempty"`
}

type anthTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// anthMessages maps the neutral conversation onto Messages API messages:
// an assistant message with tool calls becomes text plus tool_use blocks,
// and a run of tool results becomes one user message of tool_result
// blocks (the API wants roles to alternate).
func anthMessages(msgs []Message) []anthMessage {
	out := make([]anthMessage, 0, len(msgs))
	for _, m := range msgs {
		switch {
		case m.Role == RoleTool:
			b := anthBlock{Type: "tool_result", ToolUseID: m.ToolCallID, Content: m.Content, IsError: m.IsError}
			if n := len(out); n > 0 && out[n-1].Role == RoleUser {
				if blocks, ok := out[n-1].Content.([]anthBlock); ok && len(blocks) > 0 && blocks[0].Type == "tool_result" {
					out[n-1].Content = append(blocks, b)
					continue
				}
			}
			out = append(out, anthMessage{Role: RoleUser, Content: []anthBlock{b}})
		case len(m.ToolCalls) > 0:
			var blocks []anthBlock
			if m.Content != "" {
				blocks = append(blocks, anthBlock{Type: "text", Text: m.Content})
			}
			for _, tc := range m.ToolCalls {
				input := tc.Arguments
				if !json.Valid(input) || len(bytes.TrimSpace(input)) == 0 || bytes.TrimSpace(input)[0] != '{' {
					input = json.RawMessage(`{}`)
				}
				blocks = append(blocks, anthBlock{Type: "tool_use", ID: tc.ID, Name: tc.Name, Input: input})
			}
			out = append(out, anthMessage{Role: m.Role, Content: blocks})
		default:
			out = append(out, anthMessage{Role: m.Role, Content: m.Content})
		}
	}
	return out
}

type anthResponse struct {
	Type    string `json:"type"`
	Model   string `json:"model"`
	Content []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	StopReason string     `json:"stop_reason"`
	Usage      *anthUsage `json:"usage"`
}

type anthUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

// usage normalises Anthropic's counts: its input_tokens excludes the
// cached parts; fangd's InputTokens counts the whole prompt, as OpenAI's
// API does.
func (u *anthUsage) usage() Usage {
	return Usage{
		InputTokens:       u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens,
		CachedInputTokens: u.CacheReadInputTokens,
		CacheWriteTokens:  u.CacheCreationInputTokens,
		OutputTokens:      u.OutputTokens,
	}
}

type anthError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// post sends the Messages API request; stream asks for server-sent events.
func (anthropicClient) post(ctx context.Context, hc *http.Client, baseURL, key string, req Request, stream bool) (*http.Response, error) {
	body := anthRequest{Model: req.Model, MaxTokens: req.MaxTokens, System: req.System, Messages: anthMessages(req.Messages),
		Temperature: req.Temperature, Stream: stream}
	for _, t := range req.Tools {
		body.Tools = append(body.Tools, anthTool{Name: t.Name, Description: t.Description, InputSchema: schemaOf(t)})
	}
	return postJSON(ctx, hc, baseURL+"/v1/messages", body, stream, "anthropic-version", anthropicVersion, "x-api-key", key)
}

// anthStatusError is the error for a non-2xx answer.
func anthStatusError(prov string, resp *http.Response, data []byte) *ProviderError {
	var e anthError
	reason := strings.TrimSpace(string(data[:min(len(data), 300)]))
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		reason = e.Error.Type + ": " + e.Error.Message
	}
	return statusError(prov, resp, reason)
}

func (c anthropicClient) chat(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request) (*Response, error) {
	_, r, err := exchange(prov, req, nil, anthWire, func(stream bool) (*http.Response, error) { return c.post(ctx, hc, baseURL, key, req, stream) })
	return r, err
}

// anthWire is Anthropic's error and whole-answer format.
var anthWire = wire{
	statusErr: func(prov string, resp *http.Response, data []byte) error {
		return anthStatusError(prov, resp, data)
	},
	decode: decodeAnth,
}

// decodeAnth reads a whole (not streamed) Messages API message.
func decodeAnth(prov string, status int, data []byte, req Request) (*Response, error) {
	if len(data) > maxResponseBytes {
		return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s sent a response over %d bytes", prov, maxResponseBytes))
	}
	var out anthResponse
	if err := json.Unmarshal(data, &out); err != nil || out.Type != "message" {
		pe := newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s sent a response that is not a Messages API message", prov))
		if err != nil {
			pe.withCause(err)
		}
		return nil, pe
	}
	r := &Response{Model: out.Model, StopReason: out.StopReason}
	var text strings.Builder
	for _, c := range out.Content {
		switch c.Type {
		case "text":
			text.WriteString(c.Text)
		case "tool_use":
			if c.ID == "" || c.Name == "" {
				return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s sent a tool_use block without id or name", prov))
			}
			r.ToolCalls = append(r.ToolCalls, ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Input})
		}
	}
	r.Text = text.String()
	if out.Usage != nil {
		r.Usage = out.Usage.usage()
	} else {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text+callsText(r.ToolCalls)), true
	}
	return r, nil
}
