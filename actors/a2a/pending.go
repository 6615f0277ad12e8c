package a2a

import (
	"context"
	"sync"
	"time"
)

// PendingWrites collects the task writes an HTTP answer is ahead of. The
// HTTP layer gives one to a JSON-RPC request (WithPendingWrites) and, once
// the handler has returned and the request's audit entry is appended,
// waits for them (Wait) before the answer leaves: a SendMessage's final
// task write and its audit entry then commit at the same time instead of
// one after the other, and no 2xx leaves before both are durable.
type PendingWrites struct {
	mu     sync.Mutex
	fences []*fence
}

// NewPendingWrites returns an empty collection.
func NewPendingWrites() *PendingWrites { return &PendingWrites{} }

func (p *PendingWrites) add(f *fence) {
	p.mu.Lock()
	p.fences = append(p.fences, f)
	p.mu.Unlock()
}

// Wait returns once every collected write is done (stored or failed: a
// failed final write is logged by its task, which still answers with its
// state, as before the writes overlapped), or ctx is done.
func (p *PendingWrites) Wait(ctx context.Context) error {
	p.mu.Lock()
	fences := p.fences
	p.fences = nil
	p.mu.Unlock()
	for _, f := range fences {
		if err := f.wait(ctx); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// PendingWritesTimeout bounds Wait for callers with no deadline of their
// own: a task's final write is given up on after persistTimeout.
const PendingWritesTimeout = persistTimeout + time.Second

type pendingWritesKey struct{}

// WithPendingWrites returns ctx carrying p: the protocol handler adds the
// task writes its answer is ahead of to p instead of waiting for them.
func WithPendingWrites(ctx context.Context, p *PendingWrites) context.Context {
	return context.WithValue(ctx, pendingWritesKey{}, p)
}

func pendingWritesFrom(ctx context.Context) *PendingWrites {
	p, _ := ctx.Value(pendingWritesKey{}).(*PendingWrites)
	return p
}
