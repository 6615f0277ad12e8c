package channel

import (
	"slices"
	"testing"
	"time"
)

func out(chat string, seq uint64) *outItem { return &outItem{Seq: seq, Msg: Outbound{ChatID: chat}} }

func outSeqs(items []*outItem) []uint64 { return seqs(items, func(o *outItem) uint64 { return o.Seq }) }

// The oldest message of each chat goes first, one per chat in flight;
// the next of a chat goes once the earlier one is done.
func TestOutboxSendsEachChatInOrderOneAtATime(t *testing.T) {
	o := newOutbox(4, []*outItem{out("a", 1), out("a", 2), out("b", 3)})
	send, wake := o.due(t0)
	if got := outSeqs(send); !slices.Equal(got, []uint64{1, 3}) || wake != 0 {
		t.Fatalf("due %v wake %v, want [1 3] and no wake-up", got, wake)
	}
	if send, _ := o.due(t0); len(send) != 0 {
		t.Fatalf("due %v while both chats are in flight", outSeqs(send))
	}
	o.done(send[0], true)
	if send, _ := o.due(t0); !slices.Equal(outSeqs(send), []uint64{2}) {
		t.Fatalf("after 1 was sent: due %v, want [2]", outSeqs(send))
	}
	if !slices.Equal(outSeqs(o.items), []uint64{2, 3}) {
		t.Fatalf("queue %v, want [2 3]", outSeqs(o.items))
	}
}

// At most maxInflight chats send at once.
func TestOutboxCapsSendsInFlight(t *testing.T) {
	o := newOutbox(2, []*outItem{out("a", 1), out("b", 2), out("c", 3)})
	if send, _ := o.due(t0); len(send) != 2 {
		t.Fatalf("due %v, want 2", outSeqs(send))
	}
	if send, _ := o.due(t0); len(send) != 0 {
		t.Fatalf("due %v past the cap", outSeqs(send))
	}
}

// A reply whose inbound message is not stored yet waits, and so does
// the rest of its chat.
func TestOutboxHoldsARepliesUntilItsMessageIsStored(t *testing.T) {
	msg := &inItem{pending: true}
	held := out("a", 1)
	held.answers = msg
	o := newOutbox(4, []*outItem{held, out("a", 2), out("b", 3)})
	if send, wake := o.due(t0); !slices.Equal(outSeqs(send), []uint64{3}) || wake != 0 {
		t.Fatalf("due %v wake %v, want only [3]: the store, not time, releases 1", outSeqs(send), wake)
	}
	msg.pending = false
	if send, _ := o.due(t0); !slices.Equal(outSeqs(send), []uint64{1}) {
		t.Fatalf("once stored: due %v, want [1]", outSeqs(send))
	}
}

// A failed send waits its backoff, counted per message; other chats go
// on; the wake-up is the soonest wait.
func TestOutboxRetryBacksOffPerMessage(t *testing.T) {
	a, b := out("a", 1), out("b", 2)
	o := newOutbox(4, []*outItem{a, b})
	o.due(t0)
	if d := o.retry(a, 0, t0, steps); d != time.Second || a.attempts != 1 {
		t.Fatalf("first retry in %v (attempt %d), want 1s", d, a.attempts)
	}
	if d := o.retry(b, 0, t0, steps); d != time.Second {
		t.Fatalf("b's retry in %v", d)
	}
	o.due(t0.Add(time.Second)) // both go again
	if d := o.retry(a, 0, t0.Add(time.Second), steps); d != 2*time.Second || a.attempts != 2 {
		t.Fatalf("second retry in %v (attempt %d), want 2s", d, a.attempts)
	}
	o.done(b, true)
	if send, wake := o.due(t0.Add(2 * time.Second)); len(send) != 0 || wake != time.Second {
		t.Fatalf("due %v wake %v, want nothing now and a wake-up in 1s", outSeqs(send), wake)
	}
	if send, _ := o.due(t0.Add(3 * time.Second)); !slices.Equal(outSeqs(send), []uint64{1}) {
		t.Fatalf("after the wait: due %v, want [1]", outSeqs(send))
	}
}

