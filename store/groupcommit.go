package store

import (
	"errors"
	"sync"
)

// GroupCommit is the group-commit state machine that every single-writer
// owner of durable state runs (the audit writer, the event bus, the A2A
// journal, the webhook outboxes, the usage ledger): items arriving while a
// commit is in flight wait, and go together in the next commit, so that
// one synced transaction carries many callers' writes; each caller is
// answered only when its item is durable. It is written once here, so
// that a crash edge is fixed once (model: nats-server's one generic
// ipQueue).
//
// One owner drives it, from one goroutine at a time: an actor's Receive
// (the usual case) or a plain goroutine. The commit itself runs in a
// goroutine of its own that touches no owner state, and reports back by
// the message it hands to send; the owner passes that message to
// Committed. So the owner never waits on the disk, and at most one commit
// is in flight.
//
// With Chain set, the writer's done starts the next commit itself, from
// the items pending at that moment, instead of waiting for the owner to
// hear the report and call Flush: still one commit at a time, each batch
// formed only once the one before it is durable, but without the hop
// through the owner's mailbox while the disk idles (see Chain).
//
// The rule on failure is the write queue's (writequeue.go): a failed
// commit fails every waiter of its batch and every item queued behind it
// (an owner may have chained them onto the lost batch: audit hashes, bus
// ids), and every later Add fails too until the owner has reloaded its
// state from the store and called Reset. Nothing is ever durable after a
// write that was lost.
type GroupCommit[T any] struct {
	opts GroupCommitOptions[T]
	// mu guards pending, flight, failed, stopping and epoch: with Chain,
	// the writer's done takes the next batch from another goroutine.
	mu       sync.Mutex
	pending  []T
	flight   *Committed[T] // the commit in flight, nil when none
	failed   error         // set by a failed commit or Stop, cleared by Reset
	stopping bool          // Stop or Drain: done starts no more commits
	epoch    uint64        // Reset's count: older reports are stale
	writer   sync.WaitGroup
}

// GroupCommitOptions configure a GroupCommit. Commit or CommitAsync is
// required.
type GroupCommitOptions[T any] struct {
	// MaxCount bounds the items in one batch (0: no bound).
	MaxCount int
	// MaxBytes bounds the bytes of one batch as Size counts them (0 or a
	// nil Size: no bound); Badger refuses transactions over a fraction of
	// its memtable (DB.MaxBatchBytes). A batch always takes at least one
	// item, so an item over the limit goes alone.
	MaxBytes int
	Size     func(item T) int
	// Commit writes a batch durably. It runs in the commit goroutine and
	// must not touch the owner's state.
	Commit func(batch []T) error
	// CommitAsync, set instead of Commit, hands a batch to a writer that
	// calls done once it is durable (nil) or failed, from any goroutine
	// and possibly before CommitAsync returns: the store's write queue
	// (DB.UpdateAsync, AuditLog.AppendAsync). No commit goroutine is
	// started then, and the owner's report is sent before Durable
	// answers, so that a caller that hears its item is durable and asks
	// the owner something next finds the report handled first. It is
	// called from the owner and must not touch the owner's state after
	// returning; neither may done.
	CommitAsync func(batch []T, done func(error))
	// Done answers one item's waiter with the outcome of its commit (nil:
	// durable). It runs in the owner (inside Add, Committed, Fail, Stop
	// and Drain), so it may touch the owner's state. Nil: nobody waits.
	Done func(item T, err error)
	// Durable, if set, answers a committed batch's waiters instead of
	// Done(item, nil), from the commit goroutine before it reports: a
	// caller whose answer needs no owner state (a reply channel) then
	// does not wait for the report to reach the front of a busy mailbox.
	// The usage ledger, answering settles at 50k/s, runs at less than
	// half that speed without it. It must touch no owner state; Done
	// still answers failures.
	Durable func(batch []T)
	// Chain (with CommitAsync and Durable) lets done, once a batch is
	// durable, take the items pending then and hand them to CommitAsync
	// at once, from the writer's goroutine; the owner still gets every
	// batch's report, in order, and Flush starts a commit only when none
	// runs. It is as durable as the owner's Flush: the next batch is
	// formed after the one before it is synced and never after a failure
	// (done stops chaining at a failed commit, and the owner's Committed
	// fails everything pending). The audit writer, whose batch report
	// otherwise waits its turn behind the appends in its mailbox before
	// the next commit can start, uses it; CommitAsync must then touch no
	// owner state at all (it runs in the writer's goroutine too).
	Chain bool
}

