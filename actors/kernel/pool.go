package kernel

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// poolIdle is how long a pool worker waits for work before it exits.
const poolIdle = time.Second

// PoolDispatcher runs the mailboxes of many short-lived actors (A2A tasks)
// on a shared set of reused goroutines instead of Proto.Actor's default, a
// new goroutine for every burst of messages. A task's actor gets a handful
// of bursts in its life (started, first write stored, turn done, final
// write stored), and each new goroutine grew its stack again from the
// start: 11-13% of the CPU of an A2A SendMessage (BenchmarkSendMessage's
// profile, runtime.newstack/copystack under the task's Receive). A worker
// keeps its grown stack between mailboxes. Workers are taken most recently
// used first, so the set shrinks to what the load needs; one idle for
// poolIdle exits, so an idle daemon holds none. The mailbox guarantees are
// unchanged: a mailbox is scheduled again only after its run returned, so
// one mailbox never runs on two workers at once. Share one PoolDispatcher
// among the actors of one kind; it is safe for concurrent use.
func PoolDispatcher(throughput int) actor.Dispatcher {
	return &poolDispatcher{throughput: throughput}
}

type poolDispatcher struct {
	throughput int
	mu         sync.Mutex
	idle       []*poolWorker // most recently used last
	workers    int           // running, idle or not
	janitor    bool          // the idle sweeper is running
}

type poolWorker struct {
	work     chan func() // one slot: Schedule never blocks
	lastUsed time.Time
}

// Schedule never blocks: the mailbox calls it from the sender's goroutine.
func (d *poolDispatcher) Schedule(fn func()) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		w := d.idle[n-1]
		d.idle[n-1] = nil
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		w.work <- fn
		return
	}
	d.workers++
	startJanitor := !d.janitor
	d.janitor = true
	d.mu.Unlock()
	if startJanitor {
		go d.sweep()
	}
	go d.run(&poolWorker{work: make(chan func(), 1)}, fn)
}

func (d *poolDispatcher) Throughput() int { return d.throughput }

// run serves mailboxes until the sweeper hands it nil.
func (d *poolDispatcher) run(w *poolWorker, fn func()) {
	for fn != nil {
		fn()
		d.mu.Lock()
		w.lastUsed = time.Now()
		d.idle = append(d.idle, w)
		d.mu.Unlock()
		fn = <-w.work
	}
}

// sweep stops workers idle for poolIdle, oldest first, and exits with the
// last worker.
func (d *poolDispatcher) sweep() {
	t := time.NewTicker(poolIdle / 2)
	defer t.Stop()
	for range t.C {
		cutoff := time.Now().Add(-poolIdle)
		d.mu.Lock()
		n := 0
		for n < len(d.idle) && d.idle[n].lastUsed.Before(cutoff) {
			d.idle[n].work <- nil // idle: its slot is empty
			n++
		}
		rest := copy(d.idle, d.idle[n:])
		clear(d.idle[rest:])
		d.idle = d.idle[:rest]
		d.workers -= n
		if d.workers == 0 {
			d.janitor = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}
