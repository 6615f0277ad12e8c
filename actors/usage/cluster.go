package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
)

// Cluster mode (docs/cluster.md, "Budgets across the cluster"): the
// spend and the open reservations that decide admission live in a store
// every node shares (etcd, actors/cluster/budget.go), so a reservation on
// one node sees every node's spend and holds. The limits, the usage
// events and the roll-ups behind the reports stay in this node's ledger.
// A single node never sets a Cluster and runs none of this.

// Scope names one set of limits a call counts against: Kind 'g' global
// (ID ""), 'a' an agent (by name: agents are per node, a name is what
// the nodes share), 'p' a provider, 'u' a user.
type Scope struct {
	Kind byte
	ID   string
}

// Caps are a scope's limits in nano-USD (Hourly over the rolling 60
// minutes) and tokens per rolling hour; 0 is none.
type Caps struct{ Hourly, Daily, Monthly, Tokens int64 }

// ScopeSpend is a scope's cluster-wide spend at one moment: settled cost
// in the rolling hour, today (UTC) and this month, the rolling hour's
// tokens, and what open reservations hold (cost, tokens, how many).
type ScopeSpend struct {
	Hour, Day, Month, Tokens int64
	HeldCost, HeldTokens     int64
	Holds                    int
}

// ClusterReserve asks to hold a call's worst case against Scopes; Caps[i]
// are Scopes[i]'s limits.
type ClusterReserve struct {
	Scopes    []Scope
	Caps      []Caps
	CostNanos int64
	Tokens    int64
}

// Refusal is the limit a reservation would pass: Scopes[Index]'s Limit
// ("daily", "monthly", "hourly", "hourly_tokens"), with what was spent
// and held when it was checked.
type Refusal struct {
	Index            int
	Limit            string
	Max, Spent, Held int64
}

// Cluster is the cluster-wide budget store.
type Cluster interface {
	// Reserve admits the call if its worst case fits under every cap,
	// counting every node's spend and open holds; the hold (an id for
	// Settle) is durable before it returns and is released by itself if
	// this node dies. A refusal is not an error.
	Reserve(ctx context.Context, now time.Time, r ClusterReserve) (hold uint64, refused *Refusal, err error)
	// Settle replaces hold (0: none) with the real cost and tokens in
	// every scope, durably, before it returns; it answers with scopes'
	// spend right after (for the alerts).
	Settle(ctx context.Context, now time.Time, hold uint64, scopes []Scope, costNanos, tokens int64) ([]ScopeSpend, error)
	// Spend reads scopes' cluster-wide spend.
	Spend(ctx context.Context, now time.Time, scopes []Scope) ([]ScopeSpend, error)
	// PutLimits shares a limit set (kind LimitsGlobal, LimitsProvider or
	// LimitsUser; raw is its stored JSON, nil when cleared) with every
	// node, which applies it through ApplyClusterLimits.
	PutLimits(ctx context.Context, kind, id string, raw []byte) error
}

// Kinds of limits shared in cluster mode. An agent's are shared by its
// name (its id differs on each node; docs/cluster.md).
const (
	LimitsGlobal   = "global"
	LimitsProvider = "provider"
	LimitsUser     = "user"
	LimitsAgent    = "agent"
)

// agentLimitsOf is the limits in force for agent id: in cluster mode the
// ones shared for its name, if any; else this node's.
func (l *ledger) agentLimitsOf(id string) AgentLimits {
	if l.sharedAgent != nil {
		if sh, ok := l.sharedAgent[l.agentNames[id]]; ok {
			return sh
		}
	}
	return l.agentLimits[id]
}

// learnName remembers agent id's name (cluster mode: shared limits are
// found by name).
func (l *ledger) learnName(id, name string) {
	if id == "" || name == "" {
		return
	}
	if l.agentNames == nil {
		l.agentNames = map[string]string{}
		l.sharedAgent = map[string]AgentLimits{}
	}
	l.agentNames[id] = name
}

