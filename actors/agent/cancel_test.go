package agent

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A turn sent with a context stops when the context is cancelled: the
// provider call is abandoned, the caller gets an error, and the session is
// free for the next message at once (A2A's CancelTask relies on it).
func TestSendContextCancelsTheProviderCall(t *testing.T) {
	h := newHarness(t)
	a := h.create("cancellable")
	h.fake.SetLatency(time.Hour) // a provider that would never answer in time
	sid := uuid.NewString()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "never answered", SessionID: sid, From: "test", Ctx: ctx})
		done <- err
	}()
	waitFor(t, "the provider call", func() bool { return h.sawMessage("never answered") })
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled turn answered without error")
		}
	case <-time.After(5 * time.Second): // well inside the provider timeout (10 s)
		t.Fatal("cancelling the context did not stop the turn")
	}
	h.fake.SetLatency(0)
	res, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "next", SessionID: sid, From: "test"})
	if err != nil || res.Response != "echo: next" {
		t.Fatalf("the session stayed busy: %+v %v", res, err)
	}
}
