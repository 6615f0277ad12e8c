package usage

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Options configure the ledger.
type Options struct {
	// Retention is how long raw events are kept; older ones are deleted
	// (their roll-ups stay). 0 keeps them forever.
	Retention time.Duration
	// ReservationTTL releases a reservation nobody settled after this long.
	ReservationTTL time.Duration
	// Now replaces the clock (tests).
	Now func() time.Time
}

// DefaultRetention keeps raw events for 90 days.
const DefaultRetention = 90 * 24 * time.Hour

// SettleTimeout bounds the wait for a usage event to be on disk.
const SettleTimeout = 10 * time.Second

// Meter is the handle other packages use to reach the ledger actor.
type Meter struct {
	k   *kernel.Kernel
	pid *actor.PID
}

// Start spawns the ledger as the root actor "usage". auditLog may be nil
// (tests); budget alerts are then only published, not audited.
func Start(k *kernel.Kernel, db *store.DB, auditLog *audit.Log, opts Options) (*Meter, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReservationTTL <= 0 {
		opts.ReservationTTL = 15 * time.Minute
	}
	m := &ledgerMetrics{
		reserved: prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_budget_reservations_total", Help: "Budget reservations granted."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_budget_refusals_total", Help: "LLM calls refused by a budget limit (402)."}),
		settled:  prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_usage_events_total", Help: "Usage events recorded."}),
		commits:  prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_usage_commits_total", Help: "Synced usage batches."}),
	}
	for _, c := range []prometheus.Collector{m.reserved, m.refused, m.settled, m.commits} {
		if err := k.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	logger := k.Log.With().Str("component", "usage").Logger()
	pid, err := k.SpawnRoot("usage", func() actor.Actor {
		return &ledger{db: db, audit: auditLog, log: logger, now: opts.Now, retention: opts.Retention,
			resTTL: opts.ReservationTTL, metrics: m}
	}, actor.WithDispatcher(kernel.PinnedDispatcher(300)))
	if err != nil {
		return nil, err
	}
	return &Meter{k: k, pid: pid}, nil
}

// PID is the ledger's address.
func (m *Meter) PID() *actor.PID { return m.pid }

// Reserve holds a call's worst case against every applicable limit. The
// error is a KindPaymentRequired "budget_exceeded" when a limit would be
// passed.
func (m *Meter) Reserve(r Reserve) (*Reservation, error) {
	call := getCall(kernel.DefaultAskTimeout)
	r.reply = call.reserve
	m.k.Root.Send(m.pid, &r)
	select {
	case rep := <-call.reserve:
		putCall(call)
		return rep.res, rep.err
	case <-call.timer.C:
		// The late answer would land in this call's channel: not reused.
		return nil, kernel.Errorf(kernel.KindUnavailable, "actor_timeout", "usage ledger did not answer in time")
	}
}

// Settle releases the reservation (0 for none) and records e; it returns
// once the event is on disk, with its timestamp set.
func (m *Meter) Settle(reservationID uint64, e Event) (Event, error) {
	call := getCall(SettleTimeout)
	m.k.Root.Send(m.pid, &Settle{ReservationID: reservationID, Event: e, reply: call.settle})
	select {
	case rep := <-call.settle:
		putCall(call)
		return rep.event, rep.err
	case <-call.timer.C:
		return Event{}, kernel.Errorf(kernel.KindUnavailable, "actor_timeout", "usage ledger did not confirm the write in time")
	}
}

// call is a caller's reply channels and timeout timer, reused across calls:
// a fresh channel and timer per Reserve and per Settle were a fifth of the
// hot path's allocations. A call is returned to the pool only after its
// answer was received, so a reused channel is always empty; with Go 1.23+
// timers, Stop leaves no stale tick behind for the next Reset.
type call struct {
	reserve chan reserveReply
	settle  chan settleReply
	timer   *time.Timer
}

var calls sync.Pool

func getCall(timeout time.Duration) *call {
	if c, ok := calls.Get().(*call); ok {
		c.timer.Reset(timeout)
		return c
	}
	return &call{reserve: make(chan reserveReply, 1), settle: make(chan settleReply, 1), timer: time.NewTimer(timeout)}
}

func putCall(c *call) {
	c.timer.Stop()
	calls.Put(c)
}

func ask[T any](m *Meter, msg any) (T, error) {
	return kernel.Ask[T](m.k, m.pid, msg, kernel.DefaultAskTimeout)
}

// Usage answers GET /api/usage.
func (m *Meter) Usage(period string) (*UsageReport, error) {
	return ask[*UsageReport](m, &UsageQuery{Period: period, Limit: 1000})
}

