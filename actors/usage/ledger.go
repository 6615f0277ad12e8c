package usage

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// maxBatch caps the events one synced transaction carries (Badger refuses
// transactions over ~15% of its memtable).
const maxBatch = 256

// One batch is on its way to disk at a time (store.GroupCommit). More
// would be possible (Badger's single writer syncs waiting transactions
// together and keeps them in the order they were handed over, so a later
// batch is never durable before an earlier one), but on the 2-core machine
// the ledger is measured on, CPU and not the sync is the limit: with 2 in
// flight, batches were a third smaller (21 events instead of 32 with 64
// callers), so more roll-up keys and syncs per event, and reserve+settle
// ran at 39-46k/s against 54-55k/s with one, back to back.

type reservation struct {
	agent    string
	provider string
	user     string
	cost     int64
	tokens   int64
	at       time.Time
}

type settleWaiter struct {
	event Event
	reply chan settleReply
}

// ledger is the metering actor. Its state is the roll-ups, the limits and
// the open reservations; its I/O (the synced batch write, compaction) runs
// in goroutines that report back to it, so the mailbox never waits on disk
// except for budget changes, which are rare and written through.
type ledger struct {
	db        *store.DB
	audit     *audit.Log
	log       zerolog.Logger
	now       func() time.Time
	retention time.Duration
	resTTL    time.Duration
	metrics   *ledgerMetrics

	r            *rollups
	limits       Limits
	agentLimits  map[string]AgentLimits
	provLimits   map[string]ProviderLimits
	userLimits   map[string]UserLimits
	alerts       map[string]bool
	reservations map[uint64]reservation
	nextRes      uint64
	reservedCost int64
	reservedTok  int64
	agentRes     map[string]int64
	agentResTok  map[string]int64
	provRes      map[string]held
	userRes      map[string]held
	lastSweep    time.Time
	// view is the cluster's spend of some scopes while a clusterView is
	// answered (cluster.go), nil otherwise.
	view map[scope]ScopeSpend
	// sharedAgent are per-agent limits shared in cluster mode, by agent
	// name (etcd is their store); agentNames the names of the agent ids
	// cluster-mode calls and queries named. Both nil on a single node.
	sharedAgent map[string]AgentLimits
	agentNames  map[string]string
	lastDay     int32

	pending  []settleWaiter // settled, applied in memory, not yet in a batch
	spare    []settleWaiter // a landed batch's waiter array, reused for pending
	dirty    dirtySet
	gc       *store.GroupCommit[*batch]
	send     func(any) // to the ledger itself: the commit's report
	stopping bool

	compacting bool
	ticker     *time.Ticker
	done       chan struct{}
}

type ledgerMetrics struct {
	reserved, refused, settled prometheus.Counter
	commits                    prometheus.Counter
}

