package kernel

import (
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Backoff is the restart policy every supervisor in fangd uses: restart a
// failing child after a capped, jittered exponential delay; give up after
// MaxRetries failures inside Window; stop at once on a permanent error.
//
// Proto.Actor's own "exponential" strategy is linear and unbounded, and its
// default gives up after 10 restarts in 10 s with no delay at all.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	MaxRetries int
	Window     time.Duration
}

// DefaultBackoff suits adapters and connections: 100 ms doubling to 30 s,
// at most 20 failures within 10 minutes.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, MaxRetries: 20, Window: 10 * time.Minute}

// Delay is the wait before restart number n (1-based), before jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Jittered returns Delay(n) spread uniformly over [d/2, d], so that many
// children failing together do not retry in lockstep.
func (b Backoff) Jittered(n int) time.Duration {
	d := b.Delay(n)
	return Spread(d/2, d)
}

// Spread returns a delay drawn uniformly from [lo, hi]: the one jitter
// helper for every retry schedule (Backoff.Jittered above, the webhook
// outbox's fixed schedule ±20%), so that peers failing together do not
// retry in lockstep. It returns lo when hi <= lo.
func Spread(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}

// Strategy returns the supervisor strategy for b.
func (b Backoff) Strategy() actor.SupervisorStrategy { return backoffStrategy{b} }

type backoffStrategy struct{ b Backoff }

func (s backoffStrategy) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, _ any) {
	if IsPermanent(reason) {
		publish(system, child, reason, actor.StopDirective)
		sup.StopChildren(child)
		return
	}
	if rs.NumberOfFailures(s.b.Window) == 0 {
		rs.Reset()
	}
	rs.Fail()
	n := rs.NumberOfFailures(s.b.Window)
	if n > s.b.MaxRetries {
		rs.Reset()
		publish(system, child, reason, actor.StopDirective)
		sup.StopChildren(child)
		return
	}
	time.AfterFunc(s.b.Jittered(n), func() {
		publish(system, child, reason, actor.RestartDirective)
		sup.RestartChildren(child)
	})
}

func publish(system *actor.ActorSystem, child *actor.PID, reason any, d actor.Directive) {
	system.EventStream.Publish(&actor.SupervisorEvent{Child: child, Reason: reason, Directive: d})
}
