package comms

import (
	"context"
	"errors"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// HookReplayWindow is how long an inbound webhook-id is remembered: twice
// the 5-minute timestamp tolerance, so a replay is refused either by its
// stale timestamp or by its id.
const HookReplayWindow = 10 * time.Minute

// claimHookID records an inbound Standard Webhooks id; the router answers
// a Conflict if the id was already seen. Ids are kept in Badger with a
// TTL, so a restart does not reopen the window.
type claimHookID struct {
	id    string
	reply chan error
}

// ClaimHookID accepts an inbound webhook-id once.
func (r *Router) ClaimHookID(ctx context.Context, id string) error {
	reply := make(chan error, 1)
	r.k.Root.Send(r.pid, &claimHookID{id: id, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return kernel.Unavailable("comms router did not answer in time")
	}
}

func hookKey(id string) []byte { return []byte("comms/hookids/" + id) }

// claim runs inline in the router: one tiny read and synced write, only
// for signed inbound hooks, and the actor is what makes check-and-set
// atomic.
func (r *router) claim(m *claimHookID) {
	if len(m.id) == 0 || len(m.id) > 256 {
		m.reply <- kernel.Invalid("webhook-id must be 1 to 256 characters")
		return
	}
	err := r.db.Update(func(tx *store.Txn) error {
		if _, err := tx.Get(hookKey(m.id)); err == nil {
			return kernel.Errorf(kernel.KindConflict, "webhook_replayed", "webhook-id %q was already received", m.id)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.SetTTL(hookKey(m.id), []byte{1}, HookReplayWindow)
	})
	m.reply <- err
}
