package llm

import (
	"context"
	"errors"
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