// A 429's wait pauses the whole account, and the message waits at least
// that long even when its own backoff is shorter.
func TestOutboxRateLimitPausesTheAccount(t *testing.T) {
	a, b := out("a", 1), out("b", 2)
	o := newOutbox(4, []*outItem{a})
	o.due(t0)
	if d := o.retry(a, 30*time.Second, t0, steps); d != 30*time.Second {
		t.Fatalf("retry in %v, want the platform's 30s", d)
	}
	o.add(b)
	if send, wake := o.due(t0.Add(10 * time.Second)); len(send) != 0 || wake != 20*time.Second {
		t.Fatalf("during the pause: due %v wake %v, want nothing and 20s", outSeqs(send), wake)
	}
	if send, _ := o.due(t0.Add(30 * time.Second)); !slices.Equal(outSeqs(send), []uint64{1, 2}) {
		t.Fatalf("after the pause: due %v, want [1 2]", outSeqs(send))
	}
	// A hint shorter than the backoff: the backoff wins for the message.
	if d := o.retry(a, time.Second, t0, func(int) time.Duration { return 5 * time.Second }); d != 5*time.Second {
		t.Fatalf("retry in %v, want the backoff's 5s", d)
	}
}

// A message refused for good while the channel stops keeps its place.
func TestOutboxDoneWithoutDropKeepsTheMessage(t *testing.T) {
	a := out("a", 1)
	o := newOutbox(4, []*outItem{a})
	o.due(t0)
	o.done(a, false)
	if len(o.items) != 1 || o.inflight["a"] {
		t.Fatalf("items %v inflight %v", outSeqs(o.items), o.inflight)
	}
}

// Only a wake-up sooner than the one pending needs a new timer.
func TestOutboxWakeUpsKeepTheSoonest(t *testing.T) {
	o := newOutbox(4, nil)
	if !o.wakeAfter(t0, 10*time.Second) {
		t.Fatal("first wake-up set no timer")
	}
	if o.wakeAfter(t0, 20*time.Second) {
		t.Fatal("a later wake-up set a timer while a sooner one is pending")
	}
	if !o.wakeAfter(t0, 5*time.Second) {
		t.Fatal("a sooner wake-up set no timer")
	}
	if !o.wakeAfter(t0.Add(6*time.Second), 20*time.Second) {
		t.Fatal("a wake-up after the pending one fired set no timer")
	}
	o.woke()
	if !o.wakeAfter(t0, 20*time.Second) {
		t.Fatal("after woke, a wake-up set no timer")
	}
}

// Pacing limiters: none without a per-chat rate, one per chat, and the
// set is bounded.
func TestOutboxChatLimitersAreBounded(t *testing.T) {
	o := newOutbox(4, nil)
	if o.chatLimiter("a") != nil {
		t.Fatal("a limiter without a per-chat rate")
	}
	o.setPace(Pace{PerSecond: 30, Burst: 5, ChatInterval: time.Second, ChatBurst: 2})
	if o.global == nil || o.global.Burst() != 5 {
		t.Fatalf("global limiter %v", o.global)
	}
	l := o.chatLimiter("a")
	if l == nil || l.Burst() != 2 || o.chatLimiter("a") != l {
		t.Fatal("chat a's limiter is not kept")
	}
	for i := range maxChatLimiters {
		o.chatLimiter(string(rune('a'+i%26)) + string(rune(i)))
	}
	if len(o.chatLim) > maxChatLimiters {
		t.Fatalf("%d limiters kept, cap %d", len(o.chatLim), maxChatLimiters)
	}
	o.setPace(Pace{})
	if o.global != nil || len(o.chatLim) != 0 {
		t.Fatal("a new pace kept the old limiters")
	}
}
