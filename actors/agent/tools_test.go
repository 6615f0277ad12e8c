package agent

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

func (h *harness) api() string {
	if h.anthropicAPI {
		return llm.APIAnthropic
	}
	return llm.APIOpenAI
}

// fakeTools is a toolbox with an ungated tool (weather) and a gated one
// (shell_exec); it records every call it runs.
type fakeTools struct {
	mu    sync.Mutex
	calls []ToolInvocation
}

func (f *fakeTools) Tools() []llm.Tool {
	return []llm.Tool{
		{Name: "weather", Description: "the weather in a city", InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)},
		{Name: "shell_exec", Description: "run a shell command", InputSchema: json.RawMessage(`{"type":"object","properties":{"cmd":{"type":"string"}},"required":["cmd"]}`)},
		{Name: "secret_tool", Description: "not offered to agents that do not list it"},
	}
}

func (f *fakeTools) Call(_ context.Context, inv ToolInvocation) (ToolOutput, error) {
	f.mu.Lock()
	f.calls = append(f.calls, inv)
	f.mu.Unlock()
	var args map[string]string
	json.Unmarshal(inv.Arguments, &args)
	switch inv.Tool {
	case "weather":
		return ToolOutput{Text: "sunny in " + args["city"]}, nil
	case "shell_exec":
		return ToolOutput{Text: "ran `" + args["cmd"] + "`: exit 0, output 'hello from the shell'"}, nil
	}
	return ToolOutput{Text: "no such tool", IsError: true}, nil
}

func (f *fakeTools) ran() []ToolInvocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ToolInvocation(nil), f.calls...)
}

// script is the fake model: it calls shell_exec when asked to run
// something, weather when asked about the weather, and answers with the
// last tool result once it has one.
func script(r llmtest.Request) llmtest.Reply {
	last := r.LastMessage()
	if last.Role == "tool" {
		return llmtest.Reply{Text: "Done. The tool said: " + last.Content}
	}
	if len(r.Tools) == 0 {
		return llmtest.Reply{Text: "echo: " + last.Content}
	}
	switch {
	case strings.Contains(last.Content, "run "):
		cmd := strings.TrimSpace(last.Content[strings.Index(last.Content, "run ")+4:])
		return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "shell_exec", Arguments: `{"cmd":"` + cmd + `"}`}}}
	case strings.Contains(last.Content, "weather"):
		return llmtest.Reply{Text: "Checking.", ToolCalls: []llmtest.ToolCall{{Name: "weather", Arguments: `{"city":"Oslo"}`}}}
	case strings.Contains(last.Content, "ghost"):
		return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "weather", Arguments: `not json`}}}
	}
	return llmtest.Reply{Text: "echo: " + last.Content}
}

func newToolHarness(t *testing.T, anthropic bool, p *approval.Policy) *harness {
	t.Helper()
	h := &harness{t: t, home: t.TempDir(), tools: &fakeTools{}, policy: p, anthropicAPI: anthropic}
	if anthropic {
		h.fake = llmtest.NewAnthropic(key)
	} else {
		h.fake = llmtest.NewOpenAI(key)
	}
	h.fake.SetResponder(script)
	return newHarnessWith(t, h)
}

func (h *harness) createWithTools(name string, tools ...string) *Agent {
	h.t.Helper()
	a, err := h.agents.Create(context.Background(), Spec{Name: name, Model: "fake/m", SystemPrompt: "you are " + name, Tools: tools}, Who{Actor: "test"})
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// sendAsync runs a turn in the background.
func (h *harness) sendAsync(a *Agent, text string) <-chan any {
	out := make(chan any, 1)
	go func() {
		r, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: text, From: "api", Who: Who{Actor: "test"}})
		if err != nil {
			out <- err
			return
		}
		out <- r
	}()
	return out
}

