package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
)

// Delta is one piece of a streamed answer, handed on as it arrives.
// Exactly one field is set.
type Delta struct {
	// Text is a piece of the answer.
	Text string
	// Reasoning is a piece of the model's reasoning (Anthropic's thinking
	// blocks, DeepSeek's reasoning_content, OpenRouter's reasoning).
	Reasoning string
	// ToolStart is a tool call the model began: ID and Name, no arguments.
	ToolStart *ToolCall
	// ToolEnd is a tool call complete with its arguments.
	ToolEnd *ToolCall
}

// OnDelta receives a stream's deltas in order, from the goroutine that
// called ChatStream. An error stops the stream: the call fails with it
// and the provider's connection is closed.
type OnDelta func(Delta) error

// streamClient is a wire API that can stream. It returns what arrived
// with the error when the stream broke after it began, so that the
// caller can meter what the provider billed.
type streamClient interface {
	stream(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request, on OnDelta) (*Response, error)
}

// maxEventBytes bounds one server-sent event's data; a whole stream is
// bounded by maxResponseBytes like a whole answer.
const maxEventBytes = 1 << 20

// sseReader reads the server-sent events of a provider's stream.
type sseReader struct {
	sc    *bufio.Scanner
	total int
	prov  string
	data  []byte
}

func newSSEReader(prov string, r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	return &sseReader{sc: sc, prov: prov}
}

// next returns the next event's name and data (valid until the next
// call); io.EOF at the end of the stream.
func (s *sseReader) next() (event string, data []byte, err error) {
	s.data = s.data[:0]
	seen := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		s.total += len(line) + 1
		if s.total > maxResponseBytes {
			return "", nil, newProviderError(s.prov, OutcomeBadResponse, http.StatusOK, 0, fmt.Sprintf("provider %s sent a stream over %d bytes", s.prov, maxResponseBytes))
		}
		if len(line) == 0 {
			if seen {
				return event, s.data, nil
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "event":
			event, seen = string(value), true
		case "data":
			if len(s.data) > 0 {
				s.data = append(s.data, '\n')
			}
			if len(s.data)+len(value) > maxEventBytes {
				return "", nil, newProviderError(s.prov, OutcomeBadResponse, http.StatusOK, 0, fmt.Sprintf("provider %s sent an event over %d bytes", s.prov, maxEventBytes))
			}
			s.data, seen = append(s.data, value...), true
		}
		// Comments (":") and id/retry lines mean nothing to a client
		// that never reconnects.
	}
	if err := s.sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return "", nil, newProviderError(s.prov, OutcomeBadResponse, http.StatusOK, 0, fmt.Sprintf("provider %s sent an event over %d bytes", s.prov, maxEventBytes))
		}
		return "", nil, err
	}
	if seen {
		return event, s.data, nil
	}
	return "", nil, io.EOF
}

