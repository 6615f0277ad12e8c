package kernel

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// PinnedDispatcher runs an actor's mailbox on one long-lived goroutine
// instead of Proto.Actor's default, a new goroutine for every burst of
// messages. A hot actor whose mailbox empties thousands of times a second
// (the usage ledger answers each message at once) otherwise pays for a
// goroutine and for growing its stack again on every burst: about a tenth
// of the ledger's CPU. The goroutine exits after a second without work and
// is started again on the next message, so an idle or stopped actor holds
// nothing. Give each actor its own: one goroutine serves one mailbox. It
// is for long-lived hot actors (the ledger, the audit writer, the event
// bus, agents, the A2A supervisor and journal), never for short-lived
// ones like a task: each would keep its goroutine for a second.
func PinnedDispatcher(throughput int) actor.Dispatcher {
	return &pinnedDispatcher{throughput: throughput, wake: make(chan struct{}, 1)}
}

type pinnedDispatcher struct {
	throughput int
	mu         sync.Mutex
	queue      []func()
	running    bool
	wake       chan struct{}
}

// Schedule never blocks: the mailbox calls it from the sender's goroutine.
func (d *pinnedDispatcher) Schedule(fn func()) {
	d.mu.Lock()
	d.queue = append(d.queue, fn)
	start := !d.running
	d.running = true
	d.mu.Unlock()
	if start {
		go d.work()
		return
	}
	select {
	case d.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func (d *pinnedDispatcher) Throughput() int { return d.throughput }

func (d *pinnedDispatcher) work() {
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		d.mu.Lock()
		if len(d.queue) > 0 {
			fn := d.queue[0]
			n := copy(d.queue, d.queue[1:])
			d.queue[n] = nil
			d.queue = d.queue[:n]
			d.mu.Unlock()
			fn()
			continue
		}
		d.mu.Unlock()
		idle.Reset(time.Second)
		select {
		case <-d.wake:
		case <-idle.C:
			d.mu.Lock()
			if len(d.queue) == 0 {
				d.running = false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
		}
	}
}
