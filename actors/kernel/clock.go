package kernel

import (
	"context"
	"time"
)

// Clock is the time an actor paces itself by: the reconnect backoff, the
// outbox's retry and rate-limit pauses. Production code uses RealClock; a
// test injects a fake (channeltest.FakeClock) so that "nothing happens
// until the retry hint has passed" is proven by advancing time, not by
// sleeping and hoping the machine was fast enough. Model: tailscale
// tstest.Clock.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc; *time.Timer is one.
type Timer interface {
	// Stop prevents the call if it has not happened; it reports whether
	// it did prevent it.
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Sleep waits d, or less when ctx ends first (then it reports false): the
// pause between retries and polls that must not outlive its caller.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
