package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
)

// auditVerifyCommand checks a stopped daemon's audit chain offline. It exits
// 0 when the chain is valid and 1 when it is broken.
type auditVerifyCommand struct{ home string }

func (c *auditVerifyCommand) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	home, err := resolveHome(c.home)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(home+"/config.toml", false)
	if err != nil {
		return err
	}
	lock, err := lockHome(home)
	if err != nil {
		return err
	}
	defer lock.release()
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		return err
	}
	defer db.Close()
	anchor := cfg.Audit.AnchorPath
	if anchor == "" {
		anchor = audit.AnchorPath(home)
	}
	rep, err := audit.Verify(db.AuditLog(), anchor, 0)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
	if !rep.Valid() {
		return exitError(1)
	}
	return nil
}