func (l *ledger) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := l.load(); err != nil {
			panic(fmt.Errorf("usage ledger: load: %w", err))
		}
		self, root := c.Self(), c.ActorSystem().Root
		l.send = func(msg any) { root.Send(self, msg) }
		// Each batch is sealed by flush (it carries the roll-ups as they
		// are when it goes), so the group commit holds one at a time.
		l.gc = store.NewGroupCommit(store.GroupCommitOptions[*batch]{
			MaxCount: 1,
			Commit:   func(b []*batch) error { return l.db.Write(func(tx *store.Txn) error { return setKVs(tx, b[0].pairs) }) },
			// Answer from the commit goroutine: a stopping ledger still
			// lets the batch's callers through, and callers do not wait
			// for the report to pass the settles queued in the mailbox.
			Durable: func(b []*batch) {
				for _, w := range b[0].waiters {
					w.reply <- settleReply{event: w.event}
				}
			},
			Done: func(b *batch, _ error) {
				for _, w := range b.waiters {
					w.reply <- settleReply{err: errWithheld}
				}
			},
		})
		l.startCompaction(c)
	case *Reserve:
		res, err := l.reserve(c, m)
		m.reply <- reserveReply{res, err}
	case *Settle:
		l.settle(c, m)
	case *store.Committed[*batch]:
		l.committed(m)
	case *UsageQuery:
		c.Respond(l.usageReport(m))
	case *SummaryQuery:
		c.Respond(l.summary())
	case *ByModelQuery:
		c.Respond(l.byModel(m.Period))
	case *DailyQuery:
		c.Respond(l.daily(m.Days))
	case *AgentSpendQuery:
		c.Respond(l.agentSpend())
	case *BudgetQuery:
		c.Respond(l.budgetStatus())
	case *SetBudget:
		c.Respond(l.setBudget(c, m))
	case *AgentBudgetQuery:
		c.Respond(l.agentBudget(m.AgentID, m.AgentName))
	case *SetAgentBudget:
		c.Respond(l.setAgentBudget(c, m))
	case *ForgetAgent:
		c.Respond(l.forgetAgent(m.AgentID))
	case *ModelPerfQuery:
		c.Respond(l.modelPerf())
	case *ProviderBudgetsQuery:
		c.Respond(l.providerBudgets())
	case *ProviderBudgetQuery:
		if err := CheckScopeID("provider id", m.Provider); err != nil {
			c.Respond(err)
			break
		}
		row := l.providerRow(m.Provider, l.now().UTC())
		c.Respond(&row)
	case *SetProviderBudget:
		c.Respond(l.setProviderBudget(c, m))
	case *UserBudgetsQuery:
		c.Respond(l.userBudgets(m.Limit))
	case *UserBudgetQuery:
		c.Respond(l.userBudget(m.User))
	case *SetUserBudget:
		c.Respond(l.setUserBudget(c, m))
	case *compactTick:
		l.compact(c)
	case *compacted:
		l.compacting = false
		if m.err != nil {
			l.log.Error().Err(m.err).Msg("usage retention pass failed")
		} else if m.removed > 0 {
			l.log.Info().Int("events", m.removed).Msg("usage events past retention removed (roll-ups kept)")
		}
	case *actor.Stopping:
		l.stopping = true
		if l.ticker != nil {
			l.ticker.Stop()
			close(l.done)
		}
		// A batch in flight still answers its callers when it lands;
		// the ones not yet flushed cannot be written.
		l.gc.Stop(errWithheld)
		l.failPending(kernel.Unavailable("usage ledger is shutting down"))
	case *actor.Restarting:
		l.gc.Stop(errWithheld)
		l.failPending(kernel.Unavailable("usage ledger restarted"))
	default:
		l.receiveCluster(c, m)
	}
}

