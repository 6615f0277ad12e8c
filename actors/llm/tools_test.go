package llm

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// A full tool round trip on both wire APIs: the model asks for a tool,
// fangd sends the call and its result back in the shape each API wants
// (the fakes refuse misplaced or unanswered calls as the real APIs do),
// and the model answers with the result.
func TestToolCallRoundTrip(t *testing.T) {
	for _, api := range []string{APIOpenAI, APIAnthropic} {
		t.Run(api, func(t *testing.T) {
			var fake *llmtest.Fake
			if api == APIOpenAI {
				fake = llmtest.NewOpenAI(testKey)
			} else {
				fake = llmtest.NewAnthropic(testKey)
			}
			defer fake.Close()
			fake.SetResponder(func(r llmtest.Request) llmtest.Reply {
				last := r.LastMessage()
				if last.Role == "tool" {
					return llmtest.Reply{Text: "the weather is " + last.Content}
				}
				return llmtest.Reply{Text: "let me look", ToolCalls: []llmtest.ToolCall{
					{Name: "weather", Arguments: `{"city":"Oslo"}`},
					{Name: "clock", Arguments: `{}`},
				}}
			})
			r := newTestRegistry(t, map[string]ProviderConfig{"fake": {API: api, BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}}, nil, time.Minute)
			route, _ := r.Resolve("fake/m")
			tools := []Tool{
				{Name: "weather", Description: "weather by city", InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)},
				{Name: "clock", Description: "the time"},
			}
			req := Request{System: "s", Messages: []Message{{Role: RoleUser, Content: "weather in Oslo?"}}, MaxTokens: 50, Tools: tools}
			resp, err := r.Chat(context.Background(), route, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.ToolCalls) != 2 || resp.ToolCalls[0].Name != "weather" || resp.ToolCalls[0].ID == "" ||
				string(resp.ToolCalls[0].Arguments) != `{"city":"Oslo"}` || resp.ToolCalls[1].Name != "clock" {
				t.Fatalf("tool calls %+v", resp.ToolCalls)
			}
			if resp.Text != "let me look" {
				t.Fatalf("text beside the calls %q", resp.Text)
			}
			got := fake.Requests()[0]
			if len(got.Tools) != 2 || got.Tools[0].Name != "weather" || got.Tools[1].Name != "clock" || len(got.Tools[1].Schema) == 0 {
				t.Fatalf("tools offered %+v", got.Tools)
			}
			if resp.Usage.InputTokens > PromptTokensUpperBound(req.System, req.Messages)+ToolsTokensUpperBound(tools) {
				t.Fatal("the reservation bound is below what the provider counted")
			}

			req.Messages = append(req.Messages,
				Message{Role: RoleAssistant, Content: resp.Text, ToolCalls: resp.ToolCalls},
				Message{Role: RoleTool, ToolCallID: resp.ToolCalls[0].ID, Content: "sunny"},
				Message{Role: RoleTool, ToolCallID: resp.ToolCalls[1].ID, Content: "refused by a human", IsError: true})
			resp2, err := r.Chat(context.Background(), route, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp2.ToolCalls) != 0 || resp2.Text != "the weather is refused by a human" {
				t.Fatalf("second answer %+v", resp2)
			}
			sent := fake.Requests()[1].Messages
			if len(sent) != 4 || sent[1].Role != "assistant" || len(sent[1].ToolCalls) != 2 ||
				sent[2].Role != "tool" || sent[2].Content != "sunny" || sent[2].IsError ||
				sent[3].ToolCallID != resp.ToolCalls[1].ID || (api == APIAnthropic && !sent[3].IsError) {
				t.Fatalf("the provider saw %+v", sent)
			}

			// A result for a call that was never made is refused by the
			// provider; fangd reports it as a provider error, not a crash.
			bad := req
			bad.Messages = append([]Message{}, req.Messages[:1]...)
			bad.Messages = append(bad.Messages, Message{Role: RoleAssistant, Content: "x"}, Message{Role: RoleTool, ToolCallID: "nope", Content: "r"})
			if _, err := r.Chat(context.Background(), route, bad); err == nil {
				t.Fatal("an orphan tool result was accepted")
			}
		})
	}
}
