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

// runTurn is one LLM call with its budget around it, run in a goroutine:
// reserve the worst case with the ledger (402 if it does not fit), call
// the provider, then settle the reservation with the real cost, which
// writes the usage event durably. Every call that reached the reservation
// is settled, whether the provider answered or not.
func (d *deps) runTurn(ctx context.Context, t *turn) (res *TurnResult, answer string, err error) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error().Str("agent_id", t.agentID).Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("agent turn panicked")
			res, answer, err = nil, "", kernel.Errorf(kernel.KindInternal, "internal_error", "the turn failed")
		}
	}()
	prompt := llm.PromptTokensUpperBound(t.req.System, t.req.Messages)
	maxOut := int64(t.req.MaxTokens)
	held, err := d.meter.Reserve(usage.Reserve{AgentID: t.agentID, AgentName: t.agentName, Provider: t.route.Provider,
		Model: t.route.Model, CostNanos: t.route.Pricing.WorstCaseNanos(prompt, maxOut), Tokens: prompt + maxOut})
	if err != nil {
		return nil, "", err
	}
	ev := usage.Event{AgentID: t.agentID, AgentName: t.agentName, SessionID: t.sessionID, Provider: t.route.Provider,
		Model: t.route.Model, PricingKnown: t.route.Pricing.PricingKnown}
	start := time.Now()
	resp, callErr := d.llm.Chat(ctx, t.route, t.req)
	ev.LatencyMS = time.Since(start).Milliseconds()
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
	if _, serr := d.meter.Settle(held.ID, ev); serr != nil && callErr == nil {
		// No answer without its usage on disk.
		return nil, "", serr
	}
	if callErr != nil {
		return nil, "", callErr
	}
	return &TurnResult{
		Response: resp.Text, InputTokens: ev.InputTokens, CachedInputTokens: ev.CachedInputTokens,
		OutputTokens: ev.OutputTokens, CostUSD: float64(ev.CostNanos) / 1e9, Model: t.route.Model,
		Provider: t.route.Provider, PricingKnown: t.route.Pricing.PricingKnown, AgentID: t.agentID,
		SessionID: t.sessionID, LatencyMS: ev.LatencyMS,
	}, resp.Text, nil
}
