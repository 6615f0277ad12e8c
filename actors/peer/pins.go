package peer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ofp"
)

// TrustedPeer is one pin: the identity key a node id was first seen with
// (trust on first use), as GET /api/network/trusted-peers lists it.
type TrustedPeer struct {
	NodeID      string `json:"node_id"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
	PinnedAt    string `json:"pinned_at"`
}

// Pins is the persisted TOFU pin store (ofp.Pins). The pins are held in
// memory for the handshake's check and written through to Badger with
// asynchronous writes: Check runs in a handshake goroutine, never in an
// actor's Receive, and waits there until a new pin is durable, so a
// handshake that pinned a key is never followed by a restart that forgot it.
type Pins struct {
	col *store.Collection[TrustedPeer]
	mu  sync.Mutex
	m   map[string]TrustedPeer
	now func() time.Time
}

// OpenPins loads the pins stored by earlier runs.
func OpenPins(db *store.DB) (*Pins, error) {
	p := &Pins{col: store.NewCollection[TrustedPeer](db, "peers/pins"), m: map[string]TrustedPeer{}, now: time.Now}
	err := p.col.Each(func(id string, v TrustedPeer) bool {
		p.m[id] = v
		return true
	})
	return p, err
}

// Check implements ofp.Pins.
func (p *Pins) Check(nodeID, publicKeyB64 string) error {
	p.mu.Lock()
	pinned, ok := p.m[nodeID]
	switch {
	case ok && publicKeyB64 == "":
		p.mu.Unlock()
		return errors.New("node " + nodeID + " is pinned to an identity key but sent none")
	case ok && pinned.PublicKey != publicKeyB64:
		p.mu.Unlock()
		return errors.New("node " + nodeID + " presented a different identity key than the one pinned")
	case ok || publicKeyB64 == "":
		p.mu.Unlock()
		return nil
	}
	tp := TrustedPeer{NodeID: nodeID, PublicKey: publicKeyB64, Fingerprint: ofp.Fingerprint(publicKeyB64),
		PinnedAt: p.now().UTC().Format(time.RFC3339)}
	p.m[nodeID] = tp
	done := make(chan error, 1)
	// Handed over under the lock so a concurrent Forget's delete is
	// ordered after this write.
	p.col.PutAsync(nodeID, tp, func(err error) { done <- err })
	p.mu.Unlock()
	if err := <-done; err != nil {
		p.mu.Lock()
		if p.m[nodeID] == tp {
			delete(p.m, nodeID)
		}
		p.mu.Unlock()
		return fmt.Errorf("could not store the pin of node %s", nodeID)
	}
	return nil
}

// List returns the pins in node id order.
func (p *Pins) List() []TrustedPeer {
	p.mu.Lock()
	out := make([]TrustedPeer, 0, len(p.m))
	for _, v := range p.m {
		out = append(out, v)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// Len counts the pins.
func (p *Pins) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// Forget removes the pin of nodeID and returns once the removal is
// durable: the node's next handshake pins whatever key it presents.
func (p *Pins) Forget(ctx context.Context, nodeID string) (TrustedPeer, error) {
	p.mu.Lock()
	tp, ok := p.m[nodeID]
	if !ok {
		p.mu.Unlock()
		return tp, kernel.NotFound("no pin for node %s", nodeID)
	}
	delete(p.m, nodeID)
	done := make(chan error, 1)
	p.col.DeleteAsync(nodeID, func(err error) { done <- err })
	p.mu.Unlock()
	select {
	case err := <-done:
		return tp, err
	case <-ctx.Done():
		return tp, kernel.Unavailable("the pin's removal was not confirmed in time")
	}
}
