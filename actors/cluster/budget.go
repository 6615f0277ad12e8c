package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/usage"
)

// Budget is the cluster-wide budget ledger (docs/cluster.md, "Budgets
// across the cluster"): usage.Cluster on etcd. What decides admission,
// each scope's settled spend per window and the open reservations, lives
// under /fangd/budget/<cluster>/s/<kind>/<id>/:
//
//	d/<YYYY-MM-DD>  the scope's settled cost (and tokens) that UTC day
//	m/<YYYY-MM>     that UTC month
//	n/<unix minute> that minute (the rolling hour is the last 60)
//	r/<hold>        an open reservation's worst case, bound to the
//	                reserving node's lease
//
// Every change is one Txn conditioned on no key under any scope it read
// having changed since the read (a compare-and-swap on the scopes' mod
// revisions), retried from a fresh read on conflict: two nodes can never
// both admit a call into the same last dollar. A node killed with -9
// stops keeping its lease alive and etcd deletes its reservations
// budgetTTL later; settled spend is in counters not bound to any lease.
//
// Each node has one writer: the calls that queue while a Txn is in
// flight go into the next one (up to budgetMaxItems, within etcd's 128
// operations per Txn), so contention is between nodes, not calls.
type Budget struct {
	cli *clientv3.Client
	pre string
	log zerolog.Logger

	q      chan *budgetOp
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	reserveSeconds prometheus.Histogram
	conflicts      prometheus.Counter
	commits        prometheus.Counter

	// lease is the reservation lease; calls in flight under a lost one
	// are no longer counted until they settle.
	lease *leaseKeeper

	mu    sync.Mutex
	seq   uint64
	holds map[uint64]heldKey // this node's open reservations
}

var _ usage.Cluster = (*Budget)(nil)

const (
	// budgetTTL is the reservation lease: a dead node's holds are
	// released this long after its last keep-alive.
	budgetTTL = 5
	// budgetStale: a lease without an acknowledged keep-alive for this
	// long takes no new reservations (it may expire on the server).
	budgetStale = 4 * time.Second
	// budgetMaxItems and budgetMaxOps bound one Txn (etcd's default
	// --max-txn-ops is 128).
	budgetMaxItems = 24
	budgetMaxOps   = 120
	// budgetRound bounds one read or commit.
	budgetRound = 2 * time.Second
	// hourMinutes is the rolling hour, as the single-node ledger keeps it.
	hourMinutes = 60
)

// ErrBudgetStopped is an operation on a stopped ledger.
var ErrBudgetStopped = errors.New("cluster: budget ledger stopped")

// heldKey is one of this node's reservations: its key name and scopes.
type heldKey struct {
	name   string
	scopes []usage.Scope
}

type budgetOp struct {
	settle  bool
	now     time.Time
	scopes  []usage.Scope
	caps    []usage.Caps
	cost    int64
	tokens  int64
	hold    uint64 // settle: the reservation it replaces
	ctx     context.Context
	reply   chan budgetReply
	replied bool
}

type budgetReply struct {
	hold    uint64
	refused *usage.Refusal
	spends  []usage.ScopeSpend // a settle's scopes right after it
	err     error
}

// StartBudget starts the cluster-wide budget ledger; hand it to the
// usage meter (Meter.UseCluster) before serving. reg gets its metrics.
func (n *Node) StartBudget(reg prometheus.Registerer) (*Budget, error) {
	b := newBudget(n.etcd, n.opts.Name, n.opts.Log)
	for _, c := range []prometheus.Collector{b.reserveSeconds, b.conflicts, b.commits} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	go b.loop()
	return b, nil
}

func newBudget(cli *clientv3.Client, cluster string, log zerolog.Logger) *Budget {
	b := &Budget{cli: cli, pre: "/fangd/budget/" + cluster + "/", log: log,
		q: make(chan *budgetOp, 1024), done: make(chan struct{}), holds: map[uint64]heldKey{},
		reserveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fangd_cluster_budget_reserve_seconds",
			Help:    "Cluster-wide budget reservations: time from the request to the committed (or refused) hold in etcd.",
			Buckets: []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1, 2}}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_cluster_budget_conflicts_total",
			Help: "Cluster budget Txns retried because another node changed a scope they read."}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_cluster_budget_commits_total",
			Help: "Cluster budget Txns etcd applied (each carries the reserves and settles queued on this node)."}),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.lease = &leaseKeeper{cli: cli, ctx: b.ctx, ttl: budgetTTL, grantWithin: budgetRound, log: log,
		notGranted: "cluster budget: reservation lease not granted",
		lost:       "cluster budget: reservation lease lost; a new one is granted for the next call"}
	return b
}

