package cluster

// The cluster-wide budget ledger against a real embedded etcd, under
// -race: several Budgets, each with its own etcd client, stand for nodes.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/actors/usage"
)

func testBudget(t *testing.T, cli *clientv3.Client) *Budget {
	t.Helper()
	b := newBudget(cli, "t", zerolog.Nop())
	go b.loop()
	t.Cleanup(b.Stop)
	return b
}

var (
	globalScope = usage.Scope{Kind: 'g'}
	agentScope  = usage.Scope{Kind: 'a', ID: "helper"}
)

// Many calls at once through three nodes against one daily limit: every
// admission counts every node's spend and holds, so what is settled
// never passes the limit, the refusals name it, and the spend etcd holds
// afterwards is exactly what was settled, with no hold left.
func TestBudgetConcurrentReservesNeverOverspendAcrossNodes(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	nodes := []*Budget{testBudget(t, testClient(t, ep)), testBudget(t, testClient(t, ep)), testBudget(t, testClient(t, ep))}
	const limit, worst = 10_000, 700
	caps := []usage.Caps{{}, {Daily: limit}}
	scopes := []usage.Scope{agentScope, globalScope}
	var settled, admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 90 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := nodes[i%3]
			ctx := context.Background()
			now := time.Now().UTC()
			hold, ref, err := b.Reserve(ctx, now, usage.ClusterReserve{Scopes: scopes, Caps: caps, CostNanos: worst, Tokens: 10})
			if err != nil {
				t.Error(err)
				return
			}
			if ref != nil {
				if ref.Limit != "daily" || ref.Index != 1 || ref.Max != limit || ref.Spent+ref.Held+worst <= limit {
					t.Errorf("refusal %+v does not show the limit passed", ref)
				}
				refused.Add(1)
				return
			}
			admitted.Add(1)
			real := int64(400 + i%300) // at most the worst case
			if _, err := b.Settle(ctx, time.Now().UTC(), hold, scopes, real, 8); err != nil {
				t.Error(err)
				return
			}
			settled.Add(real)
		}()
	}
	wg.Wait()
	if settled.Load() > limit {
		t.Fatalf("settled %d nano-USD against a limit of %d: overspent", settled.Load(), limit)
	}
	if admitted.Load() < limit/worst || refused.Load() == 0 {
		t.Fatalf("admitted %d, refused %d: want at least %d admitted and some refused", admitted.Load(), refused.Load(), limit/worst)
	}
	sp, err := nodes[0].Spend(context.Background(), time.Now().UTC(), []usage.Scope{globalScope, agentScope})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sp {
		if s.Day != settled.Load() || s.Month != settled.Load() || s.Hour != settled.Load() || s.Tokens != 8*admitted.Load() || s.Holds != 0 || s.HeldCost != 0 {
			t.Fatalf("spend in etcd %+v, want day/month/hour %d, tokens %d, no holds", s, settled.Load(), 8*admitted.Load())
		}
	}
	t.Logf("admitted %d, refused %d, settled %d of %d", admitted.Load(), refused.Load(), settled.Load(), limit)
}

