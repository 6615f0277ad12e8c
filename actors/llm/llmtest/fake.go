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
}

// Message is one message of a received request.
type Message struct{ Role, Content string }

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
	reply     func(Request) string
}

// NewOpenAI starts a fake OpenAI-compatible server (base URL ends in /v1)
// that requires "Authorization: Bearer <key>" (nothing when key is empty,
// like a local Ollama or vLLM).
func NewOpenAI(key string) *Fake { return start("openai", key) }

// NewAnthropic starts a fake Anthropic Messages API server that requires
// "x-api-key: <key>" and an anthropic-version header.
func NewAnthropic(key string) *Fake { return start("anthropic", key) }

func start(api, key string) *Fake {
	f := &Fake{api: api, key: key, outTokens: 12}
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
func (f *Fake) SetReply(fn func(Request) string) { f.mu.Lock(); f.reply = fn; f.mu.Unlock() }

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
	}
	return n
}

// answer decides what to send for r: a failure, or text and usage.
func (f *Fake) answer(w http.ResponseWriter, req *http.Request, r Request) (text string, in, cached, out int64, usage bool, ok bool) {
	f.mu.Lock()
	f.requests = append(f.requests, r)
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
		select {
		case <-time.After(latency):
		case <-req.Context().Done():
			return "", 0, 0, 0, false, false
		}
	}
	if fail != nil {
		if fail.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fail.RetryAfter))
		}
		f.writeError(w, fail.Status, errorType(f.api, fail.Status), fail.Message)
		return "", 0, 0, 0, false, false
	}
	if !known {
		if f.api == "openai" {
			f.writeError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", r.Model))
		} else {
			f.writeError(w, http.StatusNotFound, "not_found_error", "model: "+r.Model)
		}
		return "", 0, 0, 0, false, false
	}
	if reply != nil {
		text = reply(r)
	} else if len(r.Messages) > 0 {
		text = "echo: " + r.Messages[len(r.Messages)-1].Content
	}
	in = InputTokens(r)
	cached = min(cached, in)
	out = min(out, int64(r.MaxTokens))
	return text, in, cached, out, usage, true
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
	var body struct {
		Model               string `json:"model"`
		Messages            []struct{ Role, Content string }
		MaxTokens           int  `json:"max_tokens"`
		MaxCompletionTokens int  `json:"max_completion_tokens"`
		Stream              bool `json:"stream"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Model == "" || len(body.Messages) == 0 || body.Stream {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
		return
	}
	r := Request{Model: body.Model, MaxTokens: body.MaxTokens, MaxTokensField: "max_tokens"}
	if body.MaxCompletionTokens > 0 {
		r.MaxTokens, r.MaxTokensField = body.MaxCompletionTokens, "max_completion_tokens"
	}
	for _, m := range body.Messages {
		if m.Role == "system" {
			r.System = m.Content
			continue
		}
		r.Messages = append(r.Messages, Message{m.Role, m.Content})
	}
	text, in, cached, out, usage, ok := f.answer(w, req, r)
	if !ok {
		return
	}
	resp := map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": time.Now().Unix(), "model": body.Model,
		"system_fingerprint": "fp_fake",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "logprobs": nil,
			"message": map[string]any{"role": "assistant", "content": text, "refusal": nil}}},
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
		Messages  []struct{ Role, Content string }
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Model == "" || body.MaxTokens < 1 || len(body.Messages) == 0 {
		f.writeError(w, http.StatusBadRequest, "invalid_request_error", "model, max_tokens and messages are required")
		return
	}
	r := Request{Model: body.Model, System: body.System, MaxTokens: body.MaxTokens, MaxTokensField: "max_tokens"}
	for i, m := range body.Messages {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"")
			return
		}
		if strings.TrimSpace(m.Content) == "" {
			f.writeError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("messages.%d: content must be non-empty", i))
			return
		}
		r.Messages = append(r.Messages, Message{m.Role, m.Content})
	}
	text, in, cached, out, usage, ok := f.answer(w, req, r)
	if !ok {
		return
	}
	resp := map[string]any{
		"id": "msg_fake", "type": "message", "role": "assistant", "model": body.Model,
		"content":     []any{map[string]any{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil,
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