func (b *Budget) scopeKey(s usage.Scope) string {
	return b.pre + "s/" + string(s.Kind) + "/" + url.PathEscape(s.ID) + "/"
}

// Reserve implements usage.Cluster.
func (b *Budget) Reserve(ctx context.Context, now time.Time, r usage.ClusterReserve) (uint64, *usage.Refusal, error) {
	if len(r.Scopes) != len(r.Caps) {
		return 0, nil, errors.New("cluster: budget: scopes and caps differ in length")
	}
	start := time.Now()
	op := &budgetOp{now: now, scopes: r.Scopes, caps: r.Caps, cost: r.CostNanos, tokens: r.Tokens, ctx: ctx, reply: make(chan budgetReply, 1)}
	if err := b.enqueue(ctx, op); err != nil {
		return 0, nil, err
	}
	// Once queued the answer is always awaited (each round is bounded by
	// budgetRound, and a reserve whose ctx ended is dropped before the
	// next): a hold granted to a caller that gave up is released here.
	var rep budgetReply
	select {
	case rep = <-op.reply:
	case <-b.done:
		return 0, nil, ErrBudgetStopped
	}
	b.reserveSeconds.Observe(time.Since(start).Seconds())
	if rep.err == nil && rep.hold != 0 && ctx.Err() != nil {
		go b.release(rep.hold, now)
		return 0, nil, ctx.Err()
	}
	return rep.hold, rep.refused, rep.err
}

// release ends a hold nobody will settle (its caller gave up).
func (b *Budget) release(hold uint64, now time.Time) {
	ctx, cancel := context.WithTimeout(b.ctx, usage.SettleTimeout)
	defer cancel()
	_, _ = b.Settle(ctx, now, hold, nil, 0, 0)
}

// Settle implements usage.Cluster. The settle stays queued after ctx
// ends (the cost was incurred) until a Txn records it.
func (b *Budget) Settle(ctx context.Context, now time.Time, hold uint64, scopes []usage.Scope, cost, tokens int64) ([]usage.ScopeSpend, error) {
	op := &budgetOp{settle: true, now: now, scopes: scopes, cost: cost, tokens: tokens, hold: hold, ctx: ctx, reply: make(chan budgetReply, 1)}
	if err := b.enqueue(ctx, op); err != nil {
		return nil, err
	}
	select {
	case rep := <-op.reply:
		return rep.spends, rep.err
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: budget: settle not confirmed: %w", ctx.Err())
	case <-b.done:
		return nil, ErrBudgetStopped
	}
}

func (b *Budget) enqueue(ctx context.Context, op *budgetOp) error {
	select {
	case b.q <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return ErrBudgetStopped
	}
}

// Spend implements usage.Cluster: one consistent read of scopes.
func (b *Budget) Spend(ctx context.Context, now time.Time, scopes []usage.Scope) ([]usage.ScopeSpend, error) {
	states, _, err := b.read(ctx, scopes)
	if err != nil {
		return nil, err
	}
	out := make([]usage.ScopeSpend, len(scopes))
	for i, s := range scopes {
		out[i] = states[s].spend(now)
	}
	return out, nil
}

// cnt is a counter's or a hold's value: cost in nano-USD and tokens.
type cnt struct {
	C int64 `json:"c"`
	T int64 `json:"t,omitempty"`
}

// scopeState is what one read found under a scope, changed in memory as
// a batch is applied.
type scopeState struct {
	prefix   string
	counters map[string]cnt // "d/...", "m/...", "n/..."
	holds    map[string]cnt // "r/<hold>"
}

func (s *scopeState) spend(now time.Time) usage.ScopeSpend {
	var sp usage.ScopeSpend
	if s == nil {
		return sp
	}
	sp.Day = s.counters["d/"+now.Format("2006-01-02")].C
	sp.Month = s.counters["m/"+now.Format("2006-01")].C
	nm := now.Unix() / 60
	for k, v := range s.counters {
		if m, ok := minuteKey(k); ok && m > nm-hourMinutes && m <= nm {
			sp.Hour += v.C
			sp.Tokens += v.T
		}
	}
	for _, v := range s.holds {
		sp.HeldCost += v.C
		sp.HeldTokens += v.T
		sp.Holds++
	}
	return sp
}

