package llm

import (
	"context"
	"encoding/json"
	"fmt"
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
// rate limit from our caller. The official Go SDKs were measured against
// these clients for streaming (docs/agents.md, "The official SDKs,
// measured"): several times the allocations and +26 MB of binary.
type openAIClient struct {
	// maxCompletionTokens sends max_completion_tokens instead of max_tokens:
	// OpenAI's own API deprecated max_tokens and its reasoning models refuse
	// it, while most compatible servers only know max_tokens.
	maxCompletionTokens bool
}

type oaiMessage struct {
	Role string `json:"role"`
	// Content is null on an assistant message that only calls tools.
	Content    *string       `json:"content"`
	ToolCalls  []oaiToolCall `json:"tool_calls,omitempty"`
	ToolCallID string        `json:"tool_call_id,omitempty"`
}

type oaiToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"` // "function"
	Function struct {
		Name string `json:"name"`
		// Arguments is JSON text inside a JSON string.
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaiTool struct {
	Type     string `json:"type"` // "function"
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

type oaiRequest struct {
	Model               string       `json:"model"`
	Messages            []oaiMessage `json:"messages"`
	Tools               []oaiTool    `json:"tools,omitempty"`
	MaxTokens           int          `json:"max_tokens,omitempty"`
	MaxCompletionTokens int          `json:"max_completion_tokens,omitempty"`
	Temperature         *float64     `json:"temperature,omitempty"`
	Stream              bool         `json:"stream"`
	// StreamOptions asks for the usage chunk at the end of a stream.
	StreamOptions *oaiStreamOptions `json:"stream_options,omitempty"`
}

type oaiStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// emptySchema is the argument schema of a tool that takes none.
var emptySchema = json.RawMessage(`{"type":"object","properties":{}}`)

func schemaOf(t Tool) json.RawMessage {
	if len(t.InputSchema) == 0 {
		return emptySchema
	}
	return t.InputSchema
}

// oaiMessages maps the neutral conversation onto chat completion messages.
func oaiMessages(req Request) []oaiMessage {
	out := make([]oaiMessage, 0, len(req.Messages)+1)
	if req.System != "" {
		out = append(out, oaiMessage{Role: "system", Content: &req.System})
	}
	for _, m := range req.Messages {
		om := oaiMessage{Role: m.Role, ToolCallID: m.ToolCallID}
		content := m.Content
		if content != "" || len(m.ToolCalls) == 0 {
			om.Content = &content
		}
		for _, tc := range m.ToolCalls {
			var c oaiToolCall
			c.ID, c.Type = tc.ID, "function"
			c.Function.Name, c.Function.Arguments = tc.Name, string(tc.Arguments)
			if c.Function.Arguments == "" {
				c.Function.Arguments = "{}"
			}
			om.ToolCalls = append(om.ToolCalls, c)
		}
		out = append(out, om)
	}
	return out
}

func oaiTools(tools []Tool) []oaiTool {
	out := make([]oaiTool, 0, len(tools))
	for _, t := range tools {
		var ot oaiTool
		ot.Type = "function"
		ot.Function.Name, ot.Function.Description, ot.Function.Parameters = t.Name, t.Description, schemaOf(t)
		out = append(out, ot)
	}
	return out
}

type oaiResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content   *string       `json:"content"`
			Refusal   *string       `json:"refusal"`
			ToolCalls []oaiToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaiUsage       `json:"usage"`
	Error json.RawMessage `json:"error"`
}

type oaiUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	// DeepSeek reports its context cache this way.
	PromptCacheHitTokens int64 `json:"prompt_cache_hit_tokens"`
}

func (u *oaiUsage) usage() Usage {
	out := Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens}
	if d := u.PromptTokensDetails; d != nil {
		out.CachedInputTokens = d.CachedTokens
	}
	if out.CachedInputTokens == 0 {
		out.CachedInputTokens = u.PromptCacheHitTokens
	}
	out.CachedInputTokens = min(out.CachedInputTokens, out.InputTokens)
	return out
}

// post sends the chat completion request; stream asks for server-sent
// events with the usage in a last chunk (stream_options.include_usage).
func (c openAIClient) post(ctx context.Context, hc *http.Client, baseURL, key string, req Request, stream bool) (*http.Response, error) {
	body := oaiRequest{Model: req.Model, Messages: oaiMessages(req), Temperature: req.Temperature, Stream: stream}
	if len(req.Tools) > 0 {
		body.Tools = oaiTools(req.Tools)
	}
	if c.maxCompletionTokens {
		body.MaxCompletionTokens = req.MaxTokens
	} else {
		body.MaxTokens = req.MaxTokens
	}
	if stream {
		body.StreamOptions = &oaiStreamOptions{IncludeUsage: true}
	}
	auth := ""
	if key != "" {
		auth = "Bearer " + key
	}
	return postJSON(ctx, hc, baseURL+"/chat/completions", body, stream, "Authorization", auth)
}

func (c openAIClient) chat(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request) (*Response, error) {
	_, r, err := exchange(prov, req, nil, oaiWire, func(stream bool) (*http.Response, error) { return c.post(ctx, hc, baseURL, key, req, stream) })
	return r, err
}

// oaiWire is OpenAI's error and whole-answer format.
var oaiWire = wire{
	statusErr: func(prov string, resp *http.Response, data []byte) error {
		return statusError(prov, resp, openAIErrorText(data))
	},
	decode: decodeOAI,
}

// decodeOAI reads a whole (not streamed) chat completion.
func decodeOAI(prov string, status int, data []byte, req Request) (*Response, error) {
	if len(data) > maxResponseBytes {
		return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s sent a response over %d bytes", prov, maxResponseBytes))
	}
	var out oaiResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s sent a response that is not chat completion JSON", prov)).withCause(err)
	}
	if len(out.Choices) == 0 {
		// OpenRouter reports some upstream failures as a 200 with an error.
		if reason := openAIErrorText(data); reason != "" && len(out.Error) > 0 {
			return nil, newProviderError(prov, OutcomeServerError, status, 0, fmt.Sprintf("provider %s failed: %s", prov, cleanReason(reason)))
		}
		return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s answered with no choices", prov))
	}
	ch := out.Choices[0]
	r := &Response{Model: out.Model, StopReason: ch.FinishReason}
	switch {
	case ch.Message.Content != nil:
		r.Text = *ch.Message.Content
	case ch.Message.Refusal != nil:
		r.Text = *ch.Message.Refusal
	}
	for i, tc := range ch.Message.ToolCalls {
		if tc.ID == "" {
			// Some compatible servers (older Ollama) send no id; the tool
			// message that answers the call needs one.
			tc.ID = fmt.Sprintf("call_%d", i)
		}
		if tc.Function.Name == "" {
			return nil, newProviderError(prov, OutcomeBadResponse, status, 0, fmt.Sprintf("provider %s asked for a tool call with no function name", prov))
		}
		r.ToolCalls = append(r.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: json.RawMessage(tc.Function.Arguments)})
	}
	if out.Usage != nil {
		r.Usage = out.Usage.usage()
	} else {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text+callsText(r.ToolCalls)), true
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
