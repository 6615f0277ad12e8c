package kernel

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// These benchmarks chose Ask's wait and the project's reply style
// (docs/architecture.md, "Asking an actor"). Each round trip asks one
// actor that answers at once.

type benchAsk struct{}
type benchChan struct{ reply chan string }

type benchActor struct{}

func (benchActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *benchAsk:
		c.Respond("ok")
	case *benchChan:
		m.reply <- "ok"
	}
}

func benchKernel(b *testing.B) (*Kernel, *actor.PID) {
	k, _ := newKernel(b)
	pid, err := k.SpawnRoot("bench", func() actor.Actor { return benchActor{} })
	if err != nil {
		b.Fatal(err)
	}
	return k, pid
}

// Ask as built: a one-shot reply process, select on ctx.Done().
func BenchmarkAskReplyProcess(b *testing.B) {
	k, pid := benchKernel(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Ask[string](ctx, k, pid, &benchAsk{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Ask without a ctx deadline: it arms its own DefaultAskTimeout timer.
func BenchmarkAskReplyProcessNoDeadline(b *testing.B) {
	k, pid := benchKernel(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Ask[string](context.Background(), k, pid, &benchAsk{}); err != nil {
			b.Fatal(err)
		}
	}
}

// The old ask: RequestFuture and Future.Result, which cannot watch a ctx.
func BenchmarkAskFutureResult(b *testing.B) {
	k, pid := benchKernel(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Root.RequestFuture(pid, &benchAsk{}, DefaultAskTimeout).Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// RequestFuture honouring ctx: Result in a goroutine, select on ctx.Done()
// (what usage's askCtx did).
func BenchmarkAskFutureGoroutine(b *testing.B) {
	k, pid := benchKernel(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		done := make(chan error, 1)
		go func() {
			_, err := k.Root.RequestFuture(pid, &benchAsk{}, time.Until(time.Now().Add(DefaultAskTimeout))).Result()
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				b.Fatal(err)
			}
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
	}
}

// A per-call reply channel in the message, select on it and ctx.Done()
// (channel.Service's call, usage's Reserve).
func BenchmarkReplyChannel(b *testing.B) {
	k, pid := benchKernel(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		reply := make(chan string, 1)
		k.Root.Send(pid, &benchChan{reply: reply})
		select {
		case <-reply:
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
	}
}
