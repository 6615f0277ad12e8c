package channel

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
)

// host is the runtime as an adapter's Run sees it (the Host interface):
// every call becomes a message to the channel actor, tagged with the
// generation of the Run it serves so that a replaced Run's calls are
// ignored.
type host struct {
	rt        *runtime
	self      *actor.PID
	gen       int
	name      string
	log       zerolog.Logger
	lastAlive atomic.Int64
}

var _ Host = (*host)(nil)

func (h *host) Connected(id Identity) { h.rt.k.Root.Send(h.self, &connected{gen: h.gen, id: id}) }

func (h *host) Degraded(msg string) { h.rt.k.Root.Send(h.self, &degraded{gen: h.gen, msg: msg}) }

func (h *host) Deliver(ctx context.Context, msgs ...Inbound) error {
	if len(msgs) == 0 {
		h.Alive()
		return nil
	}
	return h.deliver(ctx, &inbound{gen: h.gen, msgs: msgs})
}

func (h *host) deliver(ctx context.Context, m *inbound) error {
	done := make(chan error, 1)
	m.done = done
	h.rt.k.Root.Send(h.self, m)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive is called on every poll; it tells the actor at most once a second.
func (h *host) Alive() {
	now := time.Now().UnixNano()
	if last := h.lastAlive.Load(); now-last < int64(time.Second) && last != 0 {
		return
	}
	h.lastAlive.Store(now)
	h.rt.k.Root.Send(h.self, &alive{gen: h.gen})
}

func (h *host) DeliverAndSave(ctx context.Context, cursor Cursor, msgs ...Inbound) error {
	if len(msgs) == 0 {
		h.Alive()
	}
	return h.deliver(ctx, &inbound{gen: h.gen, msgs: msgs, cursor: &cursor})
}

func (h *host) Cursor(key string) (string, error) {
	return h.rt.queues.cursor(h.name, key)
}

func (h *host) SaveCursor(key, value string) error {
	return h.rt.queues.saveCursor(h.name, key, value)
}

func (h *host) Log() *zerolog.Logger { return &h.log }