func minuteKey(k string) (int64, bool) {
	if !strings.HasPrefix(k, "n/") {
		return 0, false
	}
	m, err := strconv.ParseInt(k[2:], 10, 64)
	return m, err == nil
}

// read gets every key under scopes in one Txn (one revision).
func (b *Budget) read(ctx context.Context, scopes []usage.Scope) (map[usage.Scope]*scopeState, int64, error) {
	var distinct []usage.Scope
	states := map[usage.Scope]*scopeState{}
	for _, s := range scopes {
		if _, ok := states[s]; !ok {
			states[s] = &scopeState{prefix: b.scopeKey(s), counters: map[string]cnt{}, holds: map[string]cnt{}}
			distinct = append(distinct, s)
		}
	}
	ops := make([]clientv3.Op, len(distinct))
	for i, s := range distinct {
		ops[i] = clientv3.OpGet(states[s].prefix, clientv3.WithPrefix())
	}
	rctx, cancel := context.WithTimeout(ctx, budgetRound)
	resp, err := b.cli.Txn(rctx).Then(ops...).Commit()
	cancel()
	if err != nil {
		return nil, 0, err
	}
	for i, s := range distinct {
		st := states[s]
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			k := strings.TrimPrefix(string(kv.Key), st.prefix)
			var v cnt
			if json.Unmarshal(kv.Value, &v) != nil {
				b.log.Warn().Str("key", string(kv.Key)).Msg("cluster budget: undecodable value ignored")
				continue
			}
			if strings.HasPrefix(k, "r/") {
				st.holds[k] = v
			} else {
				st.counters[k] = v
			}
		}
	}
	return states, resp.Header.Revision, nil
}

func (b *Budget) loop() {
	defer close(b.done)
	var pending []*budgetOp
	for {
		if len(pending) == 0 {
			select {
			case op := <-b.q:
				pending = append(pending, op)
			case <-b.ctx.Done():
				return
			}
		}
	drain:
		for len(pending) < 4*budgetMaxItems {
			select {
			case op := <-b.q:
				pending = append(pending, op)
			default:
				break drain
			}
		}
		pending = b.round(pending)
		if b.ctx.Err() != nil {
			for _, op := range pending {
				if op.settle {
					b.log.Error().Int64("cost_nanos", op.cost).Msg("cluster budget: a settle was not recorded before the stop")
				}
			}
			return
		}
	}
}

// fail answers op with err; a settle stays pending (its cost is real) and
// a reserve is done.
func fail(op *budgetOp, err error) (keep bool) {
	if !op.replied {
		op.reply <- budgetReply{err: err}
		op.replied = true
	}
	return op.settle
}

