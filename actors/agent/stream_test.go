package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/actors/usage"
)

// streamed runs a streamed turn in the background; its events arrive on
// the first channel, its answer (a *TurnResult or an error) on the second.
func (h *harness) streamed(ctx context.Context, a *Agent, text string) (<-chan StreamEvent, <-chan any) {
	events := make(chan StreamEvent)
	out := make(chan any, 1)
	go func() {
		r, err := h.agents.Stream(ctx, Send{Ref: Ref{ID: a.ID}, Text: text, From: "api", Who: Who{Actor: "test"}}, events)
		if err != nil {
			out <- err
		} else {
			out <- r
		}
		close(events)
	}()
	return events, out
}

// drain reads every event of a streamed turn (until its answer) and the
// answer.
func drain(t *testing.T, events <-chan StreamEvent, out <-chan any) ([]StreamEvent, any) {
	t.Helper()
	var got []StreamEvent
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return got, <-out
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatal("the streamed turn did not finish")
		}
	}
}

func TestStreamedTurnRunsTheToolLoopAndMetersLikeANormalOne(t *testing.T) {
	for _, anthropic := range []bool{false, true} {
		h := newToolHarness(t, anthropic, nil)
		a := h.createWithTools("forecaster", "weather")
		events, out := h.streamed(context.Background(), a, "what is the weather?")
		got, res := drain(t, events, out)
		r, ok := res.(*TurnResult)
		if !ok {
			t.Fatalf("turn failed: %v", res)
		}
		if r.Response != "Done. The tool said: sunny in Oslo" || r.Iterations != 2 || len(r.ToolCalls) != 1 || r.ToolCalls[0].Outcome != "ok" {
			t.Fatalf("result %+v", r)
		}
		// The events, in order: a step, its text in pieces, the tool call
		// written and run, the second step and the answer in pieces.
		var kinds []string
		var text [3]strings.Builder
		step := 0
		for _, ev := range got {
			if len(kinds) == 0 || kinds[len(kinds)-1] != ev.Type {
				kinds = append(kinds, ev.Type)
			}
			switch ev.Type {
			case StreamStep:
				step = ev.Iteration
			case StreamText:
				text[step].WriteString(ev.Text)
			case StreamToolInput:
				if ev.Tool != "weather" || string(ev.Input) != `{"city":"Oslo"}` || ev.ToolCallID == "" {
					t.Fatalf("tool input %+v", ev)
				}
			}
		}
		want := "step text tool_use tool_input tool_run step text"
		if strings.Join(kinds, " ") != want {
			t.Fatalf("events %v, want %s", kinds, want)
		}
		if text[1].String() != "Checking." || text[2].String() != r.Response {
			t.Fatalf("streamed texts %q / %q", text[1].String(), text[2].String())
		}
		// Each provider call metered once, with the provider's counts.
		reqs := h.fake.Requests()
		rep, err := h.meter.Usage(context.Background(), "day")
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) != 2 || !reqs[0].Stream || rep.RequestCount != 2 || rep.FailedRequests != 0 ||
			rep.TotalInputTokens != llmtest.InputTokens(reqs[0])+llmtest.InputTokens(reqs[1]) || rep.TotalOutputTokens != 24 ||
			r.InputTokens != rep.TotalInputTokens || r.OutputTokens != 24 {
			t.Fatalf("usage %+v, turn %+v", rep, r)
		}
		// The turn is in the session's history like any other.
		turnResult(t, h.sendAsync(a, "and now?"))
		last := h.fake.Requests()[2]
		if len(last.Messages) < 3 || last.Messages[0].Content != "what is the weather?" || last.Messages[1].Content != r.Response {
			t.Fatalf("history %+v", last.Messages)
		}
		if !strings.Contains(strings.Join(h.auditTypes(), " "), "agent_message:ok") {
			t.Fatal("the streamed turn is not audited")
		}
	}
}

// gatedTools holds every tool run until release is closed, and says when
// a run began.
type gatedTools struct {
	*fakeTools
	began   chan struct{}
	release chan struct{}
}

