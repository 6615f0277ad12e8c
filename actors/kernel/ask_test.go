package kernel

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// echo answers a string with itself, an int with an error, and holds a
// time.Duration for that long before answering (a slow actor); a
// chan struct{} is closed once the actor got the message.
type echo struct{ got chan struct{} }

func (e *echo) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case string:
		c.Respond(m)
	case int:
		c.Respond(Conflict("no %d", m))
	case time.Duration:
		if e.got != nil {
			close(e.got)
		}
		time.Sleep(m)
		c.Respond("late")
	}
}

func spawnEcho(t *testing.T, k *Kernel, got chan struct{}) *actor.PID {
	t.Helper()
	pid, err := k.SpawnRoot("echo", func() actor.Actor { return &echo{got: got} })
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestAskAnswers(t *testing.T) {
	k, _ := newKernel(t)
	pid := spawnEcho(t, k, nil)
	got, err := Ask[string](context.Background(), k, pid, "hi")
	if err != nil || got != "hi" {
		t.Fatalf("Ask = %q, %v; want hi", got, err)
	}
	// A reply of the wrong type is an error naming both types, not a zero value.
	if _, err := Ask[int](context.Background(), k, pid, "hi"); err == nil {
		t.Fatal("a string answer to Ask[int] was accepted")
	}
}

func TestAskReturnsErrorReply(t *testing.T) {
	k, _ := newKernel(t)
	pid := spawnEcho(t, k, nil)
	_, err := Ask[string](context.Background(), k, pid, 7)
	if e := AsError(err); e == nil || e.Kind != KindConflict || e.Msg != "no 7" {
		t.Fatalf("err = %v, want the actor's conflict error", err)
	}
}

func TestAskDeadlineIsUnavailableTimeout(t *testing.T) {
	k, _ := newKernel(t)
	pid := spawnEcho(t, k, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Ask[string](ctx, k, pid, 2*time.Second)
	if e := AsError(err); e == nil || e.Kind != KindUnavailable || e.Code != "actor_timeout" {
		t.Fatalf("err = %v, want Unavailable actor_timeout", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Ask waited %v past a 50ms deadline", el)
	}
}

func TestAskCancelledReturnsBeforeTheActorAnswers(t *testing.T) {
	k, _ := newKernel(t)
	got := make(chan struct{})
	pid := spawnEcho(t, k, got)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Ask[string](ctx, k, pid, 2*time.Second)
		done <- err
	}()
	<-got // the actor is now busy for two seconds
	cancel()
	select {
	case err := <-done:
		if e := AsError(err); e == nil || e.Kind != KindUnavailable || e.Code != "request_cancelled" || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want Unavailable request_cancelled wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ask did not return after its ctx was cancelled")
	}
	// Already cancelled: the message is not even sent.
	if _, err := Ask[string](ctx, k, pid, "hi"); AsError(err) == nil || AsError(err).Code != "request_cancelled" {
		t.Fatalf("Ask with a cancelled ctx = %v, want request_cancelled", err)
	}
}

func TestAskDeadActorIsUnavailable(t *testing.T) {
	k, _ := newKernel(t)
	pid := spawnEcho(t, k, nil)
	if err := k.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := Ask[string](context.Background(), k, pid, "hi")
	if e := AsError(err); e == nil || e.Kind != KindUnavailable || e.Code != "actor_unavailable" {
		t.Fatalf("err = %v, want Unavailable actor_unavailable", err)
	}
	// The dead letter answers at once, not after DefaultAskTimeout.
	if el := time.Since(start); el >= DefaultAskTimeout {
		t.Fatalf("a dead actor took %v to report", el)
	}
}

// within is a ctx with deadline d, cancelled when the test ends.
func within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