// isEventStream reports whether the provider answered with a stream; a
// compatible server that ignores "stream" answers with one JSON body.
func isEventStream(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// wire is what one provider API family (OpenAI's, Anthropic's) says in its
// own words around a call: its error answer and its whole, unstreamed one.
type wire struct {
	statusErr func(prov string, resp *http.Response, data []byte) error
	decode    func(prov string, status int, data []byte, req Request) (*Response, error)
}

// exchange is one call's round trip, the same for every wire: post, then
// for a stream (on is set) the open event stream, which the caller reads
// and closes; otherwise the whole answer read and decoded (a non-2xx
// status is the wire's error). A compatible server that answers a stream
// with one JSON body gets the whole-answer path, handed to on as deltas.
func exchange(prov string, req Request, on OnDelta, w wire, post func(stream bool) (*http.Response, error)) (*http.Response, *Response, error) {
	stream := on != nil
	resp, err := post(stream)
	if err != nil {
		return nil, nil, err
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if stream && ok && isEventStream(resp) {
		return resp, nil, nil
	}
	defer resp.Body.Close()
	if stream && !ok {
		// A stream's error body is read with a small cap, and a failed
		// read still reports the status.
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, nil, w.statusErr(prov, resp, data)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, w.statusErr(prov, resp, data)
	}
	r, err := w.decode(prov, resp.StatusCode, data, req)
	if err != nil || !stream {
		return nil, r, err
	}
	return nil, r, wholeAnswer(r, on)
}

// wholeAnswer hands an answer that came in one piece on as deltas.
func wholeAnswer(r *Response, on OnDelta) error {
	if r.Text != "" {
		if err := on(Delta{Text: r.Text}); err != nil {
			return err
		}
	}
	for i := range r.ToolCalls {
		tc := r.ToolCalls[i]
		if err := on(Delta{ToolStart: &ToolCall{ID: tc.ID, Name: tc.Name}}); err != nil {
			return err
		}
		if err := on(Delta{ToolEnd: &tc}); err != nil {
			return err
		}
	}
	return nil
}

// partial finishes the Response of a stream that broke: what arrived, and
// the usage estimated where the provider had not reported it yet.
func partial(r *Response, req Request, text *strings.Builder, known bool) *Response {
	r.Text = text.String()
	if !known {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text), true
	} else if est := estimateUsage(req, r.Text).OutputTokens; est > r.Usage.OutputTokens {
		// The last count reported is behind what arrived since.
		r.Usage.OutputTokens, r.UsageEstimated = est, true
	}
	return r
}

// ---- OpenAI-compatible chat completions, stream: true ----

type oaiChunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content          *string `json:"content"`
			Refusal          *string `json:"refusal"`
			ReasoningContent *string `json:"reasoning_content"`
			Reasoning        *string `json:"reasoning"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *oaiUsage       `json:"usage"`
	Error json.RawMessage `json:"error"`
}

type oaiPending struct {
	id, name string
	args     strings.Builder
}

func (c openAIClient) stream(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request, on OnDelta) (*Response, error) {
	resp, whole, err := exchange(prov, req, on, oaiWire, func(stream bool) (*http.Response, error) { return c.post(ctx, hc, baseURL, key, req, stream) })
	if resp == nil {
		return whole, err
	}
	defer resp.Body.Close()
	r := &Response{}
	var text, reasoning strings.Builder
	calls := map[int]*oaiPending{}
	usageKnown := false
	// ended hands on the finished tool calls, in the model's order.
	ended := false
	endCalls := func() error {
		if ended {
			return nil
		}
		ended = true
		idx := make([]int, 0, len(calls))
		for i := range calls {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for n, i := range idx {
			p := calls[i]
			if p.name == "" {
				return newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s asked for a tool call with no function name", prov))
			}
			if p.id == "" {
				p.id = fmt.Sprintf("call_%d", n)
			}
			tc := ToolCall{ID: p.id, Name: p.name, Arguments: json.RawMessage(p.args.String())}
			r.ToolCalls = append(r.ToolCalls, tc)
			if err := on(Delta{ToolEnd: &tc}); err != nil {
				return err
			}
		}
		return nil
	}
	fail := func(err error) (*Response, error) {
		r.Reasoning = reasoning.String()
		return partial(r, req, &text, usageKnown), err
	}
	sr := newSSEReader(prov, resp.Body)
	for {
		_, data, err := sr.next()
		if err == io.EOF {
			// A stream cut before [DONE] and before any finish_reason is
			// a broken answer, not a short one.
			if r.StopReason == "" {
				return fail(newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s ended the stream before the answer was finished", prov)))
			}
			break
		}
		if err != nil {
			return fail(err)
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			break
		}
		var ch oaiChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return fail(newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a stream chunk that is not JSON", prov)).withCause(err))
		}
		if len(ch.Error) > 0 && string(ch.Error) != "null" {
			return fail(newProviderError(prov, OutcomeServerError, resp.StatusCode, 0, fmt.Sprintf("provider %s failed mid-stream: %s", prov, cleanReason(openAIErrorText(data)))))
		}
		if ch.Model != "" {
			r.Model = ch.Model
		}
		if ch.Usage != nil {
			r.Usage, usageKnown = ch.Usage.usage(), true
		}
		if len(ch.Choices) == 0 {
			continue
		}
		d := ch.Choices[0].Delta
		for _, piece := range []*string{d.Content, d.Refusal} {
			if piece != nil && *piece != "" {
				text.WriteString(*piece)
				if err := on(Delta{Text: *piece}); err != nil {
					return fail(err)
				}
			}
		}
		for _, piece := range []*string{d.ReasoningContent, d.Reasoning} {
			if piece != nil && *piece != "" {
				reasoning.WriteString(*piece)
				if err := on(Delta{Reasoning: *piece}); err != nil {
					return fail(err)
				}
			}
		}
		for _, tc := range d.ToolCalls {
			p := calls[tc.Index]
			if p == nil {
				p = &oaiPending{}
				calls[tc.Index] = p
			}
			if tc.ID != "" {
				p.id = tc.ID
			}
			if tc.Function.Name != "" && p.name == "" {
				p.name = tc.Function.Name
				if err := on(Delta{ToolStart: &ToolCall{ID: p.id, Name: p.name}}); err != nil {
					return fail(err)
				}
			}
			p.args.WriteString(tc.Function.Arguments)
		}
		if fr := ch.Choices[0].FinishReason; fr != nil && *fr != "" {
			r.StopReason = *fr
			if err := endCalls(); err != nil {
				return fail(err)
			}
		}
	}
	if err := endCalls(); err != nil {
		return fail(err)
	}
	r.Text, r.Reasoning = text.String(), reasoning.String()
	if !usageKnown {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text+callsText(r.ToolCalls)), true
	}
	return r, nil
}

// ---- Anthropic Messages API, stream: true ----

type anthEvent struct {
	Type    string `json:"type"`
	Message *struct {
		Model string     `json:"model"`
		Usage *anthUsage `json:"usage"`
	} `json:"message"`
	Index        int `json:"index"`
	ContentBlock *struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"content_block"`
	Delta *struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		Thinking    string `json:"thinking"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	// Usage of message_delta: cumulative counts (output_tokens always;
	// the input counts too on newer API versions).
	Usage *anthUsage `json:"usage"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

type anthPending struct {
	call ToolCall
	args strings.Builder
}

func (c anthropicClient) stream(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request, on OnDelta) (*Response, error) {
	resp, whole, err := exchange(prov, req, on, anthWire, func(stream bool) (*http.Response, error) { return c.post(ctx, hc, baseURL, key, req, stream) })
	if resp == nil {
		return whole, err
	}
	defer resp.Body.Close()
	r := &Response{}
	var text, reasoning strings.Builder
	var u anthUsage
	usageKnown, stopped := false, false
	blocks := map[int]*anthPending{}
	fail := func(err error) (*Response, error) {
		r.Reasoning = reasoning.String()
		if usageKnown {
			r.Usage = u.usage()
		}
		return partial(r, req, &text, usageKnown), err
	}
	bad := func(msg string) (*Response, error) {
		return fail(newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s %s", prov, msg)))
	}
	sr := newSSEReader(prov, resp.Body)
	for !stopped {
		_, data, err := sr.next()
		if err == io.EOF {
			return bad("ended the stream before message_stop")
		}
		if err != nil {
			return fail(err)
		}
		var ev anthEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return fail(newProviderError(prov, OutcomeBadResponse, resp.StatusCode, 0, fmt.Sprintf("provider %s sent a stream event that is not JSON", prov)).withCause(err))
		}
		switch ev.Type {
		case "message_start":
			if ev.Message != nil {
				r.Model = ev.Message.Model
				if ev.Message.Usage != nil {
					u, usageKnown = *ev.Message.Usage, true
				}
			}
		case "content_block_start":
			if ev.ContentBlock == nil {
				return bad("sent content_block_start without a block")
			}
			if ev.ContentBlock.Type == "tool_use" {
				if ev.ContentBlock.ID == "" || ev.ContentBlock.Name == "" {
					return bad("sent a tool_use block without id or name")
				}
				p := &anthPending{call: ToolCall{ID: ev.ContentBlock.ID, Name: ev.ContentBlock.Name}}
				blocks[ev.Index] = p
				if err := on(Delta{ToolStart: &ToolCall{ID: p.call.ID, Name: p.call.Name}}); err != nil {
					return fail(err)
				}
			}
		case "content_block_delta":
			if ev.Delta == nil {
				return bad("sent content_block_delta without a delta")
			}
			switch ev.Delta.Type {
			case "text_delta":
				text.WriteString(ev.Delta.Text)
				if err := on(Delta{Text: ev.Delta.Text}); err != nil {
					return fail(err)
				}
			case "thinking_delta":
				reasoning.WriteString(ev.Delta.Thinking)
				if err := on(Delta{Reasoning: ev.Delta.Thinking}); err != nil {
					return fail(err)
				}
			case "input_json_delta":
				p := blocks[ev.Index]
				if p == nil {
					return bad("sent input_json_delta outside a tool_use block")
				}
				p.args.WriteString(ev.Delta.PartialJSON)
			}
		case "content_block_stop":
			if p := blocks[ev.Index]; p != nil {
				delete(blocks, ev.Index)
				p.call.Arguments = json.RawMessage(p.args.String())
				if strings.TrimSpace(p.args.String()) == "" {
					p.call.Arguments = json.RawMessage(`{}`)
				}
				r.ToolCalls = append(r.ToolCalls, p.call)
				tc := p.call
				if err := on(Delta{ToolEnd: &tc}); err != nil {
					return fail(err)
				}
			}
		case "message_delta":
			if ev.Delta != nil && ev.Delta.StopReason != "" {
				r.StopReason = ev.Delta.StopReason
			}
			if ev.Usage != nil {
				u.OutputTokens = ev.Usage.OutputTokens
				if ev.Usage.InputTokens > 0 || ev.Usage.CacheReadInputTokens > 0 || ev.Usage.CacheCreationInputTokens > 0 {
					u.InputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens = ev.Usage.InputTokens, ev.Usage.CacheReadInputTokens, ev.Usage.CacheCreationInputTokens
				}
				usageKnown = true
			}
		case "message_stop":
			stopped = true
		case "error":
			msg := "error"
			if ev.Error != nil {
				msg = ev.Error.Type + ": " + ev.Error.Message
			}
			outcome := OutcomeServerError
			status := resp.StatusCode
			if ev.Error != nil && ev.Error.Type == "overloaded_error" {
				status = 529 // what the same failure answers before a stream begins
			}
			return fail(newProviderError(prov, outcome, status, 0, fmt.Sprintf("provider %s failed mid-stream: %s", prov, cleanReason(msg))))
		}
		// ping and unknown events (the API may add some) are skipped.
	}
	r.Text, r.Reasoning = text.String(), reasoning.String()
	if usageKnown {
		r.Usage = u.usage()
	} else {
		r.Usage, r.UsageEstimated = estimateUsage(req, r.Text+callsText(r.ToolCalls)), true
	}
	return r, nil
}