// Admit checks one scope's spend, holds and a call's worst case against
// its caps in the order the single-node ledger does (daily, monthly,
// hourly, hourly tokens): it returns the first limit passed.
func Admit(sp ScopeSpend, c Caps, cost, tokens int64) (Refusal, bool) {
	for _, x := range [4]struct {
		name             string
		max, spent, held int64
		want             int64
	}{
		{"daily", c.Daily, sp.Day, sp.HeldCost, cost},
		{"monthly", c.Monthly, sp.Month, sp.HeldCost, cost},
		{"hourly", c.Hourly, sp.Hour, sp.HeldCost, cost},
		{"hourly_tokens", c.Tokens, sp.Tokens, sp.HeldTokens, tokens},
	} {
		if x.max > 0 && x.spent+x.held+x.want > x.max {
			return Refusal{Limit: x.name, Max: x.max, Spent: x.spent, Held: x.held}, false
		}
	}
	return Refusal{}, true
}

type clusterBox struct{ c Cluster }

// UseCluster makes admission cluster-wide (cluster mode, before the first
// call). Reports stay this node's; budget views show the cluster's spend.
func (m *Meter) UseCluster(c Cluster) { m.cl.Store(&clusterBox{c}) }

func (m *Meter) cluster() Cluster {
	if b := m.cl.Load(); b != nil {
		return b.c
	}
	return nil
}

// clusterScopes are the scopes a call counts against in the cluster, in
// the ledger's order (scopesOf), with the agent by name.
func clusterScopes(agentName, provider, user string) []Scope {
	s := []Scope{{'a', agentName}, {'g', ""}, {'p', provider}}
	if user != "" {
		s = append(s, Scope{'u', user})
	}
	return s
}

// capsQuery asks the ledger for the caps of a call's scopes (in
// clusterScopes' order). Answered with *capsAnswer.
type capsQuery struct{ agentID, agentName, provider, user string }

type capsAnswer struct {
	caps      []Caps
	threshold float64
}

// clusterRefused has the ledger raise (publish, audit) a refusal the
// cluster store decided.
type clusterRefused struct{ v violation }

// clusterView has the ledger answer q with the spend of the scopes in
// spends (the cluster's) instead of its own.
type clusterView struct {
	q      any
	spends map[scope]ScopeSpend
}

func (l *ledger) capsFor(m *capsQuery) *capsAnswer {
	l.learnName(m.agentID, m.agentName)
	a := &capsAnswer{threshold: l.limits.AlertThreshold}
	for _, s := range scopesOf(m.agentID, m.provider, m.user) {
		if s.kind == 'u' && s.id == "" {
			continue
		}
		c, _ := l.capsOf(s)
		a.caps = append(a.caps, Caps{Hourly: c.hourly, Daily: c.daily, Monthly: c.monthly, Tokens: c.tokens})
	}
	return a
}

func (m *Meter) reserveCluster(ctx context.Context, cl Cluster, r Reserve) (*Reservation, error) {
	if r.CostNanos < 0 || r.Tokens < 0 {
		return nil, kernel.Invalid("reservation must not be negative")
	}
	caps, err := kernel.Ask[*capsAnswer](ctx, m.k, m.pid, &capsQuery{agentID: r.AgentID, agentName: r.AgentName, provider: r.Provider, user: r.User})
	if err != nil {
		return nil, err
	}
	scopes := clusterScopes(r.AgentName, r.Provider, r.User)
	hold, ref, err := cl.Reserve(ctx, time.Now().UTC(), ClusterReserve{Scopes: scopes, Caps: caps.caps, CostNanos: r.CostNanos, Tokens: r.Tokens})
	if err != nil {
		return nil, kernel.Errorf(kernel.KindUnavailable, "budget_unavailable", "the cluster budget ledger did not answer: %v", err)
	}
	if ref != nil {
		s := scopes[ref.Index]
		now := time.Now().UTC()
		v := violation{scope: scopeNames[s.Kind], limit: ref.Limit, max: ref.Max, spent: ref.Spent, held: ref.Held,
			agentID: r.AgentID, agentName: r.AgentName, window: windowOf(ref.Limit, now)}
		if s.Kind == 'p' || s.Kind == 'u' {
			v.id = s.ID
		}
		m.k.Root.Send(m.pid, &clusterRefused{v: v})
		return nil, kernel.Errorf(kernel.KindPaymentRequired, "budget_exceeded", "%s", v.message(&r))
	}
	return &Reservation{ID: hold, CostNanos: r.CostNanos, Tokens: r.Tokens}, nil
}

