package kernel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// DefaultAskTimeout bounds how long a caller waits for an actor when its
// context carries no deadline of its own.
const DefaultAskTimeout = 5 * time.Second

// Ask sends msg to pid and waits for a reply of type T; the actor answers
// with ctx.Respond (or, later, by sending to the Sender it kept). An error
// reply is returned as the error.
//
// ctx bounds the wait: its deadline is the ask's deadline (without one,
// DefaultAskTimeout), and its cancellation ends the wait at once. The
// actor may still act on msg after the caller gave up; a late answer is
// dropped. Every failure to get an answer is a domain error the HTTP layer
// maps to 503: "actor_timeout" when the deadline passed,
// "request_cancelled" when ctx was cancelled, "actor_unavailable" when
// the actor is not running (dead letter).
//
// The wait needs no goroutine and no Future: the answer goes to a one-shot
// process registered for this ask, which hands it to a buffered channel
// the caller selects on together with ctx.Done(). ask_bench_test.go
// measured this against a RequestFuture awaited in a goroutine (the only
// way to watch ctx.Done() beside Future.Result); docs/architecture.md,
// "Asking an actor", has the numbers.
func Ask[T any](ctx context.Context, k *Kernel, pid *actor.PID, msg any) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, askEnded(pid, err, false)
	}
	reg := k.System.ProcessRegistry
	p := &replyProcess{ch: make(chan any, 1)}
	self, _ := reg.Add(p, "ask"+reg.NextId())
	defer reg.Remove(self)
	k.Root.RequestWithCustomSender(pid, msg, self)

	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(DefaultAskTimeout)
		defer t.Stop()
		expired = t.C
	}
	var res any
	select {
	case res = <-p.ch:
	case <-ctx.Done():
		return zero, AskEnded(pid, ctx.Err())
	case <-expired:
		return zero, AskEnded(pid, context.DeadlineExceeded)
	}
	switch v := res.(type) {
	case T:
		return v, nil
	case *actor.DeadLetterResponse:
		return zero, &Error{Kind: KindUnavailable, Code: "actor_unavailable", Msg: pid.Id + " is not running", Err: actor.ErrDeadLetter}
	case error:
		return zero, v
	}
	return zero, fmt.Errorf("%s answered %T, want %T", pid.Id, res, zero)
}

// AskEnded is the domain error for a wait on pid whose ctx ended with err
// (ctx.Err()): what Ask returns, for the few waits that do not go
// through Ask (a reply channel on a measured hot path).
func AskEnded(pid *actor.PID, err error) error {
	return askEnded(pid, err, true)
}

// askEnded is AskEnded; sent says whether msg had already gone to the
// actor (which may still act on it).
func askEnded(pid *actor.PID, err error, sent bool) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: KindUnavailable, Code: "actor_timeout", Msg: pid.Id + " did not answer in time", Err: err}
	}
	msg := "the request ended before " + pid.Id + " was asked"
	if sent {
		msg = "the request ended before " + pid.Id + " answered"
	}
	return &Error{Kind: KindUnavailable, Code: "request_cancelled", Msg: msg, Err: err}
}

// WithDefaultTimeout bounds ctx by d when it has no deadline of its own:
// a handle method whose work takes longer than one ask (an agent turn, a
// decision that waits for the audit log) keeps its own limit for callers
// that set none, and a caller's deadline still wins.
func WithDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// replyProcess receives one ask's answer. It is registered in the process
// registry under a fresh id, so an actor replies to it like to any
// sender; the channel is buffered so the replying actor never blocks, and
// a second or late message (after the caller gave up) is dropped.
type replyProcess struct{ ch chan any }

func (p *replyProcess) SendUserMessage(_ *actor.PID, m any) {
	_, msg, _ := actor.UnwrapEnvelope(m)
	select {
	case p.ch <- msg:
	default:
	}
}

func (p *replyProcess) SendSystemMessage(pid *actor.PID, m any) { p.SendUserMessage(pid, m) }

func (p *replyProcess) Stop(*actor.PID) {}

// Replier answers an ask later, from any goroutine: the asker's address,
// kept when the request was received (ctx.Respond works only inside
// Receive). The zero Replier (a plain Send, nobody asking) drops the
// answer.
type Replier struct {
	root *actor.RootContext
	to   *actor.PID
}

// ReplierOf is the Replier for the message c is handling.
func ReplierOf(c actor.Context) Replier {
	return Replier{root: c.ActorSystem().Root, to: c.Sender()}
}

// Respond sends v to the asker.
func (r Replier) Respond(v any) {
	if r.to != nil {
		r.root.Send(r.to, v)
	}
}