// A second node's reservation sees the first one's worst case until it
// settles; a node that dies with a reservation open (its etcd client gone,
// so its lease is not kept alive) holds the budget only until the lease
// expires, and the spend it settled before dying stays counted.
func TestBudgetDeadNodesHoldReleasedWithItsLease(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA := testClient(t, ep)
	a, b := newBudget(cliA, "t", zerolog.Nop()), testBudget(t, testClient(t, ep))
	go a.loop()
	ctx := context.Background()
	scopes, caps := []usage.Scope{globalScope}, []usage.Caps{{Daily: 1000}}
	res := func(n *Budget, cost int64) (uint64, *usage.Refusal) {
		t.Helper()
		h, ref, err := n.Reserve(ctx, time.Now().UTC(), usage.ClusterReserve{Scopes: scopes, Caps: caps, CostNanos: cost})
		if err != nil {
			t.Fatal(err)
		}
		return h, ref
	}
	h, ref := res(a, 300)
	if ref != nil {
		t.Fatal(ref)
	}
	if _, err := a.Settle(ctx, time.Now().UTC(), h, scopes, 200, 0); err != nil {
		t.Fatal(err)
	}
	if _, ref := res(a, 700); ref != nil {
		t.Fatal("the second reservation on a should fit:", ref)
	}
	// 200 settled + 700 held: b's 200 does not fit.
	if _, ref := res(b, 200); ref == nil || ref.Spent != 200 || ref.Held != 700 {
		t.Fatalf("b's reservation with a's open: refusal %+v, want spent 200 held 700", ref)
	}
	// a dies with its reservation open.
	a.cancel()
	<-a.done
	cliA.Close()
	died := time.Now()
	for {
		if _, ref := res(b, 700); ref == nil {
			break
		}
		if time.Since(died) > 3*budgetTTL*time.Second {
			t.Fatalf("a's hold still counted %v after it died", time.Since(died))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("a's hold released %v after it died (lease %d s)", time.Since(died).Round(100*time.Millisecond), budgetTTL)
	sp, err := b.Spend(ctx, time.Now().UTC(), scopes)
	if err != nil {
		t.Fatal(err)
	}
	if sp[0].Day != 200 || sp[0].HeldCost != 700 || sp[0].Holds != 1 {
		t.Fatalf("spend %+v: want a's settled 200 kept and b's 700 held", sp[0])
	}
}

// Windows follow the single-node ledger: UTC day and month, and a rolling
// hour of minutes; a settle without a hold only adds spend, and minutes
// that left the hour are dropped when the scope is written again.
func TestBudgetWindows(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cli := testClient(t, ep)
	b := testBudget(t, cli)
	ctx := context.Background()
	now := time.Date(2026, 12, 7, 12, 30, 0, 0, time.UTC)
	scopes := []usage.Scope{globalScope}
	for _, c := range []struct {
		at     time.Time
		cost   int64
		tokens int64
	}{
		{now.Add(-10 * 24 * time.Hour), 16, 160}, // last month
		{now.Add(-24 * time.Hour), 8, 80},        // yesterday, this month
		{now.Add(-90 * time.Minute), 1, 10},      // today, outside the hour
		{now.Add(-59 * time.Minute), 2, 20},
		{now, 4, 40},
	} {
		if _, err := b.Settle(ctx, c.at, 0, scopes, c.cost, c.tokens); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := b.Spend(ctx, now, scopes)
	if err != nil {
		t.Fatal(err)
	}
	if want := (usage.ScopeSpend{Hour: 6, Day: 7, Month: 15, Tokens: 60}); sp[0] != want {
		t.Fatalf("spend %+v, want %+v", sp[0], want)
	}
	// The last settle (now) dropped the minutes older than its hour, and
	// yesterday's and last month's counters.
	r, err := cli.Get(ctx, b.scopeKey(globalScope)+"n/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 2 {
		t.Fatalf("%d minute keys left, want 2 (the ones older than the hour removed on the last write)", r.Count)
	}
	if r, err := cli.Get(ctx, b.scopeKey(globalScope), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 4 {
		t.Fatalf("%v keys under the scope (%v), want 4: two minutes, today, this month", r, err)
	}
	if _, ref, _ := b.Reserve(ctx, now, usage.ClusterReserve{Scopes: scopes, Caps: []usage.Caps{{Hourly: 10}}, CostNanos: 5}); ref == nil || ref.Limit != "hourly" {
		t.Fatalf("6 spent in the hour + 5 against 10: refusal %+v, want hourly", ref)
	}
	if _, ref, _ := b.Reserve(ctx, now, usage.ClusterReserve{Scopes: scopes, Caps: []usage.Caps{{Tokens: 100}}, Tokens: 41}); ref == nil || ref.Limit != "hourly_tokens" {
		t.Fatalf("60 tokens in the hour + 41 against 100: refusal %+v, want hourly_tokens", ref)
	}
}

// Limits put through one node reach every node's watcher in etcd's order,
// including a node that starts after them (applied before it serves) and
// a clear (nil).
func TestBudgetLimitsSharedThroughEtcd(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a, b := testBudget(t, testClient(t, ep)), testBudget(t, testClient(t, ep))
	ctx := context.Background()
	if err := a.PutLimits(ctx, usage.LimitsGlobal, "", []byte(`{"daily_limit_usd":1}`)); err != nil {
		t.Fatal(err)
	}
	type lim struct {
		kind, id, raw string
		cleared       bool
	}
	got := make(chan lim, 16)
	apply := func(kind, id string, raw []byte) { got <- lim{kind, id, string(raw), raw == nil} }
	if err := b.WatchLimits(apply); err != nil {
		t.Fatal(err)
	}
	// Applied before WatchLimits returned.
	if l := <-got; l != (lim{kind: "global", raw: `{"daily_limit_usd":1}`}) {
		t.Fatalf("first: %+v", l)
	}
	if err := a.PutLimits(ctx, usage.LimitsUser, "al/ice", []byte(`{"max_daily_usd":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := a.PutLimits(ctx, usage.LimitsUser, "al/ice", nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []lim{{kind: "user", id: "al/ice", raw: `{"max_daily_usd":2}`}, {kind: "user", id: "al/ice", cleared: true}} {
		select {
		case l := <-got:
			if l != want {
				t.Fatalf("got %+v, want %+v", l, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %+v within 5 s", want)
		}
	}
}

// etcd down: a reservation is refused with an error (not admitted blind);
// a settle is not confirmed (its caller withholds the result) but stays
// queued, and once etcd is back (same data) the spend is counted, once.
func TestBudgetSettleOutlastsAnEtcdOutage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := devetcd.Start(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := srv.Endpoint
	// The etcd that comes back stops after the ledger and its client
	// (this cleanup runs last): stopped under their open streams, etcd
	// would wait its request timeout (7 s) for them to end.
	var back *devetcd.Server
	t.Cleanup(func() {
		if back != nil {
			back.Close()
		}
	})
	// The client redials soon after etcd is back: with gRPC's default
	// backoff its next try comes several seconds after.
	cli := testClient(t, ep, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 300 * time.Millisecond},
		MinConnectTimeout: time.Second,
	}))
	b := testBudget(t, cli)
	ctx := context.Background()
	scopes, caps := []usage.Scope{globalScope}, []usage.Caps{{Daily: 1000}}
	hold, ref, err := b.Reserve(ctx, time.Now().UTC(), usage.ClusterReserve{Scopes: scopes, Caps: caps, CostNanos: 300})
	if err != nil || ref != nil {
		t.Fatal(ref, err)
	}
	srv.Close()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, _, err = b.Reserve(short, time.Now().UTC(), usage.ClusterReserve{Scopes: scopes, Caps: caps, CostNanos: 1})
	cancel()
	if err == nil {
		t.Fatal("a reservation with etcd down was admitted")
	}
	short, cancel = context.WithTimeout(ctx, time.Second)
	_, err = b.Settle(short, time.Now().UTC(), hold, scopes, 250, 0)
	cancel()
	if err == nil {
		t.Fatal("a settle with etcd down was confirmed")
	}
	back, err = devetcd.Start(dir, ep)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	deadline := up.Add(30 * time.Second)
	for {
		sp, err := b.Spend(ctx, time.Now().UTC(), scopes)
		if err == nil && sp[0].Day == 250 {
			if sp[0].Holds != 0 {
				t.Fatalf("spend %+v: the hold should be gone with its settle", sp[0])
			}
			t.Logf("recorded %v after etcd came back", time.Since(up).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queued settle was not recorded after etcd came back: %+v %v", sp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