func turnResult(t *testing.T, ch <-chan any) *TurnResult {
	t.Helper()
	select {
	case v := <-ch:
		r, ok := v.(*TurnResult)
		if !ok {
			t.Fatalf("turn failed: %v", v)
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the turn did not finish")
	}
	return nil
}

// pendingApproval waits until exactly one request is pending and returns it.
func (h *harness) pendingApproval() *approval.Approval {
	h.t.Helper()
	var rec *approval.Approval
	waitFor(h.t, "a pending approval", func() bool {
		p, err := h.approvals.List(context.Background(), approval.StatusPending, 0, 10)
		if err == nil && p.Total == 1 {
			rec = p.Approvals[0]
			return true
		}
		return false
	})
	return rec
}

func TestUngatedToolRunsAndTheModelSeesItsResult(t *testing.T) {
	for _, anthropic := range []bool{false, true} {
		h := newToolHarness(t, anthropic, nil)
		a := h.createWithTools("forecaster", "weather")
		r := turnResult(t, h.sendAsync(a, "what is the weather?"))
		if r.Response != "Done. The tool said: sunny in Oslo" {
			t.Fatalf("reply %q", r.Response)
		}
		if len(r.ToolCalls) != 1 || r.ToolCalls[0].Tool != "weather" || r.ToolCalls[0].Outcome != "ok" {
			t.Fatalf("tool calls %+v", r.ToolCalls)
		}
		reqs := h.fake.Requests()
		if len(reqs) != 2 || len(reqs[0].Tools) != 1 || reqs[0].Tools[0].Name != "weather" {
			t.Fatalf("the model was offered %+v (only the manifest's tools)", reqs[0].Tools)
		}
		if ran := h.tools.ran(); len(ran) != 1 || ran[0].AgentID != a.ID || string(ran[0].Arguments) != `{"city":"Oslo"}` {
			t.Fatalf("ran %+v", ran)
		}
		// Both provider calls are metered and summed.
		if rep, _ := h.meter.Usage(context.Background(), "day"); rep.RequestCount != 2 || r.InputTokens < llmtest.InputTokens(reqs[0])+llmtest.InputTokens(reqs[1]) {
			t.Fatalf("usage %+v, turn %+v", rep, r)
		}
		// An agent that lists no tools is offered none.
		plain := h.createWithTools("plain")
		turnResult(t, h.sendAsync(plain, "what is the weather?"))
		if reqs := h.fake.Requests(); len(reqs[len(reqs)-1].Tools) != 0 {
			t.Fatal("tools offered to an agent that lists none")
		}
	}
}

func TestBadToolCallsAreAnsweredNotRun(t *testing.T) {
	h := newToolHarness(t, false, nil)
	a := h.createWithTools("careful", "weather")
	r := turnResult(t, h.sendAsync(a, "ghost"))
	if len(r.ToolCalls) != 1 || r.ToolCalls[0].Outcome != "invalid_arguments" || len(h.tools.ran()) != 0 {
		t.Fatalf("%+v", r)
	}
	if !strings.Contains(r.Response, "not a JSON object") {
		t.Fatalf("the model was not told: %q", r.Response)
	}
}

func gatePolicy(mod func(*approval.Policy)) *approval.Policy {
	p := approval.DefaultPolicy()
	p.RequireApproval = []string{"shell_*"}
	// Only shell_* waits (the harness's other tools run at once).
	p.AutoApprove = approval.AutoApprove{All: true}
	if mod != nil {
		mod(&p)
	}
	return &p
}

// The seed's flow: the model asks for a gated tool; the call waits for a
// human without blocking the agent; approval runs the tool and the reply
// carries its result.
func TestGatedToolWaitsForApproval(t *testing.T) {
	for _, anthropic := range []bool{false, true} {
		h := newToolHarness(t, anthropic, gatePolicy(nil))
		a := h.createWithTools("ops", "shell_exec", "weather")
		done := h.sendAsync(a, "please run echo hello")
		rec := h.pendingApproval()
		if rec.Action != "shell_exec" || rec.AgentID != a.ID || rec.AgentName != "ops" || string(rec.Payload) != `{"cmd":"echo hello"}` ||
			rec.RequestedBy != "agent:"+a.ID || rec.SessionID != a.DefaultSessionID {
			t.Fatalf("approval %+v", rec)
		}
		if len(h.tools.ran()) != 0 {
			t.Fatal("the gated tool ran before approval")
		}
		// The agent keeps serving: another session gets its answer, and
		// an ungated tool runs, while the first turn waits.
		other, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "what is the weather?", SessionID: "00000000-0000-4000-8000-000000000002"})
		if err != nil || !strings.Contains(other.Response, "sunny") {
			t.Fatalf("while waiting: %+v %v", other, err)
		}
		select {
		case v := <-done:
			t.Fatalf("the turn finished without a decision: %v", v)
		default:
		}
		if _, err := h.approvals.Decide(context.Background(), approval.Decide{ID: rec.ID, Approve: true, By: approval.Decider{Identity: "api_key", Via: approval.ViaAPI}}); err != nil {
			t.Fatal(err)
		}
		r := turnResult(t, done)
		if !strings.Contains(r.Response, "hello from the shell") {
			t.Fatalf("reply %q does not carry the tool's result", r.Response)
		}
		if len(r.ToolCalls) != 1 || r.ToolCalls[0].Outcome != "ok" || r.ToolCalls[0].ApprovalID != rec.ID {
			t.Fatalf("tool calls %+v", r.ToolCalls)
		}
		ran := h.tools.ran()
		if last := ran[len(ran)-1]; last.Tool != "shell_exec" || last.ApprovalID != rec.ID {
			t.Fatalf("ran %+v", ran)
		}
		if n, _ := turnCount(h, a.ID); n != 0 {
			t.Fatal("a finished turn is still recorded as waiting")
		}
	}
}

