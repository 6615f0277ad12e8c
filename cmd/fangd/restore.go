package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
)

// restoreCommand restores a backup file into a new home, offline: never
// over an existing home, whose data it would otherwise merge with or
// replace. It checks the whole file first, loads it, writes the backup's
// audit anchor and verifies the restored chain against it; on any failure
// it removes what it wrote, so the home is as empty as it was.
type restoreCommand struct{ home, in string }

func (c *restoreCommand) Run(_ context.Context) (err error) {
	if c.in == "" || c.home == "" {
		return errors.New("restore: --in FILE and --home NEWHOME are required")
	}
	header, _, err := store.VerifyBackup(c.in)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", c.in, err)
	}
	h, err := audit.ParseBackupHeader(header)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", c.in, err)
	}
	entries, err := os.ReadDir(c.home)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("restore: %s is not empty: restore into a new, empty home (fangd never restores over data)", c.home)
	}
	if err := os.MkdirAll(c.home, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	lock, err := lockHome(c.home)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer lock.release()
	defer func() {
		if err != nil {
			c.clear()
		}
	}()
	db, err := store.Open(store.DefaultOptions(store.DataDir(c.home)))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	records, err := db.LoadBackup(c.in)
	if err != nil {
		db.Close()
		return fmt.Errorf("restore: %w", err)
	}
	anchor := audit.AnchorPath(c.home)
	if err := audit.WriteAnchor(anchor, h.Anchor()); err != nil {
		db.Close()
		return fmt.Errorf("restore: write the audit anchor: %w", err)
	}
	rep, err := audit.Verify(db.AuditLog(), anchor, 0)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: verify the restored audit chain: %w", err)
	}
	printJSON(map[string]any{"home": c.home, "records": records, "backup_created_at": h.CreatedAt, "audit": rep})
	if !rep.Valid() {
		fmt.Fprintf(os.Stderr, "fangd: the restored audit chain is %s (%s); the restore is undone\n", rep.Status, rep.Error)
		return exitError(1)
	}
	fmt.Fprintf(os.Stderr, "fangd: restored %d records into %s. Secrets in it are encrypted with the old home's vault key: "+
		"copy its vault.key into %s (mode 0600) or set FANGD_VAULT_KEY before `fangd serve`, and copy config.toml if it had one.\n",
		records, c.home, c.home)
	return nil
}

// clear removes everything the restore wrote into the home, which was
// empty when it began, its lock file too (released just after), so that
// the restore can be run again into the same directory.
func (c *restoreCommand) clear() {
	entries, _ := os.ReadDir(c.home)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(c.home, e.Name()))
	}
}
