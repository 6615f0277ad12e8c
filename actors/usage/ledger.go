package usage

import (
	"encoding/json"
	"errors"
	"fmt"
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

type reservation struct {
	agent  string
	cost   int64
	tokens int64
	at     time.Time
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
	alerts       map[string]bool
	reservations map[uint64]*reservation
	nextRes      uint64
	reservedCost int64
	reservedTok  int64
	agentRes     map[string]int64
	lastSweep    time.Time
	lastDay      int32

	pending  []settleWaiter
	events   []kv
	dirty    dirtySet
	inFlight bool
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
		l.startCompaction(c)
	case *Reserve:
		res, err := l.reserve(c, m)
		m.reply <- reserveReply{res, err}
	case *Settle:
		l.settle(c, m)
	case *batchCommitted:
		l.committed(c, m)
	case *UsageQuery:
		c.Respond(l.usageReport(m.Period))
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
		// A batch in flight still answers its callers when it lands (its
		// goroutine does); the ones not yet flushed cannot be written.
		l.failPending(kernel.Unavailable("usage ledger is shutting down"))
	case *actor.Restarting:
		l.failPending(kernel.Unavailable("usage ledger restarted"))
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
	l.alerts = map[string]bool{}
	if l.reservations == nil {
		l.reservations = map[uint64]*reservation{}
		l.agentRes = map[string]int64{}
	}
	var stale [][]byte
	err = l.db.View(func(tx *store.Txn) error {
		if raw, err := tx.Get([]byte(kBudget)); err == nil {
			if err := json.Unmarshal(raw, &l.limits); err != nil {
				return fmt.Errorf("global budget: %w", err)
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Iterate([]byte(pAgentLimit), nil, false, func(k, v []byte) (bool, error) {
			var al AgentLimits
			if err := json.Unmarshal(v, &al); err != nil {
				return false, fmt.Errorf("agent budget %s: %w", k, err)
			}
			l.agentLimits[string(k[len(pAgentLimit):])] = al
			return true, nil
		}); err != nil {
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

// reserve admits a call if its worst case fits under every applicable
// limit, counting the calls already admitted and not yet settled.
func (l *ledger) reserve(c actor.Context, m *Reserve) (*Reservation, error) {
	now := l.now().UTC()
	l.sweepReservations(now)
	if m.CostNanos < 0 || m.Tokens < 0 {
		return nil, kernel.Invalid("reservation must not be negative")
	}
	if v := l.check(now, m); v != nil {
		l.metrics.refused.Inc()
		l.raise(c, "budget_exceeded", v, now, true)
		return nil, kernel.Errorf(kernel.KindPaymentRequired, "budget_exceeded", "%s", v.message(m))
	}
	l.nextRes++
	id := l.nextRes
	l.reservations[id] = &reservation{agent: m.AgentID, cost: m.CostNanos, tokens: m.Tokens, at: now}
	l.reservedCost += m.CostNanos
	l.reservedTok += m.Tokens
	l.agentRes[m.AgentID] += m.CostNanos
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
	raw := encodeEvent(&e)
	if d := dayOf(now); d != l.lastDay {
		// A new UTC day: drop in-memory detail older than any period.
		l.r.prune(now)
		l.lastDay = d
	}
	l.r.apply(&e, l.dirty)
	l.events = append(l.events, kv{key: eventKey(nanos), val: raw})
	l.pending = append(l.pending, settleWaiter{event: e, reply: m.reply})
	l.metrics.settled.Inc()
	l.checkAlerts(c, now, e.AgentID, e.AgentName)
	if !l.inFlight {
		l.flush(c)
	}
}

// flush writes up to maxBatch queued events and every roll-up changed so
// far in one synced transaction, in a goroutine.
func (l *ledger) flush(c actor.Context) {
	if len(l.events) == 0 && len(l.dirty) == 0 {
		return
	}
	n := min(len(l.events), maxBatch)
	pairs, err := encodeDirty(l.dirty)
	if err != nil {
		l.failPending(err)
		return
	}
	pairs = append(pairs, l.events[:n]...)
	// Waiters are answered by the batch that carries their event; with
	// more than maxBatch queued, the rest ride the next batch.
	waiters := l.pending[:n:n]
	l.pending = l.pending[n:]
	l.events = l.events[n:]
	l.dirty = dirtySet{}
	l.inFlight = true
	self, system, db := c.Self(), c.ActorSystem(), l.db
	go func() {
		err := writeKVs(db, pairs)
		if err == nil {
			// Answer here rather than from the actor: a ledger stopping
			// for shutdown still lets this batch's callers through.
			for _, w := range waiters {
				w.reply <- settleReply{event: w.event}
			}
			waiters = nil
		}
		system.Root.Send(self, &batchCommitted{waiters: waiters, err: err})
	}()
}

func (l *ledger) committed(c actor.Context, m *batchCommitted) {
	l.inFlight = false
	if m.err != nil {
		// Memory ran ahead of a write that failed: fail everyone whose
		// event is not on disk and reload the roll-ups from the store.
		// Reservations are kept: they are holds, not spend.
		l.log.Error().Err(m.err).Msg("usage batch write failed; reloading roll-ups from the store")
		err := kernel.Unavailable("usage could not be recorded; the call's result is withheld")
		for _, w := range m.waiters {
			w.reply <- settleReply{err: err}
		}
		l.failPending(err)
		if lerr := l.load(); lerr != nil {
			panic(fmt.Errorf("usage ledger: reload after failed write: %w", lerr))
		}
		return
	}
	l.metrics.commits.Inc()
	if !l.stopping {
		l.flush(c)
	}
}

func (l *ledger) failPending(err error) {
	for _, w := range l.pending {
		w.reply <- settleReply{err: err}
	}
	l.pending, l.events = nil, nil
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
