package kernel

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

type seqMsg struct{ from, n int }
type seqCheck struct{}
type seqResult struct {
	total    int
	outOrder int
}

// seqActor records, per sender, whether messages arrived in order, and
// whether two Receives ever overlapped (the race detector would also flag
// it: its state is unguarded).
type seqActor struct {
	last     map[int]int
	total    int
	outOrder int
	busy     bool
	overlaps int
}

func (a *seqActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *seqMsg:
		if a.busy {
			a.overlaps++
		}
		a.busy = true
		if m.n != a.last[m.from]+1 {
			a.outOrder++
		}
		a.last[m.from] = m.n
		a.total++
		a.busy = false
	case *seqCheck:
		c.Respond(&seqResult{total: a.total, outOrder: a.outOrder + a.overlaps})
	}
}

// The pinned dispatcher must keep the mailbox's guarantees: every message
// delivered once, in order per sender, one at a time; also after its
// goroutine has gone idle and exited.
func TestPinnedDispatcherDeliversInOrderAndRestartsAfterIdle(t *testing.T) {
	k, _ := newKernel(t)
	pid, err := k.SpawnRoot("seq", func() actor.Actor { return &seqActor{last: map[int]int{}} },
		actor.WithDispatcher(PinnedDispatcher(300)))
	if err != nil {
		t.Fatal(err)
	}
	send := func(senders, each, from int) {
		var wg sync.WaitGroup
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; n <= each; n++ {
					k.Root.Send(pid, &seqMsg{from: from + s, n: n})
				}
			}()
		}
		wg.Wait()
	}
	send(8, 2000, 0)
	res, err := Ask[*seqResult](context.Background(), k, pid, &seqCheck{})
	if err != nil {
		t.Fatal(err)
	}
	if res.total != 16000 || res.outOrder != 0 {
		t.Fatalf("got %d messages, %d out of order or overlapping; want 16000, 0", res.total, res.outOrder)
	}
	// Past the idle timeout the worker goroutine exits; the next message
	// must start a new one.
	time.Sleep(1200 * time.Millisecond)
	send(2, 500, 100)
	res, err = Ask[*seqResult](context.Background(), k, pid, &seqCheck{})
	if err != nil {
		t.Fatal(err)
	}
	if res.total != 17000 || res.outOrder != 0 {
		t.Fatalf("after idle: %d messages, %d out of order; want 17000, 0", res.total, res.outOrder)
	}
}

// Many actors sharing one pool dispatcher keep every mailbox's guarantees
// (each message once, in order per sender, one Receive at a time per
// actor), and the pool's workers exit once idle and come back on demand.
func TestPoolDispatcherKeepsMailboxOrderAndExitsWhenIdle(t *testing.T) {
	k, _ := newKernel(t)
	d := PoolDispatcher(300).(*poolDispatcher)
	const actors, senders, each = 40, 4, 500
	pids := make([]*actor.PID, actors)
	for i := range pids {
		pid, err := k.SpawnRoot("pool-seq-"+strconv.Itoa(i), func() actor.Actor { return &seqActor{last: map[int]int{}} },
			actor.WithDispatcher(d))
		if err != nil {
			t.Fatal(err)
		}
		pids[i] = pid
	}
	send := func(from int) {
		var wg sync.WaitGroup
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; n <= each; n++ {
					for _, pid := range pids {
						k.Root.Send(pid, &seqMsg{from: from + s, n: n})
					}
				}
			}()
		}
		wg.Wait()
	}
	check := func(want int) {
		t.Helper()
		for i, pid := range pids {
			res, err := Ask[*seqResult](context.Background(), k, pid, &seqCheck{})
			if err != nil {
				t.Fatal(err)
			}
			if res.total != want || res.outOrder != 0 {
				t.Fatalf("actor %d: %d messages, %d out of order or overlapping; want %d, 0", i, res.total, res.outOrder, want)
			}
		}
	}
	send(0)
	check(senders * each)
	// Idle workers exit; poll for it rather than guess a sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		workers, idle, janitor := d.workers, len(d.idle), d.janitor
		d.mu.Unlock()
		if workers == 0 && idle == 0 && !janitor {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool still has %d workers (%d idle, sweeper running %v) long after the load", workers, idle, janitor)
		}
		time.Sleep(50 * time.Millisecond)
	}
	send(100)
	check(2 * senders * each)
}