// round runs one read-decide-commit over the first ops of pending that
// fit in a Txn and returns what is left.
func (b *Budget) round(pending []*budgetOp) []*budgetOp {
	// Reserves whose caller has gone are dropped before they hold anything.
	live := pending[:0]
	for _, op := range pending {
		if !op.settle && op.ctx.Err() != nil {
			fail(op, op.ctx.Err())
			continue
		}
		live = append(live, op)
	}
	pending = live
	if len(pending) == 0 {
		return pending
	}
	lease := b.myLease()
	// The batch: as many ops as fit in one Txn.
	n, est := 0, 0
	for _, op := range pending {
		cost := len(op.scopes) // hold puts
		if op.settle {
			cost = 4 * len(op.scopes) // counter puts (shared) and hold deletes
		}
		if n > 0 && (n >= budgetMaxItems || est+cost > budgetMaxOps-8) {
			break
		}
		n, est = n+1, est+cost
	}
	batch, rest := pending[:n], pending[n:]

	b.mu.Lock()
	var scopes []usage.Scope
	for _, op := range batch {
		scopes = append(scopes, op.scopes...)
		if op.settle {
			scopes = append(scopes, b.holds[op.hold].scopes...)
		}
	}
	b.mu.Unlock()
	states, rev, err := b.read(b.ctx, scopes)
	if err != nil {
		return b.failed(batch, rest, err)
	}

	type write struct {
		val   string
		lease clientv3.LeaseID
		del   bool
	}
	writes := map[string]write{}
	var order []string
	set := func(k string, w write) {
		if _, ok := writes[k]; !ok {
			order = append(order, k)
		}
		writes[k] = w
	}
	dirty := map[*scopeState]map[string]bool{}
	granted := map[*budgetOp]uint64{}
	newHolds := map[uint64]heldKey{}
	released := map[uint64]bool{}
	replies := make([]budgetReply, len(batch))
	var settles []int
	b.mu.Lock()
	seq := b.seq
	for i, op := range batch {
		if op.settle {
			if h, ok := b.holds[op.hold]; ok {
				for _, s := range h.scopes {
					st := states[s]
					delete(st.holds, "r/"+h.name)
					set(st.prefix+"r/"+h.name, write{del: true})
				}
				released[op.hold] = true
			}
			for _, s := range op.scopes {
				st := states[s]
				if dirty[st] == nil {
					dirty[st] = map[string]bool{}
				}
				for _, k := range []string{"d/" + op.now.Format("2006-01-02"), "m/" + op.now.Format("2006-01"), "n/" + strconv.FormatInt(op.now.Unix()/60, 10)} {
					v := st.counters[k]
					v.C += op.cost
					v.T += op.tokens
					st.counters[k] = v
					dirty[st][k] = true
				}
			}
			settles = append(settles, i)
			continue
		}
		if lease == 0 {
			replies[i] = budgetReply{err: errors.New("cluster: budget: this node's etcd lease is not confirmed")}
			continue
		}
		refused := false
		for j, s := range op.scopes {
			if op.caps[j] == (usage.Caps{}) {
				continue
			}
			if ref, ok := usage.Admit(states[s].spend(op.now), op.caps[j], op.cost, op.tokens); !ok {
				ref.Index = j
				replies[i] = budgetReply{refused: &ref}
				refused = true
				break
			}
		}
		if refused {
			continue
		}
		seq++
		name := strconv.FormatInt(int64(lease), 16) + "-" + strconv.FormatUint(seq, 10)
		val, _ := json.Marshal(cnt{C: op.cost, T: op.tokens})
		for _, s := range op.scopes {
			st := states[s]
			st.holds["r/"+name] = cnt{C: op.cost, T: op.tokens}
			set(st.prefix+"r/"+name, write{val: string(val), lease: lease})
		}
		granted[op] = seq
		newHolds[seq] = heldKey{name: name, scopes: op.scopes}
		replies[i] = budgetReply{hold: seq}
	}
	b.mu.Unlock()
	// A settle's answer is its scopes' spend after the whole batch (what
	// etcd holds once it commits).
	for _, i := range settles {
		op := batch[i]
		replies[i].spends = make([]usage.ScopeSpend, len(op.scopes))
		for j, s := range op.scopes {
			replies[i].spends[j] = states[s].spend(op.now)
		}
	}
	for st, keys := range dirty {
		for k := range keys {
			val, _ := json.Marshal(st.counters[k])
			set(st.prefix+k, write{val: string(val)})
		}
	}
	// Old windows go as their scope is written again, within the Txn's
	// room (a scope nobody writes keeps its last keys: a few bytes).
	if len(dirty) > 0 {
		now := batch[0].now
		for _, op := range batch {
			if op.now.After(now) {
				now = op.now
			}
		}
		nm := now.Unix() / 60
		day, month := "d/"+now.Format("2006-01-02"), "m/"+now.Format("2006-01")
	gc:
		for st := range dirty {
			for k := range st.counters {
				if len(writes) >= budgetMaxOps {
					break gc
				}
				m, isMin := minuteKey(k)
				old := (isMin && m <= nm-hourMinutes) ||
					(strings.HasPrefix(k, "d/") && k < day) || (strings.HasPrefix(k, "m/") && k < month)
				if old {
					set(st.prefix+k, write{del: true})
				}
			}
		}
	}
	if len(writes) > 0 {
		cmps := make([]clientv3.Cmp, 0, len(states))
		for _, st := range states {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(st.prefix), "<", rev+1).WithPrefix())
		}
		ops := make([]clientv3.Op, 0, len(order))
		for _, k := range order {
			w := writes[k]
			switch {
			case w.del:
				ops = append(ops, clientv3.OpDelete(k))
			case w.lease != 0:
				ops = append(ops, clientv3.OpPut(k, w.val, clientv3.WithLease(w.lease)))
			default:
				ops = append(ops, clientv3.OpPut(k, w.val))
			}
		}
		cctx, cancel := context.WithTimeout(b.ctx, budgetRound)
		resp, err := b.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err != nil {
			// The outcome is unknown: a settle retried may count twice
			// (more spend, never less); a reserve is refused and its
			// hold, if it landed, is released with the lease.
			return b.failed(batch, rest, err)
		}
		if !resp.Succeeded {
			b.conflicts.Inc()
			return pending // another node wrote first: decide again
		}
		b.commits.Inc()
	}
	b.mu.Lock()
	for id := range released {
		delete(b.holds, id)
	}
	for id, h := range newHolds {
		b.holds[id] = h
	}
	if seq > b.seq {
		b.seq = seq
	}
	b.mu.Unlock()
	for i, op := range batch {
		if !op.replied {
			op.reply <- replies[i]
			op.replied = true
		}
	}
	return rest
}

