package agent

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/usage"
)

// stepResult is one provider call's answer and what it cost.
type stepResult struct {
	resp              *llm.Response
	inputTokens       int64
	cachedInputTokens int64
	outputTokens      int64
	costNanos         int64
	latency           time.Duration
	// settled answers once the step's usage event is durable.
	settled <-chan error
}

// runStep is one LLM call with its budget around it, run in a goroutine:
// reserve the worst case with the ledger (402 if it does not fit), call
// the provider, then settle the reservation with the real cost, which
// writes the usage event durably. Every call that reached the reservation
// is settled, whether the provider answered or not. A turn with tool
// calls runs several steps, each metered on its own.
func (d *deps) runStep(ctx context.Context, t *turn, req llm.Request) (res *stepResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error().Str("agent_id", t.agentID).Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("agent turn panicked")
			res, err = nil, kernel.Errorf(kernel.KindInternal, "internal_error", "the turn failed")
		}
	}()
	prompt := llm.PromptTokensUpperBound(req.System, req.Messages) + llm.ToolsTokensUpperBound(req.Tools)
	maxOut := int64(req.MaxTokens)
	user := t.w.send.User
	held, err := d.meter.Reserve(ctx, usage.Reserve{AgentID: t.agentID, AgentName: t.agentName, Provider: t.route.Provider,
		Model: t.route.Model, User: user, CostNanos: t.route.Pricing.WorstCaseNanos(prompt, maxOut), Tokens: prompt + maxOut})
	if err != nil {
		return nil, err
	}
	ev := usage.Event{AgentID: t.agentID, AgentName: t.agentName, SessionID: t.sessionID, Provider: t.route.Provider,
		Model: t.route.Model, PricingKnown: t.route.Pricing.PricingKnown, User: user}
	start := time.Now()
	var resp *llm.Response
	var callErr error
	if t.streams() {
		resp, callErr = d.llm.ChatStream(ctx, t.route, req, func(dl llm.Delta) error { return t.forward(ctx, dl) })
	} else {
		resp, callErr = d.llm.Chat(ctx, t.route, req)
	}
	elapsed := time.Since(start)
	ev.LatencyMS = elapsed.Milliseconds()
	if callErr != nil {
		ev.Outcome = llm.OutcomeServerError
		var pe *llm.ProviderError
		if errors.As(callErr, &pe) {
			ev.Outcome = pe.Outcome
		}
	} else {
		ev.Outcome = llm.OutcomeOK
	}
	if resp != nil {
		// A stream that broke still comes with what the provider will
		// bill for (reported or estimated, within the reservation: the
		// provider stops at max_tokens).
		u := resp.Usage
		ev.InputTokens, ev.CachedInputTokens, ev.CacheWriteTokens, ev.OutputTokens = u.InputTokens, u.CachedInputTokens, u.CacheWriteTokens, u.OutputTokens
		ev.CostNanos, ev.UsageEstimated = t.route.Pricing.CostNanos(u), resp.UsageEstimated
	}
	// The usage event syncs while the turn goes on; the turn's answer
	// waits for it (no answer without its usage on disk).
	settled := make(chan error, 1)
	// Not the turn's ctx: a turn given up on still has its usage
	// confirmed (SettleTimeout bounds the wait).
	go func() {
		_, serr := d.meter.Settle(context.Background(), held.ID, ev)
		settled <- serr
	}()
	if callErr != nil {
		return nil, callErr
	}
	return &stepResult{resp: resp, inputTokens: ev.InputTokens, cachedInputTokens: ev.CachedInputTokens,
		outputTokens: ev.OutputTokens, costNanos: ev.CostNanos, latency: elapsed, settled: settled}, nil
}

// add counts a step into the turn's result (CostUSD is set from
// CostNanos when the turn ends, so sums stay exact).
func (p *progress) add(s *stepResult) {
	p.InputTokens += s.inputTokens
	p.CachedInputTokens += s.cachedInputTokens
	p.OutputTokens += s.outputTokens
	p.CostNanos += s.costNanos
	p.LatencyMS += s.latency.Milliseconds()
	p.Iterations++
}

// streams reports whether the turn's caller reads its events.
func (t *turn) streams() bool { return t.w.send != nil && t.w.send.Stream != nil }

// emit hands ev to the turn's stream, if it has one, waiting for the
// reader or for ctx. It runs in the turn's goroutines, never in Receive.
func (t *turn) emit(ctx context.Context, ev StreamEvent) error {
	if !t.streams() {
		return nil
	}
	select {
	case t.w.send.Stream <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forward passes a provider's delta on as a stream event. Reasoning is
// not passed on: LibreFang's stream does not carry it either.
func (t *turn) forward(ctx context.Context, d llm.Delta) error {
	switch {
	case d.Text != "":
		return t.emit(ctx, StreamEvent{Type: StreamText, Text: d.Text})
	case d.ToolStart != nil:
		return t.emit(ctx, StreamEvent{Type: StreamToolUse, Tool: d.ToolStart.Name, ToolCallID: d.ToolStart.ID})
	case d.ToolEnd != nil:
		return t.emit(ctx, StreamEvent{Type: StreamToolInput, Tool: d.ToolEnd.Name, ToolCallID: d.ToolEnd.ID, Input: d.ToolEnd.Arguments})
	}
	return nil
}
