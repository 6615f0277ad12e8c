package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"

	"github.com/fangd/fangd/actors/audit"
)

// auditAcceptCommand records an anchor mismatch in the audit log of a
// stopped daemon and only then re-anchors, so that fangd starts again with
// the break on the record: what the anchor expected, what the store held,
// who accepted it and why. It is the only way past a mismatch.
type auditAcceptCommand struct{ home, reason string }

func (c *auditAcceptCommand) Run(_ context.Context) error {
	c.reason = strings.TrimSpace(c.reason)
	if c.reason == "" {
		return errors.New(`audit accept: --reason "..." is required: it is recorded in the audit log`)
	}
	h, err := openHomeOffline(c.home)
	if err != nil {
		return err
	}
	defer h.close()
	log := h.db.AuditLog()
	_, m, err := audit.CheckAnchor(log, h.anchor, h.db.Fresh())
	if err != nil {
		return err
	}
	if m == nil {
		fmt.Fprintln(os.Stderr, "fangd: the audit anchor matches the store: nothing to accept")
		return nil
	}
	who := operatorName()
	ev := audit.AcceptEvent(m, who, c.reason)
	ev.Actor = "operator:" + who
	e, err := audit.AppendOffline(log, ev)
	if err != nil {
		return fmt.Errorf("record the accepted mismatch: %w", err)
	}
	if err := audit.WriteAnchor(h.anchor, audit.Anchor{Length: e.ID, Tip: e.Hash}); err != nil {
		return fmt.Errorf("the mismatch is recorded as entry %d but the anchor could not be written: %w", e.ID, err)
	}
	printJSON(e)
	// The anchor now matches; a chain broken inside (an edited entry) is
	// not the anchor's to accept and still verifies broken.
	if rep, err := audit.Verify(log, h.anchor, 0); err == nil && !rep.Valid() {
		fmt.Fprintf(os.Stderr, "fangd: accepted, but the chain itself is still broken: %s\n", rep.Error)
	}
	return nil
}

// operatorName is who runs the command: the OS user, or $USER.
func operatorName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}