func turnCount(h *harness, agentID string) (int, error) {
	n := 0
	err := turnCollection(h.db, agentID).Each(func(string, savedTurn) bool { n++; return true })
	return n, err
}

func TestRejectedOrExpiredToolIsNotRunAndTheModelIsTold(t *testing.T) {
	h := newToolHarness(t, false, gatePolicy(func(p *approval.Policy) { p.TimeoutSecs = 1 }))
	a := h.createWithTools("ops", "shell_exec")

	// Expiry: nobody answers within a second.
	r := turnResult(t, h.sendAsync(a, "run rm -rf /tmp/cache"))
	if len(r.ToolCalls) != 1 || r.ToolCalls[0].Outcome != "expired" || !strings.Contains(r.Response, "nobody approved this tool call in time") {
		t.Fatalf("expired: %+v", r)
	}
	reqs := h.fake.Requests()
	told := reqs[len(reqs)-1].LastMessage()
	// (OpenAI's tool messages have no error flag; the text says it.)
	if told.Role != "tool" || !strings.Contains(told.Content, "expired") {
		t.Fatalf("the model saw %+v", told)
	}

	// Rejection, with a reason the model gets.
	h2 := newToolHarness(t, true, gatePolicy(nil))
	b := h2.createWithTools("ops", "shell_exec")
	done := h2.sendAsync(b, "run shutdown now")
	rec := h2.pendingApproval()
	if _, err := h2.approvals.Decide(context.Background(), approval.Decide{ID: rec.ID, Approve: false, Reason: "not during business hours",
		By: approval.Decider{Identity: "api_key", Via: approval.ViaAPI}}); err != nil {
		t.Fatal(err)
	}
	r = turnResult(t, done)
	if r.ToolCalls[0].Outcome != "rejected" || !strings.Contains(r.Response, "rejected") || !strings.Contains(r.Response, "not during business hours") {
		t.Fatalf("rejected: %+v", r)
	}
	if len(h.tools.ran())+len(h2.tools.ran()) != 0 {
		t.Fatal("a tool ran without approval")
	}
}

