// Package kerneltest holds test support for code built on fangd's actors,
// whose effects land asynchronously: a test waits for a condition instead
// of sleeping for a guess. It imports nothing of fangd, so every package's
// tests can use it, kernel's own included. Model: tailscale tstest.WaitFor.
package kerneltest

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

// MaxWait is how long WaitFor polls before failing the test. It is long
// because the shared 2-core machine that runs the suite can stall for
// seconds; a condition that holds returns at once, so it costs nothing.
const MaxWait = 20 * time.Second

// WaitFor polls cond until it holds, and fails t with "timed out waiting
// for <what>" (plus each detail's text, read at the time) after MaxWait.
func WaitFor(t testing.TB, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(MaxWait)
	for !cond() {
		if time.Now().After(deadline) {
			msg := "timed out waiting for " + what
			for _, d := range detail {
				msg += " (" + d() + ")"
			}
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ShutdownWait bounds how long Stop waits for the actors to stop.
const ShutdownWait = 10 * time.Second

// Shutdowner is a kernel (kerneltest imports nothing of fangd, so it names
// only the method it calls).
type Shutdowner interface {
	Shutdown(ctx context.Context) []string
}

// Stop is every test harness's stop, as a daemon stop does it: shut k's
// actors down (waiting at most ShutdownWait), then close each of closers
// (the store) in order, once nothing writes to them any more.
func Stop(k Shutdowner, closers ...io.Closer) {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownWait)
	defer cancel()
	k.Shutdown(ctx)
	for _, c := range closers {
		_ = c.Close()
	}
}

// Resulter is a pending answer, an *actor.Future (named by the one method
// Await calls, as Shutdowner is).
type Resulter interface {
	Result() (any, error)
}

// Await waits for f's answer in a goroutine and hands it over on the
// returned channel (buffered, so nothing leaks if the test stops reading):
// the answer, or the error. A test can then ask, act, and only afterwards
// read what the ask got.
func Await(f Resulter) <-chan any {
	out := make(chan any, 1)
	go func() {
		res, err := f.Result()
		if err != nil {
			out <- err
			return
		}
		out <- res
	}()
	return out
}

// Clock is a time source that moves only when a test advances it, for
// code that reads the time through an injected func (approval.Options.Now,
// usage.Options.Now, the cluster's certNow): a test proves expiry, lockout
// or a reload check by moving time on, not by sleeping.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock is a Clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