// failed answers a batch that etcd did not take: reserves are refused
// with err, settles are told and stay queued, after a pause.
func (b *Budget) failed(batch, rest []*budgetOp, err error) []*budgetOp {
	if b.ctx.Err() == nil {
		b.log.Warn().Err(err).Msg("cluster budget: etcd did not take the batch")
	}
	var keep []*budgetOp
	for _, op := range batch {
		if fail(op, fmt.Errorf("cluster: budget: etcd: %w", err)) {
			keep = append(keep, op)
		}
	}
	if len(keep) > 0 {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-b.ctx.Done():
		}
	}
	return append(keep, rest...)
}

// myLease is the reservation lease if it is healthy (granting one if
// there is none), else 0.
func (b *Budget) myLease() clientv3.LeaseID {
	lease, ok := b.lease.state()
	switch {
	case lease == 0:
		return b.lease.ensure()
	case time.Since(ok) > budgetStale:
		return 0
	}
	return lease
}

func (b *Budget) limKey(kind, id string) string {
	return b.pre + "lim/" + kind + "/" + url.PathEscape(id)
}

// PutLimits implements usage.Cluster: lim/<kind>/<id> holds a limit set's
// JSON; the last one written wins on every node (WatchLimits).
func (b *Budget) PutLimits(ctx context.Context, kind, id string, raw []byte) error {
	var err error
	if raw == nil {
		_, err = b.cli.Delete(ctx, b.limKey(kind, id))
	} else {
		_, err = b.cli.Put(ctx, b.limKey(kind, id), string(raw))
	}
	return err
}

// WatchLimits applies the shared limits now (before the node serves) and
// every change after, in etcd's order, until Stop; a broken watch starts
// over from a fresh read.
func (b *Budget) WatchLimits(apply func(kind, id string, raw []byte)) error {
	rev, err := b.loadLimits(apply)
	if err != nil {
		return err
	}
	go func() {
		for b.ctx.Err() == nil {
			wch := b.cli.Watch(clientv3.WithRequireLeader(b.ctx), b.pre+"lim/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for resp := range wch {
				if resp.Err() != nil {
					break
				}
				for _, ev := range resp.Events {
					var raw []byte
					if ev.Type == clientv3.EventTypePut {
						raw = ev.Kv.Value
					}
					b.applyLimit(apply, string(ev.Kv.Key), raw)
					rev = ev.Kv.ModRevision
				}
			}
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			if r, err := b.loadLimits(apply); err == nil {
				rev = r
			}
		}
	}()
	return nil
}

func (b *Budget) loadLimits(apply func(kind, id string, raw []byte)) (int64, error) {
	ctx, cancel := context.WithTimeout(b.ctx, budgetRound)
	defer cancel()
	r, err := b.cli.Get(ctx, b.pre+"lim/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster: budget limits: %w", err)
	}
	for _, kv := range r.Kvs {
		b.applyLimit(apply, string(kv.Key), kv.Value)
	}
	return r.Header.Revision, nil
}

func (b *Budget) applyLimit(apply func(kind, id string, raw []byte), key string, raw []byte) {
	kind, esc, ok := strings.Cut(strings.TrimPrefix(key, b.pre+"lim/"), "/")
	id, err := url.PathUnescape(esc)
	if !ok || err != nil {
		return
	}
	apply(kind, id, raw)
}

// Stop ends the writer and revokes the lease (releasing this node's open
// reservations). Call it after the callers stopped.
func (b *Budget) Stop() {
	// Read before cancelling: the keep-alive forgets the lease as soon
	// as its context ends.
	lease, _ := b.lease.state()
	b.cancel()
	<-b.done
	revokeLease(b.cli, lease)
}
