// Package llmtest runs fake LLM providers on loopback for tests: one that
// follows OpenAI's chat completions API and one that follows Anthropic's
// Messages API, with the documented request checks, response shapes and
// usage fields (cached tokens included), and knobs for latency, errors and
// 429s. Nothing here reaches the internet.
package llmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Failure is an injected error answer.
type Failure struct {
	Status     int
	RetryAfter int    // seconds; 0 sends no Retry-After
	Message    string // the provider's error message
}

// Request is what the fake received, decoded to a neutral shape.
type Request struct {
	Model     string
	System    string
	Messages  []Message
	MaxTokens int
	// MaxTokensField is the JSON field that carried MaxTokens.
	MaxTokensField string
	// Tools are the tools offered, by name.
	Tools []Tool
	// Temperature is the sampling temperature sent; nil when absent.
	Temperature *float64
	// Stream is set when the request asked for a streamed answer, and
	// IncludeUsage when it asked for OpenAI's usage chunk at the end.
	Stream, IncludeUsage bool
}

// Message is one message of a received request. A "tool" message (an
// OpenAI tool message or one Anthropic tool_result block) carries the
// result of ToolCallID.
type Message struct {
	Role, Content string
	ToolCalls     []ToolCall
	ToolCallID    string
	IsError       bool
}

// Tool is one offered tool.
type Tool struct {
	Name, Description string
	Schema            json.RawMessage
}

// ToolCall is a call the model makes (in a Reply) or made (in a received
// assistant message). Arguments is JSON text.
type ToolCall struct {
	ID, Name, Arguments string
}

// Reply is a scripted answer: text, tool calls, or both.
type Reply struct {
	Text      string
	ToolCalls []ToolCall
}

// Fake is a fake provider. Configure it before or between calls; it is
// safe for concurrent use.
type Fake struct {
	Server *httptest.Server
	// BaseURL is what goes in [providers.<name>] base_url.
	BaseURL string
	api     string

	mu        sync.Mutex
	key       string
	latency   time.Duration
	cached    int64
	outTokens int64
	models    map[string]bool
	failures  []Failure
	noUsage   bool
	requests  []Request
	reply     func(Request) Reply
	calls     int
	// streaming knobs (stream.go)
	chunkDelay time.Duration
	midFail    *midFailure
	cuts       chan struct{}
	// OnHeld, when set before the first call, is told how long each
	// request was really held for its latency (the latency plus the
	// timer's own overshoot), so that a benchmark can subtract the
	// provider's time exactly.
	OnHeld func(r Request, held time.Duration)
}

// NewOpenAI starts a fake OpenAI-compatible server (base URL ends in /v1)
// that requires "Authorization: Bearer <key>" (nothing when key is empty,
// like a local Ollama or vLLM).
func NewOpenAI(key string) *Fake { return start("openai", key) }

// NewAnthropic starts a fake Anthropic Messages API server that requires
// "x-api-key: <key>" and an anthropic-version header.
func NewAnthropic(key string) *Fake { return start("anthropic", key) }

func start(api, key string) *Fake {
	f := &Fake{api: api, key: key, outTokens: 12, cuts: make(chan struct{}, 64)}
	mux := http.NewServeMux()
	if api == "openai" {
		mux.HandleFunc("POST /v1/chat/completions", f.openAI)
	} else {
		mux.HandleFunc("POST /v1/messages", f.anthropic)
	}
	f.Server = httptest.NewServer(mux)
	f.BaseURL = f.Server.URL
	if api == "openai" {
		f.BaseURL += "/v1"
	}
	return f
}

// Close stops the server.
func (f *Fake) Close() { f.Server.Close() }

// SetLatency delays every answer by d (or until the client gives up).
func (f *Fake) SetLatency(d time.Duration) { f.mu.Lock(); f.latency = d; f.mu.Unlock() }

// SetCachedTokens makes every answer report n prompt tokens as cache hits.
func (f *Fake) SetCachedTokens(n int64) { f.mu.Lock(); f.cached = n; f.mu.Unlock() }

// SetOutputTokens sets the output tokens reported (capped by max tokens).
func (f *Fake) SetOutputTokens(n int64) { f.mu.Lock(); f.outTokens = n; f.mu.Unlock() }

// SetModels restricts the models the fake knows; others get the
// provider's "model not found" error. No call means every model exists.
func (f *Fake) SetModels(ids ...string) {
	f.mu.Lock()
	f.models = map[string]bool{}
	for _, id := range ids {
		f.models[id] = true
	}
	f.mu.Unlock()
}

// OmitUsage makes answers carry no usage object (as some local servers do).
func (f *Fake) OmitUsage(on bool) { f.mu.Lock(); f.noUsage = on; f.mu.Unlock() }

