package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Why a queue in front of Badger: every Badger transaction, reads
// included, starts by waiting until every transaction committed before it
// is synced (its read timestamp must see them). An actor that opened a
// transaction in Receive therefore waited one fsync round whenever anything
// else was being written, which under load was most of the time. The
// queue lets a caller hand over writes without opening a transaction: its
// one goroutine commits everything handed over since its last commit as one
// synced transaction, so the writes of many actors share each fsync.

// errReadInAsync is what a read inside an UpdateAsync callback gets: the
// callback only records writes, to be applied later.
var errReadInAsync = errors.New("store: reads are not available inside UpdateAsync")

// writeOp is one recorded Set or Delete.
type writeOp struct {
	del        bool
	key, value []byte
	ttl        time.Duration
}

// size is what the op counts towards Badger's transaction limit.
func (o *writeOp) size() int { return len(o.key) + len(o.value) + 64 }

// asyncWrite is one UpdateAsync call: its writes, applied atomically.
type asyncWrite struct {
	ops  []writeOp
	size int
	done func(error)
}

// deletesOnly: a write that only deletes may use the free-space reserve
// down to its floor (freeing space must stay possible).
func (w *asyncWrite) deletesOnly() bool {
	for _, o := range w.ops {
		if !o.del {
			return false
		}
	}
	return len(w.ops) > 0
}

type writeQueue struct {
	db        *DB
	mu        sync.Mutex
	cond      *sync.Cond
	pending   []asyncWrite
	enqueued  uint64 // writes handed over so far
	committed uint64 // writes synced (or failed) so far
	// failed is the error of a commit that failed: every later write
	// fails with it, so that nothing is ever durable after a write that
	// was lost (a group committer may have chained later writes onto it).
	failed   error
	commitFn func([]asyncWrite) error // q.commit; tests replace it
	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
}

func startWriteQueue(db *DB) *writeQueue {
	q := &writeQueue{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	q.commitFn = q.commit
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func (q *writeQueue) add(w asyncWrite) {
	q.mu.Lock()
	q.pending = append(q.pending, w)
	q.enqueued++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// barrier waits until every write handed over before it was called is
// synced (or failed), so that a synchronous transaction after it is
// ordered after them. It returns the error of a failed commit, if any.
func (q *writeQueue) barrier() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	target := q.enqueued
	for q.committed < target {
		q.cond.Wait()
	}
	return q.failed
}

func (q *writeQueue) run() {
	defer close(q.stopped)
	for {
		select {
		case <-q.wake:
		case <-q.stop:
			return // Close waited for every write handed over
		}
		for q.commitNext() {
		}
	}
}

// commitNext commits the oldest pending writes that fit one transaction;
// false when there were none.
func (q *writeQueue) commitNext() bool {
	q.mu.Lock()
	n, size, limit := 0, 0, q.db.MaxBatchBytes()
	for n < len(q.pending) && (n == 0 || size+q.pending[n].size <= limit) {
		size += q.pending[n].size
		n++
	}
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	if len(q.pending) == 0 {
		q.pending = nil // do not keep the done callbacks of a big burst
	}
	q.mu.Unlock()
	if n == 0 {
		return false
	}
	q.mu.Lock()
	err := q.failed
	q.mu.Unlock()
	if err == nil {
		err = q.commitFn(batch)
	}
	q.mu.Lock()
	if errors.Is(err, errCommit) && q.failed == nil {
		q.failed = err
	}
	q.committed += uint64(n)
	q.cond.Broadcast()
	q.mu.Unlock()
	for _, w := range batch {
		w.done(err)
		q.db.leave()
	}
	return true
}

func (q *writeQueue) commit(batch []asyncWrite) error {
	txn := q.db.bdb.NewTransaction(true)
	defer txn.Discard()
	for _, w := range batch {
		for _, o := range w.ops {
			var err error
			switch {
			case o.del:
				err = txn.Delete(o.key)
			case o.ttl > 0:
				err = txn.SetEntry(badger.NewEntry(o.key, o.value).WithTTL(o.ttl))
			default:
				err = txn.Set(o.key, o.value)
			}
			if err != nil {
				return err
			}
		}
	}
	err := txn.Commit()
	// A commit may have started a new memtable log file: give it its
	// blocks before the next commit writes into it.
	q.db.wal.afterCommit()
	if err != nil {
		return fmt.Errorf("%w: %w", errCommit, err)
	}
	return nil
}

// errCommit marks a failed synced commit (as opposed to a write that could
// not be applied, which fails alone).
var errCommit = errors.New("store: commit failed; the store takes no more writes until fangd restarts")

// close stops the goroutine; the caller has waited for every write.
func (q *writeQueue) close() {
	close(q.stop)
	<-q.stopped
}
