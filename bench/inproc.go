package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// inProc is a real store and a kernel in the harness's own process, for
// the scenarios that measure actors without a daemon and HTTP between
// (the store syncs as fangd's does, so commits cost what they cost there).
type inProc struct {
	home string
	db   *store.DB
	k    *kernel.Kernel
}

// startInProc opens a fresh store in a temp home named after pattern
// (removed when env closes) and a kernel beside it. The caller closes it.
func startInProc(env *Env, pattern string) (*inProc, error) {
	home, err := env.tempDir(pattern)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		return nil, err
	}
	return &inProc{home: home, db: db, k: kernel.New(zerolog.Nop())}, nil
}

// close stops the actors first, so none writes to a closed store, then
// closes the store.
func (p *inProc) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.k.Shutdown(ctx)
	p.db.Close()
}

// audit starts the audit log on the store, anchored in the home as
// fangd's is; opts gives the rest.
func (p *inProc) audit(opts audit.Options) (*audit.Log, error) {
	opts.AnchorPath = audit.AnchorPath(p.home)
	return audit.Start(p.k, p.db, opts)
}

// vault opens the secrets vault in the home, as fangd does.
func (p *inProc) vault() (*store.Vault, error) { return store.OpenVault(p.db, p.home) }