// Committed is the message the commit goroutine sends when a batch is
// written (or failed). The owner hands it to GroupCommit.Committed.
type Committed[T any] struct {
	Batch []T
	Err   error
	g     *GroupCommit[T] // whose: an owner restarted with a new one ignores the old one's
	epoch uint64
}

// errStopped is what an Add after Stop gets when Stop was given no error.
var errStopped = errors.New("store: group commit stopped")

// NewGroupCommit returns a GroupCommit with opts.
func NewGroupCommit[T any](opts GroupCommitOptions[T]) *GroupCommit[T] {
	return &GroupCommit[T]{opts: opts}
}

// Add queues item for the next commit; the owner then calls Flush (once
// for many Adds, if it likes). After a failed commit or Stop, and until
// Reset, the item is refused at once with that error.
func (g *GroupCommit[T]) Add(item T) {
	g.mu.Lock()
	if err := g.failed; err != nil {
		g.mu.Unlock()
		g.done(item, err)
		return
	}
	g.pending = append(g.pending, item)
	g.mu.Unlock()
}

// Pending is how many items wait for a commit (the one in flight excluded).
func (g *GroupCommit[T]) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// InFlight reports whether a commit is running.
func (g *GroupCommit[T]) InFlight() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.flight != nil
}

// Flush starts a commit of the next batch unless one is in flight or
// nothing waits. The commit goroutine reports with send(*Committed[T]);
// an actor passes a function that sends to its own PID.
func (g *GroupCommit[T]) Flush(send func(msg any)) {
	g.mu.Lock()
	m := g.next()
	g.mu.Unlock()
	if m != nil {
		g.start(m, send)
	}
}

// next takes the next batch into flight (g.mu held); nil when one is in
// flight already, nothing waits, or the group commit failed or stops.
func (g *GroupCommit[T]) next() *Committed[T] {
	if g.flight != nil || len(g.pending) == 0 || g.failed != nil || g.stopping {
		return nil
	}
	m := &Committed[T]{Batch: g.take(), g: g, epoch: g.epoch}
	g.flight = m
	g.writer.Add(1)
	return m
}

// start commits m, taken by next.
func (g *GroupCommit[T]) start(m *Committed[T], send func(msg any)) {
	commit, durable := g.opts.Commit, g.opts.Durable
	if async := g.opts.CommitAsync; async != nil {
		async(m.Batch, func(err error) {
			m.Err = err
			send(m)
			if err == nil && durable != nil {
				durable(m.Batch)
			}
			var chained *Committed[T]
			if g.opts.Chain && err == nil {
				g.mu.Lock()
				if g.flight == m {
					g.flight = nil
					chained = g.next()
				}
				g.mu.Unlock()
			}
			if chained != nil {
				g.start(chained, send)
			}
			g.writer.Done()
		})
		return
	}
	go func() {
		m.Err = commit(m.Batch)
		if m.Err == nil && durable != nil {
			durable(m.Batch)
		}
		// Done before send: Stop, once it has waited, answers this batch
		// itself, and the message then arrives stale (or never).
		g.writer.Done()
		send(m)
	}()
}

// take removes the next batch from pending: as many items as the limits
// allow, and at least one.
func (g *GroupCommit[T]) take() []T {
	n, size := 0, 0
	for n < len(g.pending) && (g.opts.MaxCount <= 0 || n < g.opts.MaxCount) {
		if g.opts.MaxBytes > 0 && g.opts.Size != nil {
			size += g.opts.Size(g.pending[n])
			if n > 0 && size > g.opts.MaxBytes {
				break
			}
		}
		n++
	}
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	if len(g.pending) == 0 {
		g.pending = nil // do not keep a big burst's array (and its waiters) alive
	}
	return batch
}

