// Package jwtkeys keeps a platform's JWT signing keys (a JWK set) for the
// adapters that verify bearer tokens on their webhooks (Google Chat,
// Teams): Run loads them (Fetch, FetchOpenID) and keeps them fresh (Keep,
// network); Webhook verifies with them (Verify, no network: it runs inside
// the channel actor) and, when a token names a key it does not know, asks
// Run for an early reload (the keys may have rolled over).
package jwtkeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
)

// minEarlyReload spaces the reloads unknown key ids ask for, so forged
// tokens cannot make the adapter hammer the platform's key endpoint.
const minEarlyReload = 5 * time.Minute

// Keys is the current key set and the early-reload request.
type Keys struct {
	mu     sync.RWMutex
	kf     keyfunc.Keyfunc
	reload chan struct{}
	// name prefixes errors ("teams"); what names the keys in them.
	name, what string
}

// New is an empty key set for adapter name, whose errors call the keys
// what ("the Bot Framework signing keys"): Keyfunc is nil until the first
// Set.
func New(name, what string) *Keys {
	return &Keys{reload: make(chan struct{}, 1), name: name, what: what}
}

// Fetch reads the JWK set at u with c and installs it.
func (k *Keys) Fetch(ctx context.Context, c *http.Client, u string) error {
	var raw json.RawMessage
	if err := getJSON(ctx, c, u, &raw); err != nil {
		return fmt.Errorf("%s: signing keys: %w", k.name, err)
	}
	if err := k.Set(raw); err != nil {
		return fmt.Errorf("%s: signing keys: %w", k.name, err)
	}
	return nil
}

// FetchOpenID reads the OpenID metadata document at u, then the JWK set it
// names (Fetch).
func (k *Keys) FetchOpenID(ctx context.Context, c *http.Client, u string) error {
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(ctx, c, u, &meta); err != nil {
		return fmt.Errorf("%s: OpenID metadata: %w", k.name, err)
	}
	if !strings.HasPrefix(meta.JWKSURI, "https://") && !strings.HasPrefix(meta.JWKSURI, "http://") {
		return fmt.Errorf("%s: OpenID metadata has no jwks_uri", k.name)
	}
	return k.Fetch(ctx, c, meta.JWKSURI)
}

// getJSON decodes the JSON document at u (at most 1 MiB) into out.
func getJSON(ctx context.Context, c *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return channel.Permanent(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return channel.NetCause(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// Verify checks an Authorization header that must carry "Bearer <JWT>":
// signed (RS256) by one of the keys, with an expiry, and passing opts
// (issuer, audience, leeway); claims takes the token's claims. A missing
// or refused token wraps channel.ErrBadSignature (401); keys not loaded
// yet are unavailable (503: the platform retries). A token naming a key
// not in the set asks Keep for an early reload.
func (k *Keys) Verify(header string, claims jwt.Claims, opts ...jwt.ParserOption) error {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return fmt.Errorf("%s: no bearer token: %w", k.name, channel.ErrBadSignature)
	}
	kf := k.Keyfunc()
	if kf == nil {
		return kernel.Unavailable("%s: %s are not loaded yet", k.name, k.what)
	}
	opts = append([]jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired()}, opts...)
	if _, err := jwt.ParseWithClaims(raw, claims, kf.Keyfunc, opts...); err != nil {
		k.Rejected(err)
		return fmt.Errorf("%s: token rejected (%v): %w", k.name, err, channel.ErrBadSignature)
	}
	return nil
}

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