// SetReply replaces the default answer ("echo: <last user message>").
func (f *Fake) SetReply(fn func(Request) string) {
	f.SetResponder(func(r Request) Reply { return Reply{Text: fn(r)} })
}

// SetResponder scripts answers that may call tools: the model "decides"
// what to do from the request it received (for example, call a tool when
// the last message is the user's, answer with the tool's result when it is
// a tool result).
func (f *Fake) SetResponder(fn func(Request) Reply) { f.mu.Lock(); f.reply = fn; f.mu.Unlock() }

// LastMessage is the request's last message.
func (r Request) LastMessage() Message {
	if len(r.Messages) == 0 {
		return Message{}
	}
	return r.Messages[len(r.Messages)-1]
}

// FailNext queues failures answered, in order, to the next calls.
func (f *Fake) FailNext(fs ...Failure) {
	f.mu.Lock()
	f.failures = append(f.failures, fs...)
	f.mu.Unlock()
}

// Requests returns every request received so far.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// InputTokens is how the fake counts a request's prompt: about 4 bytes a
// token plus 4 per message, always below the byte count fangd reserves.
func InputTokens(r Request) int64 {
	n := int64(3)
	if r.System != "" {
		n += int64(len(r.System)+3)/4 + 4
	}
	for _, m := range r.Messages {
		n += int64(len(m.Content)+3)/4 + 4
		for _, c := range m.ToolCalls {
			n += int64(len(c.Name)+len(c.Arguments)+3)/4 + 4
		}
	}
	for _, t := range r.Tools {
		n += int64(len(t.Name)+len(t.Description)+len(t.Schema)+3)/4 + 4
	}
	return n
}

// answer decides what to send for r: a failure, or a reply and usage.
func (f *Fake) answer(w http.ResponseWriter, req *http.Request, r Request) (rep Reply, in, cached, out int64, usage bool, ok bool) {
	f.mu.Lock()
	f.requests = append(f.requests, r)
	f.calls++
	callNo := f.calls
	latency := f.latency
	var fail *Failure
	if len(f.failures) > 0 {
		fail = &f.failures[0]
		f.failures = f.failures[1:]
	}
	known := f.models == nil || f.models[r.Model]
	reply := f.reply
	cached, out, usage = f.cached, f.outTokens, !f.noUsage
	f.mu.Unlock()

	if latency > 0 {
		began := time.Now()
		select {
		case <-time.After(latency):
		case <-req.Context().Done():
			return Reply{}, 0, 0, 0, false, false
		}
		if f.OnHeld != nil {
			f.OnHeld(r, time.Since(began))
		}
	}
	if fail != nil {
		if fail.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fail.RetryAfter))
		}
		f.writeError(w, fail.Status, errorType(f.api, fail.Status), fail.Message)
		return Reply{}, 0, 0, 0, false, false
	}
	if !known {
		if f.api == "openai" {
			f.writeError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", r.Model))
		} else {
			f.writeError(w, http.StatusNotFound, "not_found_error", "model: "+r.Model)
		}
		return Reply{}, 0, 0, 0, false, false
	}
	if reply != nil {
		rep = reply(r)
	} else if len(r.Messages) > 0 {
		rep.Text = "echo: " + r.Messages[len(r.Messages)-1].Content
	}
	known = true
	for i := range rep.ToolCalls {
		if rep.ToolCalls[i].ID == "" {
			rep.ToolCalls[i].ID = fmt.Sprintf("call_%d_%d", callNo, i)
		}
		if rep.ToolCalls[i].Arguments == "" {
			rep.ToolCalls[i].Arguments = "{}"
		}
		if !offered(r.Tools, rep.ToolCalls[i].Name) {
			known = false
		}
	}
	if !known {
		// A real model only calls tools it was offered; a script that
		// does otherwise is a test bug, reported loudly.
		f.writeError(w, http.StatusInternalServerError, "server_error", "llmtest: the script called a tool that was not offered")
		return Reply{}, 0, 0, 0, false, false
	}
	in = InputTokens(r)
	cached = min(cached, in)
	out = min(out, int64(r.MaxTokens))
	return rep, in, cached, out, usage, true
}

func offered(tools []Tool, name string) bool {
	for _, t := range tools {
		if t.Name == name {
			return true
		}
	}
	return false
}

func errorType(api string, status int) string {
	switch {
	case status == 429:
		return "rate_limit_error"
	case status == 529:
		return "overloaded_error"
	case status >= 500:
		if api == "openai" {
			return "server_error"
		}
		return "api_error"
	case status == 401:
		return "authentication_error"
	}
	return "invalid_request_error"
}

