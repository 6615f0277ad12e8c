package channeltest

import (
	"context"
	"sort"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// FakeClock is a kernel.Clock that moves only when a test calls Advance,
// so a test proves "nothing happens before the retry hint has passed" by
// holding time still instead of sleeping. Its timers fire inside Advance,
// in due order. It embeds FakeState for Wait: every new timer is a change.
type FakeClock struct {
	FakeState
	now     time.Time
	timers  []*fakeTimer
	created int
}

type fakeTimer struct {
	c       *FakeClock
	at      time.Time
	f       func()
	n       int // creation order, for PendingSince
	stopped bool
	fired   bool
}

// NewFakeClock starts at a fixed instant.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now implements kernel.Clock.
func (c *FakeClock) Now() time.Time {
	c.Lock()
	defer c.Unlock()
	return c.now
}

// AfterFunc implements kernel.Clock: f runs when Advance passes now+d.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) kernel.Timer {
	c.Lock()
	defer c.Unlock()
	c.created++
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f, n: c.created}
	c.timers = append(c.timers, t)
	c.Changed()
	return t
}

// Stop implements kernel.Timer.
func (t *fakeTimer) Stop() bool {
	t.c.Lock()
	defer t.c.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// Advance moves the clock on by d and runs every timer that falls due, in
// due order, before it returns.
func (c *FakeClock) Advance(d time.Duration) {
	c.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.fired = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.Changed()
	c.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// Mark numbers the timers made so far; PendingSince(mark) sees only
// later ones.
func (c *FakeClock) Mark() int {
	c.Lock()
	defer c.Unlock()
	return c.created
}

// PendingSince lists how long until each pending timer made after mark
// falls due.
func (c *FakeClock) PendingSince(mark int) []time.Duration {
	c.Lock()
	defer c.Unlock()
	return c.pendingSince(mark)
}

func (c *FakeClock) pendingSince(mark int) []time.Duration {
	var out []time.Duration
	for _, t := range c.timers {
		if !t.stopped && t.n > mark {
			out = append(out, t.at.Sub(c.now))
		}
	}
	return out
}

// WaitPending waits until a timer made after mark is pending whose delay
// satisfies match, and returns that delay.
func (c *FakeClock) WaitPending(ctx context.Context, mark int, what string, match func(time.Duration) bool) (time.Duration, error) {
	var got time.Duration
	err := c.Wait(ctx, what, func() bool {
		for _, d := range c.pendingSince(mark) {
			if match(d) {
				got = d
				return true
			}
		}
		return false
	})
	return got, err
}
