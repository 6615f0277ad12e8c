package llmtest

import (
	"encoding/json"
	"net/http"
	"time"
)

// Streamed answers. A request with "stream": true is answered with
// server-sent events in the provider's documented format: OpenAI's
// chat.completion.chunk objects on data: lines ending with data: [DONE]
// (the usage in a last chunk with no choices when stream_options asks
// for it); Anthropic's message_start, content_block_start/delta/stop,
// message_delta and message_stop events, with a ping. Text is sent a few
// characters at a time and tool arguments in pieces, as real providers do.

// textPiece and argsPiece are how much text and tool-argument JSON one
// event carries.
const (
	textPiece = 4
	argsPiece = 5
)

type midFailure struct {
	after   int
	message string
}

// SetChunkDelay pauses d before every event of a streamed answer (a
// stream whose client goes away meanwhile counts as cut).
func (f *Fake) SetChunkDelay(d time.Duration) { f.mu.Lock(); f.chunkDelay = d; f.mu.Unlock() }

// FailMidStream makes the next streamed answer send the provider's error
// event (OpenAI: a data: {"error": ...} chunk; Anthropic: event: error,
// overloaded_error) after n text pieces, and end there.
func (f *Fake) FailMidStream(n int, message string) {
	f.mu.Lock()
	f.midFail = &midFailure{after: n, message: message}
	f.mu.Unlock()
}

// StreamCuts receives once for every streamed answer whose client went
// away before its end (the connection closed while the fake still had
// events to send).
func (f *Fake) StreamCuts() <-chan struct{} { return f.cuts }

// sseOut writes one streamed answer.
type sseOut struct {
	f     *Fake
	w     http.ResponseWriter
	req   *http.Request
	delay time.Duration
	fail  *midFailure
	texts int
	cut   bool
}

func (f *Fake) newSSE(w http.ResponseWriter, req *http.Request) *sseOut {
	f.mu.Lock()
	o := &sseOut{f: f, w: w, req: req, delay: f.chunkDelay, fail: f.midFail}
	f.midFail = nil
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return o
}

// send writes one event; false once the client is gone (the stream is
// then counted as cut).
func (o *sseOut) send(event string, data any) bool {
	if o.cut {
		return false
	}
	if o.delay > 0 {
		select {
		case <-time.After(o.delay):
		case <-o.req.Context().Done():
		}
	}
	if o.req.Context().Err() != nil {
		o.cut = true
		select {
		case o.f.cuts <- struct{}{}:
		default:
		}
		return false
	}
	raw, ok := data.([]byte)
	if !ok {
		raw, _ = json.Marshal(data)
	}
	if event != "" {
		o.w.Write([]byte("event: " + event + "\n"))
	}
	o.w.Write([]byte("data: "))
	o.w.Write(raw)
	o.w.Write([]byte("\n\n"))
	o.w.(http.Flusher).Flush()
	return true
}

// failNow reports whether the scripted mid-stream failure is due before
// the next text piece.
func (o *sseOut) failNow() bool {
	if o.fail == nil || o.texts < o.fail.after {
		return false
	}
	return true
}

func pieces(s string, n int) []string {
	var out []string
	r := []rune(s)
	for len(r) > 0 {
		k := min(n, len(r))
		out = append(out, string(r[:k]))
		r = r[k:]
	}
	return out
}

func (f *Fake) streamOpenAI(w http.ResponseWriter, req *http.Request, r Request, rep Reply, in, cached, out int64, usage bool) {
	o := f.newSSE(w, req)
	created := time.Now().Unix()
	chunk := func(delta map[string]any, finish any) map[string]any {
		c := map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": r.Model,
			"system_fingerprint": "fp_fake", "choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}}
		if usage {
			c["usage"] = nil
		}
		return c
	}
	if !o.send("", chunk(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil)) {
		return
	}
	for _, p := range pieces(rep.Text, textPiece) {
		if o.failNow() {
			o.send("", map[string]any{"error": map[string]any{"message": o.fail.message, "type": "server_error", "param": nil, "code": nil}})
			return
		}
		if !o.send("", chunk(map[string]any{"content": p}, nil)) {
			return
		}
		o.texts++
	}
	if o.failNow() {
		o.send("", map[string]any{"error": map[string]any{"message": o.fail.message, "type": "server_error", "param": nil, "code": nil}})
		return
	}
	finish := "stop"
	for i, c := range rep.ToolCalls {
		first := map[string]any{"index": i, "id": c.ID, "type": "function", "function": map[string]any{"name": c.Name, "arguments": ""}}
		if !o.send("", chunk(map[string]any{"tool_calls": []any{first}}, nil)) {
			return
		}
		for _, p := range pieces(c.Arguments, argsPiece) {
			if !o.send("", chunk(map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": p}}}}, nil)) {
				return
			}
		}
		finish = "tool_calls"
	}
	if !o.send("", chunk(map[string]any{}, finish)) {
		return
	}
	if usage {
		u := map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": r.Model,
			"system_fingerprint": "fp_fake", "choices": []any{},
			"usage": map[string]any{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out,
				"prompt_tokens_details":     map[string]any{"cached_tokens": cached, "audio_tokens": 0},
				"completion_tokens_details": map[string]any{"reasoning_tokens": 0, "audio_tokens": 0}}}
		if !o.send("", u) {
			return
		}
	}
	o.send("", []byte("[DONE]"))
}

func (f *Fake) streamAnthropic(w http.ResponseWriter, req *http.Request, r Request, rep Reply, in, cached, out int64, usage bool) {
	o := f.newSSE(w, req)
	msg := map[string]any{"id": "msg_fake", "type": "message", "role": "assistant", "content": []any{}, "model": r.Model,
		"stop_reason": nil, "stop_sequence": nil}
	if usage {
		// Anthropic's input_tokens excludes cache reads and writes; the
		// output count starts at 1 and message_delta carries the total.
		msg["usage"] = map[string]any{"input_tokens": in - cached, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached, "output_tokens": 1}
	}
	if !o.send("message_start", map[string]any{"type": "message_start", "message": msg}) {
		return
	}
	overloaded := func() {
		o.send("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": o.fail.message}})
	}
	index := 0
	if rep.Text != "" || len(rep.ToolCalls) == 0 {
		if !o.send("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}}) ||
			!o.send("ping", map[string]any{"type": "ping"}) {
			return
		}
		for _, p := range pieces(rep.Text, textPiece) {
			if o.failNow() {
				overloaded()
				return
			}
			if !o.send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": p}}) {
				return
			}
			o.texts++
		}
		if !o.send("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) {
			return
		}
		index++
	}
	if o.failNow() {
		overloaded()
		return
	}
	stop := "end_turn"
	for _, c := range rep.ToolCalls {
		if !o.send("content_block_start", map[string]any{"type": "content_block_start", "index": index,
			"content_block": map[string]any{"type": "tool_use", "id": c.ID, "name": c.Name, "input": map[string]any{}}}) {
			return
		}
		for _, p := range pieces(c.Arguments, argsPiece) {
			if !o.send("content_block_delta", map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "input_json_delta", "partial_json": p}}) {
				return
			}
		}
		if !o.send("content_block_stop", map[string]any{"type": "content_block_stop", "index": index}) {
			return
		}
		index++
		stop = "tool_use"
	}
	md := map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}}
	if usage {
		md["usage"] = map[string]any{"output_tokens": out}
	}
	if !o.send("message_delta", md) {
		return
	}
	o.send("message_stop", map[string]any{"type": "message_stop"})
}
