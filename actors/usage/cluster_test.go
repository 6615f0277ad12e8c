package usage

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// memCluster is Cluster in memory: the meter's side of cluster mode is
// tested here; the etcd store itself in actors/cluster.
type memCluster struct {
	mu        sync.Mutex
	spend     map[Scope]ScopeSpend
	holds     map[uint64]ClusterReserve
	next      uint64
	reserves  []ClusterReserve
	settleErr error
	// appliers are the meters that share limits through this store.
	appliers []func(kind, id string, raw []byte)
}

func (c *memCluster) PutLimits(_ context.Context, kind, id string, raw []byte) error {
	c.mu.Lock()
	appliers := c.appliers
	c.mu.Unlock()
	for _, a := range appliers {
		a(kind, id, raw)
	}
	return nil
}

func newMemCluster() *memCluster {
	return &memCluster{spend: map[Scope]ScopeSpend{}, holds: map[uint64]ClusterReserve{}}
}

func (c *memCluster) Reserve(_ context.Context, _ time.Time, r ClusterReserve) (uint64, *Refusal, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reserves = append(c.reserves, r)
	for i, s := range r.Scopes {
		if ref, ok := Admit(c.spend[s], r.Caps[i], r.CostNanos, r.Tokens); !ok {
			ref.Index = i
			return 0, &ref, nil
		}
	}
	c.next++
	c.holds[c.next] = r
	for _, s := range r.Scopes {
		sp := c.spend[s]
		sp.HeldCost += r.CostNanos
		sp.HeldTokens += r.Tokens
		sp.Holds++
		c.spend[s] = sp
	}
	return c.next, nil, nil
}

func (c *memCluster) Settle(_ context.Context, _ time.Time, hold uint64, scopes []Scope, cost, tokens int64) ([]ScopeSpend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settleErr != nil {
		return nil, c.settleErr
	}
	if r, ok := c.holds[hold]; ok {
		delete(c.holds, hold)
		for _, s := range r.Scopes {
			sp := c.spend[s]
			sp.HeldCost -= r.CostNanos
			sp.HeldTokens -= r.Tokens
			sp.Holds--
			c.spend[s] = sp
		}
	}
	for _, s := range scopes {
		sp := c.spend[s]
		sp.Hour += cost
		sp.Day += cost
		sp.Month += cost
		sp.Tokens += tokens
		c.spend[s] = sp
	}
	out := make([]ScopeSpend, len(scopes))
	for i, s := range scopes {
		out[i] = c.spend[s]
	}
	return out, nil
}

func (c *memCluster) Spend(_ context.Context, _ time.Time, scopes []Scope) ([]ScopeSpend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ScopeSpend, len(scopes))
	for i, s := range scopes {
		out[i] = c.spend[s]
	}
	return out, nil
}

