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
	resp, callErr := d.llm.Chat(ctx, t.route, req)
	elapsed := time.Since(start)
	ev.LatencyMS = elapsed.Milliseconds()
	if callErr != nil {
		ev.Outcome = llm.OutcomeServerError
		var pe *llm.ProviderError
		if errors.As(callErr, &pe) {
			ev.Outcome = pe.Outcome
		}
	} else {
		u := resp.Usage
		ev.Outcome = llm.OutcomeOK
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
}
