package llm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// streamFakes are both wire APIs' fakes, each with a registry that routes
// "fake/m1" to it.
func streamFakes(t *testing.T) map[string]struct {
	fake *llmtest.Fake
	reg  *Registry
} {
	out := map[string]struct {
		fake *llmtest.Fake
		reg  *Registry
	}{}
	for _, api := range []string{APIOpenAI, APIAnthropic} {
		fake := llmtest.NewOpenAI(testKey)
		if api == APIAnthropic {
			fake = llmtest.NewAnthropic(testKey)
		}
		t.Cleanup(fake.Close)
		reg := newTestRegistry(t, map[string]ProviderConfig{"fake": {API: api, BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}}, nil, time.Minute)
		out[api] = struct {
			fake *llmtest.Fake
			reg  *Registry
		}{fake, reg}
	}
	return out
}

func collect(deltas *[]Delta) OnDelta {
	return func(d Delta) error { *deltas = append(*deltas, d); return nil }
}

func TestStreamTextToolCallPiecesAndUsage(t *testing.T) {
	for api, p := range streamFakes(t) {
		t.Run(api, func(t *testing.T) {
			p.fake.SetCachedTokens(3)
			p.fake.SetOutputTokens(9)
			args := `{"city":"Lisbon","days":3}`
			p.fake.SetResponder(func(r llmtest.Request) llmtest.Reply {
				return llmtest.Reply{Text: "Let me look that up.", ToolCalls: []llmtest.ToolCall{{ID: "call_w1", Name: "weather", Arguments: args}}}
			})
			route, _ := p.reg.Resolve("fake/m1")
			req := Request{System: "s", Messages: []Message{{Role: RoleUser, Content: "weather?"}}, MaxTokens: 50,
				Tools: []Tool{{Name: "weather", Description: "forecast"}}}
			var deltas []Delta
			resp, err := p.reg.ChatStream(context.Background(), route, req, collect(&deltas))
			if err != nil {
				t.Fatal(err)
			}
			got := p.fake.Requests()[0]
			if !got.Stream || (api == APIOpenAI && !got.IncludeUsage) {
				t.Fatalf("the provider was not asked to stream (with usage): %+v", got)
			}
			var text strings.Builder
			texts, starts := 0, 0
			var end *ToolCall
			for _, d := range deltas {
				switch {
				case d.Text != "":
					if end != nil || starts > 0 {
						t.Fatal("text after the tool call began")
					}
					text.WriteString(d.Text)
					texts++
				case d.ToolStart != nil:
					if d.ToolStart.ID != "call_w1" || d.ToolStart.Name != "weather" || len(d.ToolStart.Arguments) != 0 {
						t.Fatalf("tool start %+v", d.ToolStart)
					}
					starts++
				case d.ToolEnd != nil:
					if starts != 1 {
						t.Fatal("tool end before its start")
					}
					end = d.ToolEnd
				}
			}
			if texts < 3 || text.String() != "Let me look that up." || resp.Text != text.String() {
				t.Fatalf("text came in %d pieces: %q (response %q)", texts, text.String(), resp.Text)
			}
			if end == nil || string(end.Arguments) != args || end.ID != "call_w1" {
				t.Fatalf("tool end %+v", end)
			}
			if len(resp.ToolCalls) != 1 || string(resp.ToolCalls[0].Arguments) != args {
				t.Fatalf("response tool calls %+v", resp.ToolCalls)
			}
			wantIn := llmtest.InputTokens(got)
			if resp.Usage.InputTokens != wantIn || resp.Usage.CachedInputTokens != 3 || resp.Usage.OutputTokens != 9 || resp.UsageEstimated {
				t.Fatalf("usage %+v estimated=%v, want in=%d cached=3 out=9", resp.Usage, resp.UsageEstimated, wantIn)
			}
			if resp.StopReason != "tool_calls" && resp.StopReason != "tool_use" {
				t.Fatalf("stop reason %q", resp.StopReason)
			}
		})
	}
}