func (g *gatedTools) Call(ctx context.Context, inv ToolInvocation) (ToolOutput, error) {
	g.began <- struct{}{}
	<-g.release
	return g.fakeTools.Call(ctx, inv)
}

func TestStreamCutByTheBudgetEndsWithAnErrorAndDoesNotOverspend(t *testing.T) {
	gt := &gatedTools{fakeTools: &fakeTools{}, began: make(chan struct{}, 1), release: make(chan struct{})}
	h := &harness{t: t, home: t.TempDir(), toolbox: gt, fake: llmtest.NewOpenAI(key)}
	h.fake.SetResponder(script)
	newHarnessWith(t, h)
	a := h.createWithTools("forecaster", "weather")
	events, out := h.streamed(context.Background(), a, "what is the weather?")
	var got []StreamEvent
	for ev := range events {
		got = append(got, ev)
		if ev.Type == StreamToolRun {
			break
		}
	}
	<-gt.began
	// The first call's settle runs beside the turn (the turn's answer
	// waits for it, a tool run does not), so wait until it is on record;
	// its spend then uses up the agent's budget.
	var before *usage.UsageReport
	kerneltest.WaitFor(t, "the first call settled", func() bool {
		s, err := h.meter.Usage(context.Background(), "day")
		before = s
		return err == nil && s.RequestCount == 1
	})
	if before.TotalCostUSD <= 0 {
		t.Fatalf("after the first call: %+v", before)
	}
	tiny := before.TotalCostUSD
	if _, err := h.meter.SetAgentBudget(context.Background(), usage.SetAgentBudget{AgentID: a.ID, DailyLimitUSD: &tiny}); err != nil {
		t.Fatal(err)
	}
	close(gt.release)
	rest, res := drain(t, events, out)
	got = append(got, rest...)
	if de := kernel.AsError(asErr(res)); de == nil || de.Kind != kernel.KindPaymentRequired || de.Code != "budget_exceeded" {
		t.Fatalf("the cut turn answered %v", res)
	}
	if last := got[len(got)-1]; last.Type != StreamStep || last.Iteration != 2 {
		t.Fatalf("the stream's last event %+v (the second call must not have begun)", last)
	}
	if n := len(h.fake.Requests()); n != 1 {
		t.Fatalf("the provider got %d calls; the second was over budget", n)
	}
	after, _ := h.meter.Usage(context.Background(), "day")
	if after.RequestCount != 1 || after.TotalCostUSD != before.TotalCostUSD || after.TotalCostUSD > tiny {
		t.Fatalf("spend went from %+v to %+v", before, after)
	}
	if !strings.Contains(strings.Join(h.auditTypes(), " "), "agent_message:denied") {
		t.Fatal("the cut turn is not audited as denied")
	}
}

func asErr(v any) error {
	err, _ := v.(error)
	return err
}

func TestCancelledStreamClosesTheProviderCallAndMetersWhatArrived(t *testing.T) {
	for _, anthropic := range []bool{false, true} {
		h := newToolHarness(t, anthropic, nil)
		h.fake.SetReply(func(llmtest.Request) string { return strings.Repeat("lorem ipsum ", 100) })
		h.fake.SetChunkDelay(5 * time.Millisecond)
		a := h.create("talker")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		events, out := h.streamed(ctx, a, "talk")
		texts := 0
		var res any
		for ev := range events {
			if ev.Type == StreamText {
				if texts++; texts == 3 {
					cancel()
				}
			}
		}
		res = <-out
		if code(asErr(res)) != "turn_cancelled" {
			t.Fatalf("cancelled turn answered %v", res)
		}
		select {
		case <-h.fake.StreamCuts():
		case <-time.After(10 * time.Second):
			t.Fatal("the provider's stream was not closed")
		}
		// Metered once, as a cancelled call with the tokens that arrived.
		waitFor(t, "the cancelled call's usage", func() bool {
			rep, err := h.meter.Usage(context.Background(), "day")
			return err == nil && rep.RequestCount == 1
		})
		rep, _ := h.meter.Usage(context.Background(), "day")
		if rep.FailedRequests != 1 || rep.TotalOutputTokens == 0 || rep.TotalInputTokens == 0 {
			t.Fatalf("usage %+v", rep)
		}
	}
}