// Summary answers GET /api/usage/summary.
func (m *Meter) Summary() (*Summary, error) { return ask[*Summary](m, &SummaryQuery{}) }

// ByModel answers GET /api/usage/by-model.
func (m *Meter) ByModel(period string) (*ByModel, error) {
	return ask[*ByModel](m, &ByModelQuery{Period: period})
}

// Daily answers GET /api/usage/daily.
func (m *Meter) Daily(days int) (*Daily, error) { return ask[*Daily](m, &DailyQuery{Days: days}) }

// AgentSpend lists every agent's spend.
func (m *Meter) AgentSpend() ([]AgentSpend, error) { return ask[[]AgentSpend](m, &AgentSpendQuery{}) }

// Budget answers GET /api/budget.
func (m *Meter) Budget() (*BudgetStatus, error) { return ask[*BudgetStatus](m, &BudgetQuery{}) }

// SetBudget changes the global limits durably.
func (m *Meter) SetBudget(s SetBudget) (*BudgetStatus, error) { return ask[*BudgetStatus](m, &s) }

// AgentBudget answers GET /api/budget/agents/{id}.
func (m *Meter) AgentBudget(id, name string) (*AgentBudget, error) {
	return ask[*AgentBudget](m, &AgentBudgetQuery{AgentID: id, AgentName: name})
}

// SetAgentBudget changes an agent's limits durably.
func (m *Meter) SetAgentBudget(s SetAgentBudget) (*AgentBudget, error) {
	return ask[*AgentBudget](m, &s)
}

// ForgetAgent drops a deleted agent's limits.
func (m *Meter) ForgetAgent(id string) error {
	_, err := ask[*ForgetAgent](m, &ForgetAgent{AgentID: id})
	return err
}

// askCtx is ask bounded by ctx too: its deadline shortens the timeout and
// its end stops the wait (the ledger may still act on the message).
func askCtx[T any](ctx context.Context, m *Meter, msg any) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, kernel.Errorf(kernel.KindUnavailable, "request_cancelled", "the request ended before the usage ledger was asked: %v", err)
	}
	timeout := kernel.DefaultAskTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(d)), time.Millisecond)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := kernel.Ask[T](m.k, m.pid, msg, timeout)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, kernel.Errorf(kernel.KindUnavailable, "request_cancelled", "the request ended before the usage ledger answered: %v", ctx.Err())
	}
}

// UsageOf answers GET /api/usage with one page (q.Offset, q.Limit) of
// LibreFang's per-agent items.
func (m *Meter) UsageOf(ctx context.Context, q UsageQuery) (*UsageReport, error) {
	return askCtx[*UsageReport](ctx, m, &q)
}

// ModelPerformance answers GET /api/usage/by-model/performance.
func (m *Meter) ModelPerformance(ctx context.Context) (*ModelPerformance, error) {
	return askCtx[*ModelPerformance](ctx, m, &ModelPerfQuery{})
}

// ProviderBudgets answers GET /api/budget/providers.
func (m *Meter) ProviderBudgets(ctx context.Context) (*ProviderBudgets, error) {
	return askCtx[*ProviderBudgets](ctx, m, &ProviderBudgetsQuery{})
}

// ProviderBudget answers GET /api/budget/providers/{id}.
func (m *Meter) ProviderBudget(ctx context.Context, provider string) (*ProviderBudget, error) {
	return askCtx[*ProviderBudget](ctx, m, &ProviderBudgetQuery{Provider: provider})
}

// SetProviderBudget changes (or clears) a provider's limits durably.
func (m *Meter) SetProviderBudget(ctx context.Context, s SetProviderBudget) (*ProviderLimitsSet, error) {
	return askCtx[*ProviderLimitsSet](ctx, m, &s)
}

// UserBudgets answers GET /api/budget/users (limit rows at most).
func (m *Meter) UserBudgets(ctx context.Context, limit int) (*UserBudgets, error) {
	return askCtx[*UserBudgets](ctx, m, &UserBudgetsQuery{Limit: limit})
}

// UserBudget answers GET /api/budget/users/{id}.
func (m *Meter) UserBudget(ctx context.Context, user string) (*UserBudget, error) {
	return askCtx[*UserBudget](ctx, m, &UserBudgetQuery{User: user})
}

// SetUserBudget replaces a user's limits durably.
func (m *Meter) SetUserBudget(ctx context.Context, user string, l UserLimits) (*UserLimits, error) {
	return askCtx[*UserLimits](ctx, m, &SetUserBudget{User: user, Limits: &l})
}

// ClearUserBudget removes a user's limits durably.
func (m *Meter) ClearUserBudget(ctx context.Context, user string) error {
	_, err := askCtx[*SetUserBudget](ctx, m, &SetUserBudget{User: user})
	return err
}