func (f *Fake) writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if f.api == "openai" {
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

func (f *Fake) openAI(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	key := f.key
	f.mu.Unlock()
	if key != "" && req.Header.Get("Authorization") != "Bearer "+key {
		f.writeError(w, http.StatusUnauthorized, "invalid_request_error", "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.")
		return
	}
	type oaiCall struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	var body struct {
		Model    string `json:"model"`
		Messages []struct {
			Role       string    `json:"role"`
			Content    *string   `json:"content"`
			ToolCalls  []oaiCall `json:"tool_calls"`
			ToolCallID string    `json:"tool_call_id"`
		} `json:"messages"`
		Tools []struct {
			Type     string `json:"type"`
			Function struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				Parameters  json.RawMessage `json:"parameters"`
			} `json:"function"`
		} `json:"tools"`
		MaxTokens           int      `json:"max_tokens"`
		MaxCompletionTokens int      `json:"max_completion_tokens"`
		Temperature         *float64 `json:"temperature"`
		Stream              bool     `json:"stream"`
		StreamOptions       *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Model == "" || len(body.Messages) == 0 {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
		return
	}
	if body.StreamOptions != nil && !body.Stream {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		return
	}
	// OpenAI documents temperature as a number between 0 and 2.
	if t := body.Temperature; t != nil && (*t < 0 || *t > 2) {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got %v instead.", *t))
		return
	}
	r := Request{Model: body.Model, MaxTokens: body.MaxTokens, MaxTokensField: "max_tokens", Stream: body.Stream,
		IncludeUsage: body.StreamOptions != nil && body.StreamOptions.IncludeUsage, Temperature: body.Temperature}
	if body.MaxCompletionTokens > 0 {
		r.MaxTokens, r.MaxTokensField = body.MaxCompletionTokens, "max_completion_tokens"
	}
	for i, t := range body.Tools {
		if t.Type != "function" || t.Function.Name == "" || !json.Valid(t.Function.Parameters) {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("Invalid 'tools[%d]': a function tool needs type, function.name and function.parameters.", i))
			return
		}
		r.Tools = append(r.Tools, Tool{Name: t.Function.Name, Description: t.Function.Description, Schema: t.Function.Parameters})
	}
	// OpenAI's rules: every tool_call_id of an assistant message is
	// answered by a following tool message, and a tool message answers a
	// call of the assistant message before it.
	open := map[string]bool{}
	for i, m := range body.Messages {
		content := ""
		if m.Content != nil {
			content = *m.Content
		}
		switch m.Role {
		case "system":
			r.System = content
			continue
		case "tool":
			if !open[m.ToolCallID] {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (messages[%d]).", i))
				return
			}
			delete(open, m.ToolCallID)
		default:
			if len(open) > 0 {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'.")
				return
			}
			if m.Content == nil && len(m.ToolCalls) == 0 {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("Invalid value for 'content' of messages[%d]: expected a string, got null.", i))
				return
			}
		}
		msg := Message{Role: m.Role, Content: content, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			if c.Type != "function" || c.ID == "" {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages[%d].tool_calls: each call needs an id and type 'function'.", i))
				return
			}
			open[c.ID] = true
			msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
		r.Messages = append(r.Messages, msg)
	}
	if len(open) > 0 {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'.")
		return
	}
	rep, in, cached, out, usage, ok := f.answer(w, req, r)
	if !ok {
		return
	}
	if r.Stream {
		f.streamOpenAI(w, req, r, rep, in, cached, out, usage && r.IncludeUsage)
		return
	}
	msg := map[string]any{"role": "assistant", "content": rep.Text, "refusal": nil}
	finish := "stop"
	if len(rep.ToolCalls) > 0 {
		calls := make([]any, len(rep.ToolCalls))
		for i, c := range rep.ToolCalls {
			calls[i] = map[string]any{"id": c.ID, "type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Arguments}}
		}
		msg["tool_calls"] = calls
		if rep.Text == "" {
			msg["content"] = nil
		}
		finish = "tool_calls"
	}
	resp := map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": time.Now().Unix(), "model": body.Model,
		"system_fingerprint": "fp_fake",
		"choices":            []any{map[string]any{"index": 0, "finish_reason": finish, "logprobs": nil, "message": msg}},
	}
	if usage {
		resp["usage"] = map[string]any{
			"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out,
			"prompt_tokens_details":     map[string]any{"cached_tokens": cached, "audio_tokens": 0},
			"completion_tokens_details": map[string]any{"reasoning_tokens": 0, "audio_tokens": 0},
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (f *Fake) anthropic(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	key := f.key
	f.mu.Unlock()
	if key != "" && req.Header.Get("x-api-key") != key {
		f.writeError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return
	}
	if req.Header.Get("anthropic-version") == "" {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	var body struct {
		Model     string `json:"model"`
		MaxTokens int    `json:"max_tokens"`
		System    string `json:"system"`
		Messages  []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Tools []struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			InputSchema json.RawMessage `json:"input_schema"`
		} `json:"tools"`
		Temperature *float64 `json:"temperature"`
		Stream      bool     `json:"stream"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Model == "" || body.MaxTokens < 1 || len(body.Messages) == 0 {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "model, max_tokens and messages are required")
		return
	}
	// Anthropic documents temperature as ranging from 0.0 to 1.0.
	if t := body.Temperature; t != nil && (*t < 0 || *t > 1) {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "temperature: range: 0..1")
		return
	}
	r := Request{Model: body.Model, System: body.System, MaxTokens: body.MaxTokens, MaxTokensField: "max_tokens", Stream: body.Stream,
		Temperature: body.Temperature}
	for i, t := range body.Tools {
		var schema struct {
			Type string `json:"type"`
		}
		if t.Name == "" || json.Unmarshal(t.InputSchema, &schema) != nil || schema.Type != "object" {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("tools.%d: name and an input_schema of type object are required", i))
			return
		}
		r.Tools = append(r.Tools, Tool{Name: t.Name, Description: t.Description, Schema: t.InputSchema})
	}
	type block struct {
		Type      string          `json:"type"`
		Text      string          `json:"text"`
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Input     json.RawMessage `json:"input"`
		ToolUseID string          `json:"tool_use_id"`
		Content   json.RawMessage `json:"content"`
		IsError   bool            `json:"is_error"`
	}
	// The Messages API's rules: roles alternate starting with "user"; the
	// tool_use blocks of an assistant message are each answered by a
	// tool_result block in the very next user message.
	var open map[string]bool
	for i, m := range body.Messages {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"")
			return
		}
		var text string
		var blocks []block
		if json.Unmarshal(m.Content, &text) != nil {
			if err := json.Unmarshal(m.Content, &blocks); err != nil || len(blocks) == 0 {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d.content: a string or a non-empty list of blocks is required", i))
				return
			}
		} else if strings.TrimSpace(text) == "" {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: content must be non-empty", i))
			return
		}
		answered := open
		open = nil
		if text != "" {
			if len(answered) > 0 {
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: tool_use ids were found without tool_result blocks immediately after", i-1))
				return
			}
			r.Messages = append(r.Messages, Message{Role: m.Role, Content: text})
			continue
		}
		msg := Message{Role: m.Role}
		for _, b := range blocks {
			switch {
			case b.Type == "text":
				msg.Content += b.Text
			case b.Type == "tool_use" && m.Role == "assistant":
				if b.ID == "" || b.Name == "" || !json.Valid(b.Input) {
					f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: tool_use needs id, name and input", i))
					return
				}
				if open == nil {
					open = map[string]bool{}
				}
				open[b.ID] = true
				msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: b.ID, Name: b.Name, Arguments: string(b.Input)})
			case b.Type == "tool_result" && m.Role == "user":
				if !answered[b.ToolUseID] {
					f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: unexpected tool_use_id found in tool_result blocks: %s. Each tool_result block must have a corresponding tool_use block in the previous message.", i, b.ToolUseID))
					return
				}
				delete(answered, b.ToolUseID)
				var content string
				_ = json.Unmarshal(b.Content, &content)
				r.Messages = append(r.Messages, Message{Role: "tool", Content: content, ToolCallID: b.ToolUseID, IsError: b.IsError})
			default:
				f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: block type %q is not allowed here", i, b.Type))
				return
			}
		}
		if len(answered) > 0 {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: tool_use ids were found without tool_result blocks immediately after", i-1))
			return
		}
		if msg.Content != "" || len(msg.ToolCalls) > 0 {
			r.Messages = append(r.Messages, msg)
		}
	}
	rep, in, cached, out, usage, ok := f.answer(w, req, r)
	if !ok {
		return
	}
	if r.Stream {
		f.streamAnthropic(w, req, r, rep, in, cached, out, usage)
		return
	}
	content := []any{}
	if rep.Text != "" || len(rep.ToolCalls) == 0 {
		content = append(content, map[string]any{"type": "text", "text": rep.Text})
	}
	stop := "end_turn"
	for _, c := range rep.ToolCalls {
		content = append(content, map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": json.RawMessage(c.Arguments)})
		stop = "tool_use"
	}
	resp := map[string]any{
		"id": "msg_fake", "type": "message", "role": "assistant", "model": body.Model,
		"content": content, "stop_reason": stop, "stop_sequence": nil,
	}
	if usage {
		// Anthropic's input_tokens excludes cache reads and writes.
		resp["usage"] = map[string]any{
			"input_tokens": in - cached, "output_tokens": out,
			"cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}