func TestStreamMidStreamErrorKeepsWhatArrived(t *testing.T) {
	for api, p := range streamFakes(t) {
		t.Run(api, func(t *testing.T) {
			p.fake.SetReply(func(llmtest.Request) string { return "abcdefghijklmnopqrstuvwxyz" })
			p.fake.FailMidStream(2, "the upstream fell over")
			route, _ := p.reg.Resolve("fake/m1")
			req := Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 50}
			var deltas []Delta
			resp, err := p.reg.ChatStream(context.Background(), route, req, collect(&deltas))
			var pe *ProviderError
			if !errors.As(err, &pe) || pe.Outcome != OutcomeServerError || !strings.Contains(err.Error(), "the upstream fell over") {
				t.Fatalf("err %v", err)
			}
			if resp == nil || resp.Text != "abcdefgh" || len(deltas) != 2 {
				t.Fatalf("partial answer %+v after %d deltas", resp, len(deltas))
			}
			// What arrived is metered: output estimated from the text; the
			// input Anthropic reported in message_start, estimated for OpenAI.
			if resp.Usage.OutputTokens < 2 || resp.Usage.InputTokens == 0 || !resp.UsageEstimated {
				t.Fatalf("partial usage %+v estimated=%v", resp.Usage, resp.UsageEstimated)
			}
			if api == APIAnthropic && resp.Usage.InputTokens != llmtest.InputTokens(p.fake.Requests()[0]) {
				t.Fatalf("anthropic's reported input %d was not kept", resp.Usage.InputTokens)
			}
			// The stream was cut: the next call is a normal one.
			if _, err := p.reg.ChatStream(context.Background(), route, req, func(Delta) error { return nil }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStreamCancelClosesTheProviderConnection(t *testing.T) {
	for api, p := range streamFakes(t) {
		t.Run(api, func(t *testing.T) {
			p.fake.SetReply(func(llmtest.Request) string { return strings.Repeat("word ", 200) })
			p.fake.SetChunkDelay(5 * time.Millisecond)
			route, _ := p.reg.Resolve("fake/m1")
			req := Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 500}
			ctx, cancel := context.WithCancel(context.Background())
			n := 0
			resp, err := p.reg.ChatStream(ctx, route, req, func(d Delta) error {
				if n++; n == 3 {
					cancel()
				}
				return ctx.Err()
			})
			var pe *ProviderError
			if !errors.As(err, &pe) || pe.Outcome != OutcomeCanceled {
				t.Fatalf("err %v", err)
			}
			if resp == nil || resp.Text == "" {
				t.Fatalf("partial %+v", resp)
			}
			select {
			case <-p.fake.StreamCuts():
			case <-time.After(10 * time.Second):
				t.Fatal("the provider never saw the connection close")
			}
		})
	}
}

// rawProvider answers every call with body as contentType.
func rawProvider(t *testing.T, api, contentType, body string) (*Registry, Route) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	base := srv.URL
	if api == APIOpenAI {
		base += "/v1"
	}
	reg := newTestRegistry(t, map[string]ProviderConfig{"raw": {API: api, BaseURL: base}}, nil, time.Minute)
	route, err := reg.Resolve("raw/m")
	if err != nil {
		t.Fatal(err)
	}
	return reg, route
}

func TestStreamEdgeCases(t *testing.T) {
	req := Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 50}
	run := func(api, ct, body string) (*Response, []Delta, error) {
		reg, route := rawProvider(t, api, ct, body)
		var deltas []Delta
		resp, err := reg.ChatStream(context.Background(), route, req, collect(&deltas))
		return resp, deltas, err
	}
	outcome := func(err error) string {
		var pe *ProviderError
		if errors.As(err, &pe) {
			return pe.Outcome
		}
		return ""
	}
	// A server that ignores "stream" answers with one body: still read.
	resp, deltas, err := run(APIOpenAI, "application/json", `{"model":"m","choices":[{"message":{"content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
	if err != nil || resp.Text != "whole" || len(deltas) != 1 || deltas[0].Text != "whole" || resp.Usage.InputTokens != 3 {
		t.Fatalf("whole answer: %+v %+v %v", resp, deltas, err)
	}
	// Comments, multi-line data and a missing usage chunk (estimated).
	resp, _, err = run(APIOpenAI, "text/event-stream", ": hello\n\ndata: {\"model\":\"m\",\ndata: \"choices\":[{\"delta\":{\"content\":\"ab\"},\"finish_reason\":null}]}\n\n"+
		"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	if err != nil || resp.Text != "ab" || resp.Reasoning != "hmm" || !resp.UsageEstimated || resp.StopReason != "stop" {
		t.Fatalf("comments and multi-line data: %+v %v", resp, err)
	}
	// Streams cut before their end are broken answers, not short ones.
	_, _, err = run(APIOpenAI, "text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"},\"finish_reason\":null}]}\n\n")
	if outcome(err) != OutcomeBadResponse {
		t.Fatalf("openai cut: %v", err)
	}
	_, _, err = run(APIAnthropic, "text/event-stream", "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n")
	if outcome(err) != OutcomeBadResponse {
		t.Fatalf("anthropic cut: %v", err)
	}
	// Anthropic's newer message_delta carries the input counts too, and
	// thinking comes as reasoning.
	resp, deltas, err = run(APIAnthropic, "text/event-stream", strings.Join([]string{
		`event: message_start` + "\n" + `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":5,"output_tokens":1}}}`,
		`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`,
		`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"let me see"}}`,
		`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":0}`,
		`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}`,
		`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":1}`,
		`event: message_delta` + "\n" + `data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":5,"cache_read_input_tokens":7,"output_tokens":20}}`,
		`event: message_stop` + "\n" + `data: {"type":"message_stop"}`,
	}, "\n\n")+"\n\n")
	if err != nil || resp.Reasoning != "let me see" || len(resp.ToolCalls) != 1 || string(resp.ToolCalls[0].Arguments) != "{}" ||
		resp.Usage != (Usage{InputTokens: 12, CachedInputTokens: 7, OutputTokens: 20}) || deltas[0].Reasoning != "let me see" {
		t.Fatalf("anthropic thinking and tool without input: %+v %+v %v", resp, deltas, err)
	}
}
