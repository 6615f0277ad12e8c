package channel

import (
	"slices"
	"testing"
	"time"
)

func in(chat string, seq uint64) *inItem { return &inItem{Seq: seq, Msg: Inbound{ChatID: chat}} }

func seqs[T any](items []*T, seq func(*T) uint64) []uint64 {
	var out []uint64
	for _, it := range items {
		out = append(out, seq(it))
	}
	slices.Sort(out)
	return out
}

func inSeqs(items []*inItem) []uint64 { return seqs(items, func(i *inItem) uint64 { return i.Seq }) }

var t0 = time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)

// steps is a backoff whose step n is n seconds.
func steps(n int) time.Duration { return time.Duration(n) * time.Second }

// Turns of one chat run one at a time in arrival order; chats run side
// by side.
func TestTurnsRunEachChatInOrderOneAtATime(t *testing.T) {
	tr := newTurns(16)
	a1, a2, b1 := in("a", 1), in("a", 2), in("b", 3)
	tr.add(a1, a2, b1)
	if got := inSeqs(tr.next(t0)); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("first start %v, want the head of each chat [1 3]", got)
	}
	if got := tr.next(t0); len(got) != 0 {
		t.Fatalf("started %v while both chats are busy", inSeqs(got))
	}
	tr.finished(a1)
	if got := inSeqs(tr.next(t0)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after a's first turn: started %v, want [2]", got)
	}
	tr.finished(a2)
	tr.finished(b1)
	if tr.pending != 0 || tr.running != 0 || len(tr.queue) != 0 || len(tr.busy) != 0 {
		t.Fatalf("state left behind: %+v", tr)
	}
}

// No more than max turns run at once; the rest start as turns end.
func TestTurnsAreCappedAcrossChats(t *testing.T) {
	tr := newTurns(2)
	items := []*inItem{in("a", 1), in("b", 2), in("c", 3)}
	tr.add(items...)
	started := tr.next(t0)
	if len(started) != 2 || tr.running != 2 {
		t.Fatalf("started %d (running %d), want 2", len(started), tr.running)
	}
	if got := tr.next(t0); len(got) != 0 {
		t.Fatalf("started %v past the cap", inSeqs(got))
	}
	tr.finished(started[0])
	if got := tr.next(t0); len(got) != 1 || slices.Contains(started, got[0]) {
		t.Fatalf("after one ended: started %v, want the third chat", inSeqs(got))
	}
	if tr.pending != 2 {
		t.Fatalf("pending %d, want 2", tr.pending)
	}
}

// A turn that may succeed later stays at its chat's head; the chat
// waits the backoff (counting attempts) while other chats go on.
func TestFailedTurnPausesOnlyItsChat(t *testing.T) {
	tr := newTurns(16)
	a1, a2, b1 := in("a", 1), in("a", 2), in("b", 3)
	tr.add(a1, a2)
	tr.next(t0)
	d := tr.failed(a1, t0, steps)
	if d != 4*time.Second || a1.Attempts != 1 {
		t.Fatalf("wait %v after attempt %d, want backoff(1+3) = 4s", d, a1.Attempts)
	}
	tr.add(b1)
	if got := inSeqs(tr.next(t0.Add(time.Second))); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("during a's pause: started %v, want only b's [3]", got)
	}
	if got := inSeqs(tr.next(t0.Add(4 * time.Second))); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("after a's pause: started %v, want a's head again [1]", got)
	}
	if d := tr.failed(a1, t0, steps); d != 5*time.Second || a1.Attempts != 2 {
		t.Fatalf("second failure: wait %v after attempt %d, want 5s", d, a1.Attempts)
	}
	tr.next(t0.Add(5 * time.Second))
	tr.finished(a1)
	if _, paused := tr.after["a"]; paused {
		t.Fatal("a finished turn leaves its chat paused")
	}
	if got := inSeqs(tr.next(t0.Add(5 * time.Second))); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("started %v, want a's next [2]", got)
	}
}

// Items whose inbox write failed are taken back unless their turn is
// already running.
func TestWithdrawSparesTheRunningTurn(t *testing.T) {
	tr := newTurns(16)
	a1, a2, b1 := in("a", 1), in("a", 2), in("b", 3)
	tr.add(a1, a2, b1)
	tr.next(t0) // a1 and b1 run
	tr.finished(b1)
	if n := tr.withdraw([]*inItem{a1, a2}); n != 1 {
		t.Fatalf("withdrew %d, want 1 (a2; a1 is running)", n)
	}
	if tr.pending != 1 || len(tr.queue["a"]) != 1 || tr.queue["a"][0] != a1 {
		t.Fatalf("after withdraw: pending %d queue %v", tr.pending, tr.queue)
	}
	c1 := in("c", 4)
	tr.add(c1)
	if n := tr.withdraw([]*inItem{c1}); n != 1 || tr.queue["c"] != nil {
		t.Fatalf("withdrew %d, chat c still queued: %v", n, tr.queue)
	}
	tr.finished(a1)
	if tr.pending != 0 || len(tr.queue) != 0 {
		t.Fatalf("state left behind: %+v", tr)
	}
}