// A restart while a turn waits: the request stays pending with its
// deadline, the agent resumes waiting, and the decision still runs the
// tool and puts the answer in the session.
func TestRestartInTheMiddleOfAnApproval(t *testing.T) {
	h := newToolHarness(t, false, gatePolicy(nil))
	a := h.createWithTools("ops", "shell_exec")
	done := h.sendAsync(a, "run make deploy")
	before := h.pendingApproval()
	h.stop()
	if err, ok := (<-done).(error); !ok || kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindUnavailable {
		t.Fatalf("the caller of a stopped agent got %v", err)
	}
	h.start()
	after := h.pendingApproval()
	if after.ID != before.ID || !after.ExpiresAt.Equal(before.ExpiresAt) || after.Status != approval.StatusPending {
		t.Fatalf("after restart %+v, before %+v", after, before)
	}
	if len(h.tools.ran()) != 0 {
		t.Fatal("the tool ran on restart")
	}
	if _, err := h.approvals.Decide(context.Background(), approval.Decide{ID: after.ID, Approve: true, By: approval.Decider{Identity: "api_key", Via: approval.ViaAPI}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resumed turn to run the tool", func() bool { return len(h.tools.ran()) == 1 })
	var hist history
	waitFor(t, "the answer in the session", func() bool {
		var err error
		hist, err = sessionCollection(h.db, a.ID).Get(a.DefaultSessionID)
		return err == nil && len(hist.Messages) == 2
	})
	if hist.Messages[0].Content != "run make deploy" || !strings.Contains(hist.Messages[1].Content, "hello from the shell") {
		t.Fatalf("history %+v", hist.Messages)
	}
	waitFor(t, "the turn record to go", func() bool { n, _ := turnCount(h, a.ID); return n == 0 })
	// The session is free again.
	r, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "thanks"})
	if err != nil || r.Response != "echo: thanks" {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestDeletingAnAgentWithdrawsItsApproval(t *testing.T) {
	h := newToolHarness(t, false, gatePolicy(nil))
	a := h.createWithTools("ops", "shell_exec")
	done := h.sendAsync(a, "run ls")
	rec := h.pendingApproval()
	if _, err := h.agents.Delete(context.Background(), Ref{ID: a.ID}, Who{}); err != nil {
		t.Fatal(err)
	}
	if err, ok := (<-done).(error); !ok || code(err) != "agent_deleted" {
		t.Fatalf("caller got %v", err)
	}
	waitFor(t, "the request to be withdrawn", func() bool {
		got, err := h.approvals.Get(context.Background(), rec.ID)
		return err == nil && got.Status == approval.StatusCancelled
	})
	if len(h.tools.ran()) != 0 {
		t.Fatal("tool ran")
	}
}

// A model that keeps asking for tools is told after MaxToolRounds rounds
// and its turn ends at the next answer, whatever it asks.
func TestToolRoundsAreBounded(t *testing.T) {
	h := newToolHarness(t, false, nil)
	h.fake.SetResponder(func(r llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Text: "again", ToolCalls: []llmtest.ToolCall{{Name: "weather", Arguments: `{"city":"Oslo"}`}}}
	})
	a := h.createWithTools("loop", "weather")
	r := turnResult(t, h.sendAsync(a, "go"))
	if len(h.tools.ran()) != MaxToolRounds || len(r.ToolCalls) != MaxToolRounds+1 || r.ToolCalls[MaxToolRounds].Outcome != "limit" {
		t.Fatalf("ran %d, records %+v", len(h.tools.ran()), r.ToolCalls)
	}
	if n := len(h.fake.Requests()); n != MaxToolRounds+2 {
		t.Fatalf("%d provider calls", n)
	}
	if r.Response != "again" {
		t.Fatalf("%q", r.Response)
	}
}

// Cancelling the caller's context of a turn that waits for approval ends
// the turn at once and withdraws the request.
func TestCancellingATurnWithdrawsItsApproval(t *testing.T) {
	h := newToolHarness(t, false, gatePolicy(nil))
	a := h.createWithTools("ops", "shell_exec")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "run sleep 100", Ctx: ctx})
		done <- err
	}()
	rec := h.pendingApproval()
	cancel()
	if err := <-done; code(err) != "turn_cancelled" {
		t.Fatalf("caller got %v", err)
	}
	waitFor(t, "the request to be withdrawn", func() bool {
		got, err := h.approvals.Get(context.Background(), rec.ID)
		return err == nil && got.Status == approval.StatusCancelled
	})
	if n, _ := turnCount(h, a.ID); n != 0 || len(h.tools.ran()) != 0 {
		t.Fatalf("turn records %d, ran %d", n, len(h.tools.ran()))
	}
	if r, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hello"}); err != nil || r.Response != "echo: hello" {
		t.Fatalf("the session stayed busy: %+v %v", r, err)
	}
}