// settleCluster records the real cost in the cluster store and the event
// in this node's ledger, both durably, at the same time.
func (m *Meter) settleCluster(ctx context.Context, cl Cluster, id uint64, e Event) (Event, error) {
	local := make(chan settleReply, 1)
	go func() {
		ev, err := m.settleLocal(ctx, 0, e, true)
		local <- settleReply{event: ev, err: err}
	}()
	cctx, cancel := context.WithTimeout(ctx, SettleTimeout)
	scopes := clusterScopes(e.AgentName, e.Provider, e.User)
	spends, cerr := cl.Settle(cctx, time.Now().UTC(), id, scopes, e.CostNanos, e.InputTokens+e.OutputTokens)
	cancel()
	rep := <-local
	if cerr != nil {
		return Event{}, kernel.Errorf(kernel.KindUnavailable, "usage_unrecorded",
			"the call's cost could not be recorded in the cluster budget ledger; the call's result is withheld: %v", cerr)
	}
	// Warnings and exceeded alerts follow the cluster's spend.
	view := make(map[scope]ScopeSpend, len(spends))
	for i, s := range scopes {
		k := scope{kind: s.Kind, id: s.ID}
		if s.Kind == 'a' {
			k.id = e.AgentID
		}
		view[k] = spends[i]
	}
	m.k.Root.Send(m.pid, &clusterAlerts{spends: view, e: e})
	return rep.event, rep.err
}

// clusterAlerts has the ledger raise the alerts a settle's cluster-wide
// spend calls for.
type clusterAlerts struct {
	spends map[scope]ScopeSpend
	e      Event
}

// view asks the ledger q with the cluster's spend of scopes (ledger
// scopes: an agent by id) read from keys (cluster scopes: an agent by
// name), in the same order.
func view[T any](ctx context.Context, m *Meter, cl Cluster, q any, scopes []scope, keys []Scope) (T, error) {
	var zero T
	sp, err := cl.Spend(ctx, time.Now().UTC(), keys)
	if err != nil {
		return zero, kernel.Errorf(kernel.KindUnavailable, "budget_unavailable", "the cluster budget ledger did not answer: %v", err)
	}
	spends := make(map[scope]ScopeSpend, len(scopes))
	for i, s := range scopes {
		spends[s] = sp[i]
	}
	return kernel.Ask[T](ctx, m.k, m.pid, &clusterView{q: q, spends: spends})
}

// publishLimits shares this node's limits of kind/id with the cluster
// after a change through its API.
func (m *Meter) publishLimits(ctx context.Context, cl Cluster, kind, id, agentID string) error {
	raw, err := kernel.Ask[*limitsRaw](ctx, m.k, m.pid, &limitsRaw{kind: kind, id: id, agentID: agentID})
	if err != nil {
		return err
	}
	if err := cl.PutLimits(ctx, kind, id, raw.raw); err != nil {
		return kernel.Errorf(kernel.KindUnavailable, "budget_unavailable",
			"the limits changed on this node but could not be shared with the cluster (etcd did not answer); set them again: %v", err)
	}
	return nil
}

// ApplyClusterLimits applies limits another node (or this one) shared,
// in etcd's order, so every node ends with the last one set.
func (m *Meter) ApplyClusterLimits(kind, id string, raw []byte) {
	m.k.Root.Send(m.pid, &limitsRaw{kind: kind, id: id, raw: raw, apply: true})
}

// limitsRaw asks for a limit set's stored JSON (nil: none), or with apply
// replaces it. Answered with *limitsRaw.
type limitsRaw struct {
	kind, id string
	agentID  string // LimitsAgent: this node's id of agent id (a name)
	raw      []byte
	apply    bool
}

func (l *ledger) limitsJSON(kind, id, agentID string) []byte {
	var v any
	switch kind {
	case LimitsAgent:
		al, ok := l.agentLimits[agentID]
		if !ok {
			return nil
		}
		v = al
	case LimitsGlobal:
		v = l.limits
	case LimitsProvider:
		pl, ok := l.provLimits[id]
		if !ok {
			return nil
		}
		v = pl
	case LimitsUser:
		ul, ok := l.userLimits[id]
		if !ok {
			return nil
		}
		v = ul
	default:
		return nil
	}
	raw, _ := json.Marshal(v)
	return raw
}