// In cluster mode the meter asks the cluster store with this node's
// limits (the agent's scope by name), refuses as one node does (402
// budget_exceeded, the same message, an alert raised), warns from the
// cluster's spend, settles in both
// the cluster store and this node's ledger, and the budget views show
// the cluster's spend and holds, not this node's.
func TestClusterModeAdmitsInTheClusterStore(t *testing.T) {
	h := newHarness(t, time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	cl := newMemCluster()
	h.m.UseCluster(cl)
	ctx := context.Background()
	daily, agentDaily := 1.0, 0.5
	if _, err := h.m.SetBudget(ctx, SetBudget{DailyLimitUSD: &daily}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.SetAgentBudget(ctx, SetAgentBudget{AgentID: "a1", AgentName: "name-a1", DailyLimitUSD: &agentDaily}); err != nil {
		t.Fatal(err)
	}
	// Other nodes spent 0.7 globally.
	cl.spend[Scope{Kind: 'g'}] = ScopeSpend{Day: nanos(0.7), Month: nanos(0.7), Hour: nanos(0.7)}

	if err := h.call(0.2, 100, ev("a1", "m", 10, 20, 0.15)); err != nil {
		t.Fatal(err)
	}
	r := cl.reserves[0]
	want := []Scope{{'a', "name-a1"}, {'g', ""}, {'p', "fake"}}
	if len(r.Scopes) != 3 || r.Scopes[0] != want[0] || r.Scopes[1] != want[1] || r.Scopes[2] != want[2] ||
		r.Caps[0].Daily != nanos(agentDaily) || r.Caps[1].Daily != nanos(daily) || r.Caps[2] != (Caps{}) || r.CostNanos != nanos(0.2) {
		t.Fatalf("reserve asked %+v", r)
	}
	if g := cl.spend[Scope{Kind: 'g'}]; g.Day != nanos(0.85) || g.Tokens != 30 || g.Holds != 0 {
		t.Fatalf("cluster global spend %+v after the settle", g)
	}
	// The warning follows the cluster's spend (0.85 of 1), not this
	// node's (0.15).
	if warns, _ := h.alerts(); warns != 1 {
		t.Fatalf("%d budget warnings after the cluster's spend passed 80%%, want 1", warns)
	}
	// The event is in this node's reports too.
	if u, err := h.m.Usage(ctx, "day"); err != nil || u.RequestCount != 1 || !near(u.TotalCostUSD, 0.15) {
		t.Fatalf("local usage %+v %v", u, err)
	}

	// 0.85 spent cluster-wide + 0.2 > 1: refused as on one node.
	err := h.call(0.2, 100, ev("a2", "m", 1, 1, 0.01))
	de := kernel.AsError(err)
	if de == nil || de.Kind != kernel.KindPaymentRequired || de.Code != "budget_exceeded" ||
		!strings.Contains(de.Msg, "the global daily limit is 1.000000 USD; spent 0.850000 USD") {
		t.Fatalf("refusal %v", err)
	}
	if _, exceeded := h.alerts(); exceeded == 0 {
		t.Fatal("a refusal in the cluster store raised no budget_exceeded alert")
	}

	// The views show the cluster's spend and holds.
	hold, err := h.m.Reserve(ctx, Reserve{AgentID: "a1", AgentName: "name-a1", Provider: "fake", CostNanos: nanos(0.1), Tokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.m.Budget(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !near(b.TodaySpentUSD, 0.85) || !near(b.ReservedUSD, 0.1) || b.Reservations != 1 || !near(b.DailyPct, 0.85) || b.Status != StatusWarning {
		t.Fatalf("GET /api/budget in cluster mode %+v", b)
	}
	ab, err := h.m.AgentBudget(ctx, "a1", "name-a1")
	if err != nil {
		t.Fatal(err)
	}
	if !near(ab.TodaySpentUSD, 0.15) || !near(ab.ReservedUSD, 0.1) || ab.AgentID != "a1" {
		t.Fatalf("agent budget in cluster mode %+v", ab)
	}

	// A settle the cluster store does not confirm withholds the result.
	cl.mu.Lock()
	cl.settleErr = errors.New("etcd down")
	cl.mu.Unlock()
	_, err = h.m.Settle(ctx, hold.ID, ev("a1", "m", 1, 1, 0.05))
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindUnavailable || de.Code != "usage_unrecorded" {
		t.Fatalf("settle with the cluster store down: %v", err)
	}
}

// Global, provider and user limits set through one node's meter apply on
// every node sharing the cluster store, durably (they survive a restart);
// clearing a user's limits clears them everywhere; an agent's limits
// apply to the agent of the same name on every node.
func TestClusterModeSharesLimits(t *testing.T) {
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	h1, h2 := newHarness(t, start), newHarness(t, start)
	cl := newMemCluster()
	for _, h := range []*harness{h1, h2} {
		h.m.UseCluster(cl)
		cl.appliers = append(cl.appliers, h.m.ApplyClusterLimits)
	}
	ctx := context.Background()
	daily, provHourly := 2.5, 0.25
	if _, err := h1.m.SetBudget(ctx, SetBudget{DailyLimitUSD: &daily}); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.m.SetProviderBudget(ctx, SetProviderBudget{Provider: "fake", HourlyLimitUSD: &provHourly}); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.m.SetUserBudget(ctx, "alice", UserLimits{MaxDailyUSD: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h1.m.ClearUserBudget(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	h2.restart()
	h2.m.UseCluster(cl)
	cl.mu.Lock()
	cl.appliers[1] = h2.m.ApplyClusterLimits
	cl.mu.Unlock()
	// An agent's limits are shared by its name: the agent of that name
	// on the other node (another id) has them, others do not.
	agentDaily := 0.75
	if _, err := h1.m.SetAgentBudget(ctx, SetAgentBudget{AgentID: "id-on-1", AgentName: "coder", DailyLimitUSD: &agentDaily}); err != nil {
		t.Fatal(err)
	}
	for i, h := range []*harness{h1, h2} {
		b, err := h.m.Budget(ctx)
		if err != nil || b.DailyLimitUSD != daily {
			t.Fatalf("node %d: global %+v %v, want daily limit %v", i+1, b, err, daily)
		}
		p, err := h.m.ProviderBudget(ctx, "fake")
		if err != nil || p.CapHourlyUSD != provHourly {
			t.Fatalf("node %d: provider %+v %v", i+1, p, err)
		}
		u, err := h.m.UserBudget(ctx, "alice")
		if err != nil || u.Configured {
			t.Fatalf("node %d: user %+v %v, want cleared", i+1, u, err)
		}
	}
	a2, err := h2.m.AgentBudget(ctx, "id-on-2", "coder")
	if err != nil || a2.DailyLimitUSD != agentDaily {
		t.Fatalf("node 2's coder: %+v %v, want the daily limit set through node 1", a2, err)
	}
	if o, err := h2.m.AgentBudget(ctx, "id-other", "other"); err != nil || o.DailyLimitUSD != 0 {
		t.Fatalf("node 2's other agent: %+v %v", o, err)
	}
	// And admission on node 2 uses it.
	cl.mu.Lock()
	cl.spend[Scope{Kind: 'a', ID: "coder"}] = ScopeSpend{Day: nanos(0.7)}
	cl.mu.Unlock()
	_, err = h2.m.Reserve(ctx, Reserve{AgentID: "id-on-2", AgentName: "coder", Provider: "fake", CostNanos: nanos(0.1)})
	if de := kernel.AsError(err); de == nil || de.Code != "budget_exceeded" || !strings.Contains(de.Msg, "agent coder's daily limit") {
		t.Fatalf("node 2's coder past the shared limit: %v", err)
	}
}
