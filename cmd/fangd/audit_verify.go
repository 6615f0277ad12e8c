package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
)

// auditVerifyCommand checks a stopped daemon's audit chain offline. It exits
// 0 when the chain is valid and 1 when it is broken.
type auditVerifyCommand struct{ home string }

func (c *auditVerifyCommand) Run(_ context.Context) error {
	h, err := openHomeOffline(c.home)
	if err != nil {
		return err
	}
	defer h.close()
	rep, err := audit.Verify(h.db.AuditLog(), h.anchor, 0)
	if err != nil {
		return err
	}
	printJSON(rep)
	if !rep.Valid() {
		return exitError(1)
	}
	return nil
}

// offlineHome is a stopped daemon's home, locked and with its store open,
// for the offline audit commands.
type offlineHome struct {
	home, anchor string
	lock         *homeLock
	db           *store.DB
}

func openHomeOffline(flagHome string) (_ *offlineHome, err error) {
	home, err := resolveHome(flagHome)
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(filepath.Join(home, "config.toml"), false)
	if err != nil {
		return nil, err
	}
	// A home that never ran has nothing to check; opening the store
	// would create an empty one.
	if _, err := os.Stat(store.DataDir(home)); err != nil {
		return nil, fmt.Errorf("no fangd store in %s: %w", home, err)
	}
	h := &offlineHome{home: home, anchor: cfg.Audit.AnchorPath}
	if h.anchor == "" {
		h.anchor = audit.AnchorPath(home)
	}
	if h.lock, err = lockHome(home); err != nil {
		return nil, err
	}
	if h.db, err = store.Open(store.DefaultOptions(store.DataDir(home))); err != nil {
		h.lock.release()
		return nil, err
	}
	return h, nil
}

func (h *offlineHome) close() {
	h.db.Close()
	h.lock.release()
}

func printJSON(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
