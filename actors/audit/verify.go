package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fangd/fangd/store"
)

// Report is the result of walking the chain. It is the body of
// GET /api/audit/verify and what `fangd audit verify` prints.
type Report struct {
	Status       string  `json:"status"` // "valid" or "broken"
	ChainLength  uint64  `json:"chain_length"`
	FirstEntry   *string `json:"first_entry"`
	LastEntry    *string `json:"last_entry"`
	TipHash      string  `json:"tip_hash"`
	AnchorStatus string  `json:"anchor_status"` // "ok", "missing", "mismatch", "malformed"
	BrokenAt     uint64  `json:"broken_at,omitempty"`
	Error        string  `json:"error,omitempty"`
	// StartupMismatch is the anchor mismatch the daemon started with in
	// degraded mode, until `fangd audit accept` records it.
	StartupMismatch string `json:"startup_mismatch,omitempty"`
	// TrimmedLength is how many of the oldest entries retention removed
	// (exported first); the walk starts after them, from the checkpoint.
	TrimmedLength uint64 `json:"trimmed_length"`
}

// checkpointClaim is what an audit_checkpoint entry's details say about
// the trimmed prefix, so that the chain commits to it.
func checkpointClaim(cp store.AuditCheckpoint) string {
	return fmt.Sprintf("trimmed_length=%d trimmed_tip=%s", cp.Length, cp.Tip)
}

// Valid reports whether the chain verified.
func (r Report) Valid() bool { return r.Status == "valid" }

// Verify walks the stored chain from entry 1 and checks every link and
// hash, then checks the anchor file at anchorPath. expectLen is the length
// the caller knows to be committed (0 when unknown, as offline); a chain
// shorter than that, or than the anchor, is broken.
func Verify(log *store.AuditLog, anchorPath string, expectLen uint64) (Report, error) {
	anchor, anchorErr := ReadAnchor(anchorPath)
	rep := Report{Status: "valid", TipHash: Genesis, AnchorStatus: "ok"}
	cp, trimmed, err := log.Checkpoint()
	if err != nil {
		return Report{}, err
	}
	if trimmed {
		rep.TrimmedLength = cp.Length
	}
	prev, next := Genesis, uint64(1)
	var anchorTip string
	first, sawCheckpoint := true, false
	err = log.Scan(0, false, func(r store.AuditRecord) (bool, error) {
		var e Entry
		if err := json.Unmarshal(r.Raw, &e); err != nil {
			return rep.breakAt(r.ID, "entry %d does not decode: %v", r.ID, err), nil
		}
		if first && r.ID > 1 && trimmed && r.ID <= cp.Length+1 {
			// The chain starts after a trimmed prefix (retention): its
			// first link is checked against the checkpoint's tip, or,
			// when a trim stopped part way, entry cp.Length is below.
			next = r.ID
			if r.ID == cp.Length+1 {
				prev = cp.Tip
			} else {
				prev = e.PrevHash
			}
		}
		first = false
		if r.ID != next || e.ID != r.ID {
			return rep.breakAt(next, "entry %d is missing (found %d)", next, r.ID), nil
		}
		if e.PrevHash != prev {
			return rep.breakAt(e.ID, "chain break at entry %d: expected prev_hash %s but found %s", e.ID, prev, e.PrevHash), nil
		}
		if h := Hash(&e); h != e.Hash {
			return rep.breakAt(e.ID, "hash mismatch at entry %d: expected %s but found %s", e.ID, h, e.Hash), nil
		}
		if trimmed && e.ID == cp.Length && e.Hash != cp.Tip {
			return rep.breakAt(e.ID, "retention checkpoint mismatch: it records hash %s for entry %d but the log has %s", cp.Tip, e.ID, e.Hash), nil
		}
		if trimmed && e.ID == cp.Entry {
			if e.EventType != "audit_checkpoint" || !strings.Contains(e.Details, checkpointClaim(cp)) {
				return rep.breakAt(e.ID, "entry %d is not the audit_checkpoint that commits to the trimmed prefix (%s)", e.ID, checkpointClaim(cp)), nil
			}
			sawCheckpoint = true
		}
		if rep.FirstEntry == nil {
			ts := e.Timestamp
			rep.FirstEntry = &ts
		}
		if anchorErr == nil && e.ID == anchor.Length {
			anchorTip = e.Hash
		}
		ts := e.Timestamp
		rep.LastEntry = &ts
		rep.ChainLength, rep.TipHash = e.ID, e.Hash
		prev, next = e.Hash, e.ID+1
		return true, nil
	})
	if err != nil {
		return Report{}, err
	}
	if rep.Valid() && first && trimmed {
		rep.breakAt(cp.Length+1, "the chain was trimmed through entry %d but no entry after it is stored", cp.Length)
	}
	if rep.Valid() && trimmed && !sawCheckpoint {
		rep.breakAt(cp.Entry, "the audit_checkpoint entry %d that commits to the trimmed prefix is missing", cp.Entry)
	}
	if rep.Valid() && expectLen > rep.ChainLength {
		rep.breakAt(rep.ChainLength+1, "chain truncated: %d entries committed but only %d stored", expectLen, rep.ChainLength)
	}
	rep.checkAnchor(anchor, anchorErr, anchorTip)
	return rep, nil
}

// markMismatch reports the chain broken by the mismatch found at start-up,
// whatever the walk found since: the anchor file may no longer show it (a
// missing anchor's chain was empty), the daemon still knows.
func (r *Report) markMismatch(m *Mismatch) {
	r.StartupMismatch = m.Error()
	if r.Valid() {
		r.Status, r.Error, r.AnchorStatus = "broken", m.Error(), m.AnchorStatus
		r.BrokenAt = r.ChainLength
	}
}

func (r *Report) breakAt(id uint64, format string, args ...any) bool {
	r.Status, r.BrokenAt, r.Error = "broken", id, fmt.Sprintf(format, args...)
	return false
}

func (r *Report) checkAnchor(a Anchor, readErr error, tipAtAnchor string) {
	switch {
	case errors.Is(readErr, ErrNoAnchor):
		r.AnchorStatus = "missing"
		if r.Valid() && r.ChainLength > 0 {
			r.breakAt(r.ChainLength, "%v", readErr)
		}
	case readErr != nil:
		r.AnchorStatus = "malformed"
		if r.Valid() {
			r.breakAt(r.ChainLength, "%v", readErr)
		}
	case a.Length > r.ChainLength:
		r.AnchorStatus = "mismatch"
		if r.Valid() {
			r.breakAt(r.ChainLength+1, "chain truncated: anchor records %d entries but the log has %d", a.Length, r.ChainLength)
		}
	case a.Length == 0 && a.Tip != Genesis, a.Length > 0 && tipAtAnchor != a.Tip:
		r.AnchorStatus = "mismatch"
		if r.Valid() {
			r.breakAt(a.Length, "audit anchor mismatch: anchor says entry %d has hash %s but the log has %s", a.Length, a.Tip, tipAtAnchor)
		}
	}
}