// Committed takes the report of the commit in flight: it answers the
// batch's waiters and returns the batch and its error, so that the owner
// can do its own bookkeeping (publish what is now durable, restart after
// a failure). On error every pending item fails as well and later Adds are
// refused until Reset. ok is false for a report from before a Reset or
// Stop: it has been dealt with (or belongs to a state the owner reloaded)
// and is to be ignored. The owner calls Flush afterwards to go on.
func (g *GroupCommit[T]) Committed(m *Committed[T]) (batch []T, err error, ok bool) {
	g.mu.Lock()
	switch {
	case m.g != g || m.epoch != g.epoch:
		g.mu.Unlock()
		return nil, nil, false
	case g.flight == m:
		g.flight = nil
	case !g.opts.Chain:
		// Answered by Stop or Drain already.
		g.mu.Unlock()
		return nil, nil, false
	}
	g.mu.Unlock()
	g.answer(m.Batch, m.Err)
	if m.Err != nil {
		g.Fail(m.Err)
	}
	return m.Batch, m.Err, true
}

// Fail fails every pending item with err and refuses later Adds until
// Reset. The commit in flight, if any, is not affected.
func (g *GroupCommit[T]) Fail(err error) {
	g.mu.Lock()
	if g.failed == nil {
		g.failed = err
	}
	pending := g.pending
	g.pending = nil
	g.mu.Unlock()
	g.answer(pending, err)
}

// Reset forgets a failure, pending items (unanswered: call Fail or Stop
// first to answer them) and the commit in flight, whose report will then
// be ignored (as will those of batches Chain started before it); the owner calls it once its state is reloaded from the store.
func (g *GroupCommit[T]) Reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending, g.flight, g.failed, g.stopping = nil, nil, nil, false
	g.epoch++
}

// Wait waits until no commit goroutine runs: the store may then be
// closed, or the owner's data deleted, without a write landing after it.
// It does not answer anyone; Stop and Drain do.
func (g *GroupCommit[T]) Wait() { g.writer.Wait() }

// Stop waits for the commit in flight and answers its waiters, fails every
// pending item with err and refuses later Adds. An owner that is stopping
// calls it (or Drain), so that no commit outlives it and no waiter is left
// without an answer.
func (g *GroupCommit[T]) Stop(err error) {
	if err == nil {
		err = errStopped
	}
	g.settle()
	g.Fail(err)
	g.mu.Lock()
	g.failed = err
	g.mu.Unlock()
}

// Drain waits for the commit in flight and answers its waiters, then
// commits everything pending in the calling goroutine, batch by batch,
// answering each; later Adds are refused. It returns the first commit
// error; the items from that batch on fail with it.
func (g *GroupCommit[T]) Drain() error {
	g.settle()
	g.mu.Lock()
	err := g.failed
	g.mu.Unlock()
	if err != nil {
		g.Fail(err)
		return err
	}
	for {
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.mu.Unlock()
			break
		}
		batch := g.take()
		g.mu.Unlock()
		err := g.commitNow(batch)
		if err == nil && g.opts.Durable != nil {
			g.opts.Durable(batch)
		}
		g.answer(batch, err)
		if err != nil {
			g.Fail(err)
			return err
		}
	}
	g.mu.Lock()
	g.failed = errStopped
	g.mu.Unlock()
	return nil
}

// commitNow commits batch in the calling goroutine.
func (g *GroupCommit[T]) commitNow(batch []T) error {
	if g.opts.CommitAsync == nil {
		return g.opts.Commit(batch)
	}
	done := make(chan error, 1)
	g.opts.CommitAsync(batch, func(err error) { done <- err })
	return <-done
}

// settle waits for the commit in flight (and, with Chain, any it starts)
// and answers its batch. A chained batch that was durable was answered by
// Durable; one that failed is the last of its chain and still in flight.
func (g *GroupCommit[T]) settle() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.writer.Wait()
	g.mu.Lock()
	m := g.flight
	g.flight = nil
	g.epoch++ // the reports still on their way have been dealt with
	g.mu.Unlock()
	if m != nil {
		g.answer(m.Batch, m.Err)
		if m.Err != nil {
			g.Fail(m.Err)
		}
	}
}

// answer tells batch's waiters the outcome of its commit, unless Durable
// already did.
func (g *GroupCommit[T]) answer(batch []T, err error) {
	if err == nil && g.opts.Durable != nil {
		return
	}
	for _, it := range batch {
		g.done(it, err)
	}
}

func (g *GroupCommit[T]) done(item T, err error) {
	if g.opts.Done != nil {
		g.opts.Done(item, err)
	}
}
