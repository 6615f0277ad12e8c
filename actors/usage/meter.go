package usage

import (
	"context"
	"sync"
	"sync/atomic"
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
	// cl is the cluster-wide budget store in cluster mode (cluster.go).
	cl atomic.Pointer[clusterBox]
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
//
// It waits on a pooled reply channel, not kernel.Ask: every LLM call
// makes one Reserve and one Settle (docs/architecture.md, "Asking an
// actor"). ctx ends the wait early; the pooled timer bounds it otherwise.
func (m *Meter) Reserve(ctx context.Context, r Reserve) (*Reservation, error) {
	if cl := m.cluster(); cl != nil {
		return m.reserveCluster(ctx, cl, r)
	}
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
	case <-ctx.Done():
		return nil, kernel.AskEnded(m.pid, ctx.Err())
	}
}

// Settle releases the reservation (0 for none) and records e; it returns
// once the event is on disk, with its timestamp set, or when ctx ends (the
// event may still be written).
func (m *Meter) Settle(ctx context.Context, reservationID uint64, e Event) (Event, error) {
	if cl := m.cluster(); cl != nil {
		return m.settleCluster(ctx, cl, reservationID, e)
	}
	return m.settleLocal(ctx, reservationID, e, false)
}

// settleLocal is Settle in this node's ledger.
func (m *Meter) settleLocal(ctx context.Context, reservationID uint64, e Event, clusterAlerts bool) (Event, error) {
	call := getCall(SettleTimeout)
	m.k.Root.Send(m.pid, &Settle{ReservationID: reservationID, Event: e, reply: call.settle, clusterAlerts: clusterAlerts})
	select {
	case rep := <-call.settle:
		putCall(call)
		return rep.event, rep.err
	case <-call.timer.C:
		return Event{}, kernel.Errorf(kernel.KindUnavailable, "actor_timeout", "usage ledger did not confirm the write in time")
	case <-ctx.Done():
		return Event{}, kernel.AskEnded(m.pid, ctx.Err())
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

// Usage answers GET /api/usage.
func (m *Meter) Usage(ctx context.Context, period string) (*UsageReport, error) {
	return kernel.Ask[*UsageReport](ctx, m.k, m.pid, &UsageQuery{Period: period, Limit: 1000})
}

// Summary answers GET /api/usage/summary.
func (m *Meter) Summary(ctx context.Context) (*Summary, error) {
	return kernel.Ask[*Summary](ctx, m.k, m.pid, &SummaryQuery{})
}

// ByModel answers GET /api/usage/by-model.
func (m *Meter) ByModel(ctx context.Context, period string) (*ByModel, error) {
	return kernel.Ask[*ByModel](ctx, m.k, m.pid, &ByModelQuery{Period: period})
}

// Daily answers GET /api/usage/daily.
func (m *Meter) Daily(ctx context.Context, days int) (*Daily, error) {
	return kernel.Ask[*Daily](ctx, m.k, m.pid, &DailyQuery{Days: days})
}

// AgentSpend lists every agent's spend.
func (m *Meter) AgentSpend(ctx context.Context) ([]AgentSpend, error) {
	return kernel.Ask[[]AgentSpend](ctx, m.k, m.pid, &AgentSpendQuery{})
}

// Budget answers GET /api/budget.
func (m *Meter) Budget(ctx context.Context) (*BudgetStatus, error) {
	if cl := m.cluster(); cl != nil {
		return view[*BudgetStatus](ctx, m, cl, &BudgetQuery{}, []scope{{kind: 'g'}}, []Scope{{Kind: 'g'}})
	}
	return kernel.Ask[*BudgetStatus](ctx, m.k, m.pid, &BudgetQuery{})
}

// SetBudget changes the global limits durably.
func (m *Meter) SetBudget(ctx context.Context, s SetBudget) (*BudgetStatus, error) {
	st, err := kernel.Ask[*BudgetStatus](ctx, m.k, m.pid, &s)
	if cl := m.cluster(); cl != nil && err == nil {
		if err := m.publishLimits(ctx, cl, LimitsGlobal, "", ""); err != nil {
			return nil, err
		}
		return m.Budget(ctx)
	}
	return st, err
}

// AgentBudget answers GET /api/budget/agents/{id}.
func (m *Meter) AgentBudget(ctx context.Context, id, name string) (*AgentBudget, error) {
	if cl := m.cluster(); cl != nil {
		return view[*AgentBudget](ctx, m, cl, &AgentBudgetQuery{AgentID: id, AgentName: name},
			[]scope{{kind: 'a', id: id}}, []Scope{{Kind: 'a', ID: name}})
	}
	return kernel.Ask[*AgentBudget](ctx, m.k, m.pid, &AgentBudgetQuery{AgentID: id, AgentName: name})
}

// SetAgentBudget changes an agent's limits durably.
func (m *Meter) SetAgentBudget(ctx context.Context, s SetAgentBudget) (*AgentBudget, error) {
	b, err := kernel.Ask[*AgentBudget](ctx, m.k, m.pid, &s)
	if cl := m.cluster(); cl != nil && err == nil && s.AgentName != "" {
		// Shared by the agent's name: the same-named agent on every node.
		if err := m.publishLimits(ctx, cl, LimitsAgent, s.AgentName, s.AgentID); err != nil {
			return nil, err
		}
		return m.AgentBudget(ctx, s.AgentID, s.AgentName)
	}
	return b, err
}

// ForgetAgent drops a deleted agent's limits.
func (m *Meter) ForgetAgent(ctx context.Context, id string) error {
	_, err := kernel.Ask[*ForgetAgent](ctx, m.k, m.pid, &ForgetAgent{AgentID: id})
	return err
}

// UsageOf answers GET /api/usage with one page (q.Offset, q.Limit) of
// LibreFang's per-agent items.
func (m *Meter) UsageOf(ctx context.Context, q UsageQuery) (*UsageReport, error) {
	return kernel.Ask[*UsageReport](ctx, m.k, m.pid, &q)
}

// ModelPerformance answers GET /api/usage/by-model/performance.
func (m *Meter) ModelPerformance(ctx context.Context) (*ModelPerformance, error) {
	return kernel.Ask[*ModelPerformance](ctx, m.k, m.pid, &ModelPerfQuery{})
}

// ProviderBudgets answers GET /api/budget/providers.
func (m *Meter) ProviderBudgets(ctx context.Context) (*ProviderBudgets, error) {
	return kernel.Ask[*ProviderBudgets](ctx, m.k, m.pid, &ProviderBudgetsQuery{})
}

// ProviderBudget answers GET /api/budget/providers/{id}.
func (m *Meter) ProviderBudget(ctx context.Context, provider string) (*ProviderBudget, error) {
	if cl := m.cluster(); cl != nil && CheckScopeID("provider id", provider) == nil {
		return view[*ProviderBudget](ctx, m, cl, &ProviderBudgetQuery{Provider: provider},
			[]scope{{kind: 'p', id: provider}}, []Scope{{Kind: 'p', ID: provider}})
	}
	return kernel.Ask[*ProviderBudget](ctx, m.k, m.pid, &ProviderBudgetQuery{Provider: provider})
}

// SetProviderBudget changes (or clears) a provider's limits durably.
func (m *Meter) SetProviderBudget(ctx context.Context, s SetProviderBudget) (*ProviderLimitsSet, error) {
	set, err := kernel.Ask[*ProviderLimitsSet](ctx, m.k, m.pid, &s)
	if cl := m.cluster(); cl != nil && err == nil {
		err = m.publishLimits(ctx, cl, LimitsProvider, s.Provider, "")
	}
	return set, err
}

// UserBudgets answers GET /api/budget/users (limit rows at most).
func (m *Meter) UserBudgets(ctx context.Context, limit int) (*UserBudgets, error) {
	return kernel.Ask[*UserBudgets](ctx, m.k, m.pid, &UserBudgetsQuery{Limit: limit})
}

// UserBudget answers GET /api/budget/users/{id}.
func (m *Meter) UserBudget(ctx context.Context, user string) (*UserBudget, error) {
	if cl := m.cluster(); cl != nil && CheckScopeID("user id", user) == nil {
		return view[*UserBudget](ctx, m, cl, &UserBudgetQuery{User: user},
			[]scope{{kind: 'u', id: user}}, []Scope{{Kind: 'u', ID: user}})
	}
	return kernel.Ask[*UserBudget](ctx, m.k, m.pid, &UserBudgetQuery{User: user})
}

// SetUserBudget replaces a user's limits durably.
func (m *Meter) SetUserBudget(ctx context.Context, user string, l UserLimits) (*UserLimits, error) {
	set, err := kernel.Ask[*UserLimits](ctx, m.k, m.pid, &SetUserBudget{User: user, Limits: &l})
	if cl := m.cluster(); cl != nil && err == nil {
		err = m.publishLimits(ctx, cl, LimitsUser, user, "")
	}
	return set, err
}

// ClearUserBudget removes a user's limits durably.
func (m *Meter) ClearUserBudget(ctx context.Context, user string) error {
	_, err := kernel.Ask[*SetUserBudget](ctx, m.k, m.pid, &SetUserBudget{User: user})
	if cl := m.cluster(); cl != nil && err == nil {
		err = m.publishLimits(ctx, cl, LimitsUser, user, "")
	}
	return err
}