// applyLimits replaces kind/id's limits with raw (shared through etcd),
// durably, as a change through the API would.
func (l *ledger) applyLimits(c actor.Context, m *limitsRaw) error {
	if m.kind == LimitsAgent {
		// Kept in memory (etcd is their store, read again at start).
		if l.sharedAgent == nil {
			l.agentNames, l.sharedAgent = map[string]string{}, map[string]AgentLimits{}
		}
		if m.raw == nil {
			delete(l.sharedAgent, m.id)
			return nil
		}
		var v AgentLimits
		if err := json.Unmarshal(m.raw, &v); err != nil {
			return err
		}
		l.sharedAgent[m.id] = v
		return nil
	}
	if string(l.limitsJSON(m.kind, m.id, "")) == string(m.raw) {
		return nil // this node's own change coming back, or no change
	}
	var key string
	var set func() error
	switch m.kind {
	case LimitsGlobal:
		var v Limits
		key, set = kBudget, func() error { l.limits = v; return nil }
		if err := json.Unmarshal(m.raw, &v); err != nil || m.raw == nil {
			return fmt.Errorf("global limits: %v", err)
		}
	case LimitsProvider:
		var v ProviderLimits
		key, set = pProvLimit+m.id, func() error { l.provLimits[m.id] = v; return nil }
		if m.raw == nil {
			set = func() error { delete(l.provLimits, m.id); return nil }
		} else if err := json.Unmarshal(m.raw, &v); err != nil {
			return err
		}
	case LimitsUser:
		var v UserLimits
		key, set = pUserLimit+m.id, func() error { l.userLimits[m.id] = v; return nil }
		if m.raw == nil {
			set = func() error { delete(l.userLimits, m.id); return nil }
		} else if err := json.Unmarshal(m.raw, &v); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown limits kind %q", m.kind)
	}
	if err := writeKVs(l.db, []kv{{key: []byte(key), val: m.raw, del: m.raw == nil}}); err != nil {
		return err
	}
	_ = set()
	l.checkAlerts(c, l.now().UTC(), "", "", "", "")
	return nil
}

// receiveCluster handles the cluster-mode messages; false if m is not one.
func (l *ledger) receiveCluster(c actor.Context, m any) bool {
	switch m := m.(type) {
	case *capsQuery:
		c.Respond(l.capsFor(m))
	case *limitsRaw:
		if !m.apply {
			raw := l.limitsJSON(m.kind, m.id, m.agentID)
			if m.kind == LimitsAgent {
				// This node's change is in force here at once (the
				// shared value for the name would hide it until the
				// watch brings it back).
				l.learnName(m.agentID, m.id)
				if v, ok := l.agentLimits[m.agentID]; ok {
					l.sharedAgent[m.id] = v
				}
			}
			c.Respond(&limitsRaw{kind: m.kind, id: m.id, raw: raw})
			break
		}
		if err := l.applyLimits(c, m); err != nil {
			l.log.Error().Err(err).Str("kind", m.kind).Str("id", m.id).Msg("limits shared by the cluster not applied")
		} else {
			l.log.Info().Str("kind", m.kind).Str("id", m.id).Msg("limits shared by the cluster applied")
		}
	case *clusterAlerts:
		l.learnName(m.e.AgentID, m.e.AgentName)
		l.view = m.spends
		l.checkAlerts(c, l.now().UTC(), m.e.AgentID, m.e.AgentName, m.e.Provider, m.e.User)
		l.view = nil
	case *clusterRefused:
		l.metrics.refused.Inc()
		l.raise(c, "budget_exceeded", &m.v, l.now().UTC(), true, l.limits.AlertThreshold)
	case *clusterView:
		l.view = m.spends
		defer func() { l.view = nil }()
		switch q := m.q.(type) {
		case *BudgetQuery:
			c.Respond(l.budgetStatus())
		case *AgentBudgetQuery:
			l.learnName(q.AgentID, q.AgentName)
			c.Respond(l.agentBudget(q.AgentID, q.AgentName))
		case *ProviderBudgetQuery:
			row := l.providerRow(q.Provider, l.now().UTC())
			c.Respond(&row)
		case *UserBudgetQuery:
			c.Respond(l.userBudget(q.User))
		}
	default:
		return false
	}
	return true
}