// load reads the limits, the roll-ups and the alerts already raised.
func (l *ledger) load() error {
	now := l.now().UTC()
	r, err := loadRollups(l.db, now, false)
	if err != nil {
		return err
	}
	l.r = r
	l.lastDay = dayOf(now)
	l.dirty = dirtySet{}
	l.limits = Limits{AlertThreshold: DefaultAlertThreshold}
	l.agentLimits = map[string]AgentLimits{}
	l.provLimits = map[string]ProviderLimits{}
	l.userLimits = map[string]UserLimits{}
	l.alerts = map[string]bool{}
	if l.reservations == nil {
		l.reservations = map[uint64]reservation{}
		l.agentRes, l.agentResTok = map[string]int64{}, map[string]int64{}
		l.provRes, l.userRes = map[string]held{}, map[string]held{}
	}
	var stale [][]byte
	if err := loadLimits(l.db, pAgentLimit, l.agentLimits); err != nil {
		return err
	}
	if err := loadLimits(l.db, pProvLimit, l.provLimits); err != nil {
		return err
	}
	if err := loadLimits(l.db, pUserLimit, l.userLimits); err != nil {
		return err
	}
	err = l.db.View(func(tx *store.Txn) error {
		if raw, err := tx.Get([]byte(kBudget)); err == nil {
			if err := json.Unmarshal(raw, &l.limits); err != nil {
				return fmt.Errorf("global budget: %w", err)
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.Iterate([]byte(pAlert), nil, false, func(k, _ []byte) (bool, error) {
			key := string(k[len(pAlert):])
			if l.alertCurrent(key, now) {
				l.alerts[key] = true
			} else {
				stale = append(stale, k)
			}
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		pairs := make([]kv, len(stale))
		for i, k := range stale {
			pairs[i] = kv{key: k, del: true}
		}
		if err := writeKVs(l.db, pairs); err != nil {
			l.log.Warn().Err(err).Msg("could not remove old budget alert marks")
		}
	}
	return nil
}

// loadLimits reads the per-agent, per-provider or per-user budgets stored
// under prefix into into. One that does not decode is moved aside, not
// fatal.
func loadLimits[T any](db *store.DB, prefix string, into map[string]T) error {
	c := store.NewCollection[T](db, strings.TrimSuffix(prefix, "/"))
	_, err := c.EachOrQuarantine(func(id string, v T) bool {
		into[id] = v
		return true
	})
	return err
}

// reserve admits a call if its worst case fits under every applicable
// limit, counting the calls already admitted and not yet settled.
func (l *ledger) reserve(c actor.Context, m *Reserve) (*Reservation, error) {
	now := l.now().UTC()
	l.sweepReservations(now)
	if m.CostNanos < 0 || m.Tokens < 0 {
		return nil, kernel.Invalid("reservation must not be negative")
	}
	if v, over := l.check(now, m); over {
		l.metrics.refused.Inc()
		l.raise(c, "budget_exceeded", &v, now, true, l.limits.AlertThreshold)
		return nil, kernel.Errorf(kernel.KindPaymentRequired, "budget_exceeded", "%s", v.message(m))
	}
	l.nextRes++
	id := l.nextRes
	l.reservations[id] = reservation{agent: m.AgentID, provider: m.Provider, user: m.User, cost: m.CostNanos, tokens: m.Tokens, at: now}
	l.reservedCost += m.CostNanos
	l.reservedTok += m.Tokens
	l.agentRes[m.AgentID] += m.CostNanos
	l.agentResTok[m.AgentID] += m.Tokens
	hold(l.provRes, m.Provider, m.CostNanos, m.Tokens)
	if m.User != "" {
		hold(l.userRes, m.User, m.CostNanos, m.Tokens)
	}
	l.metrics.reserved.Inc()
	return &Reservation{ID: id, CostNanos: m.CostNanos, Tokens: m.Tokens}, nil
}

func (l *ledger) release(id uint64) {
	res, ok := l.reservations[id]
	if !ok {
		return
	}
	delete(l.reservations, id)
	l.reservedCost -= res.cost
	l.reservedTok -= res.tokens
	if l.agentRes[res.agent] -= res.cost; l.agentRes[res.agent] == 0 {
		delete(l.agentRes, res.agent)
	}
	if l.agentResTok[res.agent] -= res.tokens; l.agentResTok[res.agent] == 0 {
		delete(l.agentResTok, res.agent)
	}
	hold(l.provRes, res.provider, -res.cost, -res.tokens)
	if res.user != "" {
		hold(l.userRes, res.user, -res.cost, -res.tokens)
	}
}

// hold adds to (or, negative, takes from) what calls in flight hold
// against id, forgetting it at zero.
func hold(m map[string]held, id string, cost, tokens int64) {
	h := m[id]
	h.cost += cost
	h.tokens += tokens
	if h == (held{}) {
		delete(m, id)
		return
	}
	m[id] = h
}

// sweepReservations releases holds whose caller never settled (it would
// have to be stuck far past any provider timeout), at most every 10 s.
func (l *ledger) sweepReservations(now time.Time) {
	if now.Sub(l.lastSweep) < 10*time.Second {
		return
	}
	l.lastSweep = now
	for id, r := range l.reservations {
		if now.Sub(r.at) > l.resTTL {
			l.log.Warn().Uint64("reservation", id).Str("agent_id", r.agent).Msg("budget reservation expired unsettled; released")
			l.release(id)
		}
	}
}

// settle releases the reservation, applies the event to every roll-up and
// queues it for the next synced batch; the caller is answered when that
// batch is on disk.
func (l *ledger) settle(c actor.Context, m *Settle) {
	if l.stopping {
		m.reply <- settleReply{err: kernel.Unavailable("usage ledger is shutting down")}
		return
	}
	l.release(m.ReservationID)
	e := m.Event
	now := l.now().UTC()
	// Event keys are time-ordered and unique: never reuse or go back.
	nanos := max(now.UnixNano(), l.r.lastNanos+1)
	l.r.lastNanos = nanos
	e.Time = time.Unix(0, nanos).UTC()
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	if d := dayOf(now); d != l.lastDay {
		// A new UTC day: drop in-memory detail older than any period.
		l.r.prune(now)
		l.lastDay = d
	}
	l.r.apply(&e, l.dirty)
	if l.pending == nil && l.spare != nil {
		l.pending, l.spare = l.spare, nil
	}
	l.pending = append(l.pending, settleWaiter{event: e, reply: m.reply})
	l.metrics.settled.Inc()
	if !m.clusterAlerts {
		l.checkAlerts(c, now, e.AgentID, e.AgentName, e.Provider, e.User)
	}
	l.flush()
}

// flush seals the next batch and starts its commit unless one is in
// flight: up to maxBatch queued events and every roll-up changed so far
// (its value now; a later batch carries later values and lands after it).
// Roll-ups are encoded here because the counters keep changing once the
// actor moves on.
func (l *ledger) flush() {
	if l.stopping || l.gc.InFlight() || (len(l.pending) == 0 && len(l.dirty) == 0) {
		return
	}
	n := min(len(l.pending), maxBatch)
	// Waiters are answered by the batch that carries their event; with
	// more than maxBatch queued, the rest ride the next batch.
	waiters := l.pending[:n:n]
	l.pending = l.pending[n:]
	if len(l.pending) == 0 {
		l.pending = nil // let the next settle start a fresh array
	}
	pairs := encodeBatch(l.dirty, waiters)
	clear(l.dirty)
	l.gc.Add(&batch{pairs: pairs, waiters: waiters})
	l.gc.Flush(l.send)
}

// errWithheld is what a settle whose event could not be written gets.
var errWithheld = kernel.Unavailable("usage could not be recorded; the call's result is withheld")

func (l *ledger) committed(m *store.Committed[*batch]) {
	landed, err, ok := l.gc.Committed(m)
	if !ok {
		return // of an earlier incarnation: Stop answered it
	}
	if err != nil {
		// Memory ran ahead of a write that failed: fail everyone whose
		// event is not on disk and reload the roll-ups from the store
		// (nothing else is in flight). Reservations are kept: they are
		// holds, not spend.
		l.log.Error().Err(err).Msg("usage batch write failed; reloading roll-ups from the store")
		l.failPending(errWithheld)
		if lerr := l.load(); lerr != nil {
			panic(fmt.Errorf("usage ledger: reload after failed write: %w", lerr))
		}
		l.gc.Reset()
		return
	}
	l.metrics.commits.Inc()
	if l.spare == nil {
		l.spare = landed[0].waiters[:0] // answered: reuse its array
	}
	l.flush()
}

func (l *ledger) failPending(err error) {
	for _, w := range l.pending {
		w.reply <- settleReply{err: err}
	}
	l.pending = nil
}

// batch is one synced write: the encoded pairs and the callers it answers.
type batch struct {
	pairs   []kv
	waiters []settleWaiter
}

// ---- retention ----

func (l *ledger) startCompaction(c actor.Context) {
	if l.retention <= 0 {
		return
	}
	l.ticker = time.NewTicker(time.Hour)
	l.done = make(chan struct{})
	self, system, ticker, done := c.Self(), c.ActorSystem(), l.ticker, l.done
	go func() {
		system.Root.Send(self, &compactTick{})
		for {
			select {
			case <-ticker.C:
				system.Root.Send(self, &compactTick{})
			case <-done:
				return
			}
		}
	}()
}

// compact deletes raw events older than the retention. Their roll-ups
// stay, so every report is unchanged; only the event detail goes.
func (l *ledger) compact(c actor.Context) {
	if l.compacting || l.retention <= 0 {
		return
	}
	l.compacting = true
	cutoff := eventKey(l.now().Add(-l.retention).UnixNano())
	self, system, db := c.Self(), c.ActorSystem(), l.db
	go func() {
		removed, err := deleteEventsBefore(db, cutoff)
		system.Root.Send(self, &compacted{removed: removed, err: err})
	}()
}

func deleteEventsBefore(db *store.DB, cutoff []byte) (int, error) {
	total := 0
	for {
		var keys [][]byte
		err := db.View(func(tx *store.Txn) error {
			return tx.Iterate([]byte(pEvent), nil, false, func(k, _ []byte) (bool, error) {
				if string(k) >= string(cutoff) {
					return false, nil
				}
				keys = append(keys, k)
				return len(keys) < 2000, nil
			})
		})
		if err != nil || len(keys) == 0 {
			return total, err
		}
		pairs := make([]kv, len(keys))
		for i, k := range keys {
			pairs[i] = kv{key: k, del: true}
		}
		if err := writeKVs(db, pairs); err != nil {
			return total, err
		}
		total += len(keys)
	}
}
