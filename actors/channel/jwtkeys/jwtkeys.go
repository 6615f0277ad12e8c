// Package jwtkeys keeps a platform's JWT signing keys (a JWK set) for the
// adapters that verify bearer tokens on their webhooks (Google Chat,
// Teams): Run loads them and keeps them fresh (network); Webhook verifies
// with them (no network: it runs inside the channel actor) and, when a
// token names a key it does not know, asks Run for an early reload (the
// keys may have rolled over).
package jwtkeys

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
)

// minEarlyReload spaces the reloads unknown key ids ask for, so forged
// tokens cannot make the adapter hammer the platform's key endpoint.
const minEarlyReload = 5 * time.Minute

// Keys is the current key set and the early-reload request.
type Keys struct {
	mu     sync.RWMutex
	kf     keyfunc.Keyfunc
	reload chan struct{}
}

// New is an empty key set: Keyfunc is nil until the first Set.
func New() *Keys { return &Keys{reload: make(chan struct{}, 1)} }

// Set installs a JWK set (the JSON the platform publishes).
func (k *Keys) Set(jwks []byte) error {
	kf, err := keyfunc.NewJWKSetJSON(jwks)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.kf = kf
	k.mu.Unlock()
	return nil
}

// Keyfunc is the current key set; nil before the first load.
func (k *Keys) Keyfunc() keyfunc.Keyfunc {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.kf
}

// Rejected takes a token's verification error: an unknown key id asks Keep
// for an early reload (without blocking; one request pending is enough).
func (k *Keys) Rejected(err error) {
	if errors.Is(err, keyfunc.ErrKeyfunc) {
		select {
		case k.reload <- struct{}{}:
		default:
		}
	}
}

// Keep reloads the keys with load every interval, and early when Rejected
// asks (at most once per minEarlyReload), until ctx ends. A failed reload
// keeps the old keys and goes to warn.
func (k *Keys) Keep(ctx context.Context, every time.Duration, load func(context.Context) error, warn func(error)) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-k.reload:
			if time.Since(last) < minEarlyReload {
				continue
			}
		}
		last = time.Now()
		if err := load(ctx); err != nil && ctx.Err() == nil {
			warn(err)
		}
	}
}
