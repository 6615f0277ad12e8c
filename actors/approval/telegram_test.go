package approval_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store/storetest"
)

// The wiring cmd/fangd does, in small: channels reach agents, chat
// commands reach approvals, approval notices reach chats.
type chatCommands struct{ a *approval.Approvals }

func (c chatCommands) Match(text string) bool { return approval.IsCommand(text) }
func (c chatCommands) Handle(ctx context.Context, ch string, m channel.Inbound) string {
	r, _ := c.a.HandleChat(ctx, approval.ChatMessage{Channel: ch, ChatID: m.ChatID, UserID: m.UserID, UserName: m.UserName, Text: m.Text})
	return r
}

type chatNotifier struct{ s *channel.Service }

func (n chatNotifier) Post(ctx context.Context, ch, chat, text string) error {
	_, err := n.s.SendMessage(ctx, ch, chat, text, "approvals")
	return err
}

type shell struct {
	mu  sync.Mutex
	ran []string
}

func (s *shell) Tools() []llm.Tool {
	return []llm.Tool{{Name: "shell_exec", Description: "run a command", InputSchema: json.RawMessage(`{"type":"object","properties":{"cmd":{"type":"string"}}}`)}}
}

func (s *shell) Call(_ context.Context, inv agent.ToolInvocation) (agent.ToolOutput, error) {
	s.mu.Lock()
	s.ran = append(s.ran, string(inv.Arguments))
	s.mu.Unlock()
	return agent.ToolOutput{Text: "load average: 0.42"}, nil
}

func (s *shell) runs() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.ran) }

// A user asks an agent in a Telegram chat to run a gated tool. The
// request is posted in the chat; an approver answers /approve in that same
// chat (whose agent turn is still waiting), the tool runs and the agent's
// answer arrives. Someone not on the approver list is refused.
func TestApproveInTelegramChat(t *testing.T) {
	tg := telegramtest.New("4242:approvals")
	defer tg.Close()
	fake := llmtest.NewOpenAI("")
	defer fake.Close()
	fake.SetResponder(func(r llmtest.Request) llmtest.Reply {
		last := r.LastMessage()
		if last.Role == "tool" {
			return llmtest.Reply{Text: "Uptime says: " + last.Content}
		}
		if strings.HasPrefix(last.Content, "run ") {
			return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "shell_exec", Arguments: `{"cmd":"` + last.Content[4:] + `"}`}}}
		}
		return llmtest.Reply{Text: "echo: " + last.Content}
	})

	home := t.TempDir()
	db, vault := storetest.OpenWithVault(t, home)
	defer db.Close()
	k := kernel.New(zerolog.Nop())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		k.Shutdown(ctx)
	}()
	al, err := audit.Start(k, db, audit.Options{AnchorPath: audit.AnchorPath(home)})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := llm.NewRegistry(llm.Options{Providers: map[string]llm.ProviderConfig{"fake": {BaseURL: fake.BaseURL}}, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	meter, err := usage.Start(k, db, al, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := approval.DefaultPolicy()
	p.RequireApproval = []string{"shell_*"}
	p.AutoApprove = approval.AutoApprove{All: true}
	p.Notify = []approval.NotifyTarget{{Channel: "telegram", ChatID: "5", Approvers: []string{"@alice"}}}
	apps, err := approval.Start(k, db, vault, al, approval.Options{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	tools := &shell{}
	agents, err := agent.Start(k, db, al, reg, meter, agent.Options{Tools: tools, Gate: apps})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := channel.Start(channel.Options{Kernel: k, DB: db, Vault: vault, Builders: channel.Builders{"telegram": telegram.New},
		Agents: agent.ChatAgents{Agents: agents}, Commands: chatCommands{apps}})
	if err != nil {
		t.Fatal(err)
	}
	apps.SetNotifier(chatNotifier{svc})
	if _, err := agents.Create(context.Background(), agent.Spec{Name: "ops", Model: "fake/m", Tools: []string{"shell_exec"}}, agent.Who{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Configure(context.Background(), "telegram", map[string]any{"token": "4242:approvals", "agent_name": "ops",
		"api_url": tg.URL(), "poll_interval_secs": json.Number("1")}); err != nil {
		t.Fatal(err)
	}

	sent := func(n int) []telegramtest.Sent {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(tg.Sent()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("waited for %d messages in the chat, got %+v", n, tg.Sent())
			}
			time.Sleep(10 * time.Millisecond)
		}
		return tg.Sent()
	}
	tg.UserMessage(5, 100, "alice", "run uptime")
	notice := sent(1)[0]
	if notice.ChatID != "5" || !strings.Contains(notice.Text, "Approval needed") || !strings.Contains(notice.Text, "shell_exec") {
		t.Fatalf("notice %+v", notice)
	}
	page, _ := apps.List(context.Background(), approval.StatusPending, 0, 10)
	if page.Total != 1 || tools.runs() != 0 {
		t.Fatalf("pending %+v, ran %d", page, tools.runs())
	}
	id := page.Approvals[0].ID

	tg.UserMessage(5, 666, "mallory", "/approve "+id[:8])
	if m := sent(2)[1]; !strings.Contains(m.Text, "not on the approver list") || m.ReplyTo == 0 {
		t.Fatalf("refusal %+v", m)
	}
	if rec, _ := apps.Get(context.Background(), id); rec.Status != approval.StatusPending {
		t.Fatal("a non-approver decided")
	}
	tg.UserMessage(5, 100, "alice", "/approve@fangd_test_bot "+id[:8])
	msgs := sent(4)
	if !strings.Contains(msgs[2].Text, "approved by telegram:@alice") || msgs[3].Text != "Uptime says: load average: 0.42" {
		t.Fatalf("after approval: %+v", msgs[2:])
	}
	rec, _ := apps.Get(context.Background(), id)
	if rec.Status != approval.StatusApproved || rec.DecidedVia != approval.ViaChannel || tools.runs() != 1 {
		t.Fatalf("%+v ran %d", rec, tools.runs())
	}
	// Plain text still goes to the agent.
	tg.UserMessage(5, 100, "alice", "thanks")
	if m := sent(5)[4]; m.Text != "echo: thanks" {
		t.Fatalf("%+v", m)
	}
}
