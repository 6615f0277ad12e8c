package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fangd/fangd/store"
)

// Mismatch is how the anchor and the stored chain disagree when fangd
// starts: the evidence that entries were removed or rewritten, or that the
// store lost acknowledged writes. It is never rewritten away by a restart:
// fangd refuses to start, or starts degraded, until an operator accepts it
// with `fangd audit accept`, which records it in the chain.
type Mismatch struct {
	// AnchorStatus is Report.AnchorStatus: "missing", "malformed" or "mismatch".
	AnchorStatus string
	// Expected is what the anchor records; Found is what the store holds.
	Expected, Found string
}

func (m *Mismatch) Error() string {
	return fmt.Sprintf("audit anchor %s: expected %s, found %s", m.AnchorStatus, m.Expected, m.Found)
}

// storedTip is the stored chain's length and newest hash.
func storedTip(log *store.AuditLog) (Anchor, error) {
	return tipOf(log.Last())
}

// TipIn is the chain's length and newest hash in tx's snapshot.
func TipIn(log *store.AuditLog, tx *store.Txn) (Anchor, error) {
	return tipOf(log.LastIn(tx))
}

func tipOf(last store.AuditRecord, err error) (Anchor, error) {
	if errors.Is(err, store.ErrNotFound) {
		return Anchor{Length: 0, Tip: Genesis}, nil
	}
	if err != nil {
		return Anchor{}, err
	}
	var e Entry
	if err := json.Unmarshal(last.Raw, &e); err != nil {
		return Anchor{Length: last.ID, Tip: "(entry does not decode)"}, nil
	}
	return Anchor{Length: last.ID, Tip: e.Hash}, nil
}

// hashAt is the stored hash of entry id, "" when it is absent.
func hashAt(log *store.AuditLog, id uint64) (string, error) {
	var hash string
	err := log.Scan(id, false, func(r store.AuditRecord) (bool, error) {
		if r.ID == id {
			var e Entry
			if json.Unmarshal(r.Raw, &e) != nil {
				hash = "(entry does not decode)"
			} else {
				hash = e.Hash
			}
		}
		return false, nil
	})
	return hash, err
}

// CheckAnchor compares the anchor at anchorPath with the stored chain. It
// returns the chain's current (length, tip), and a Mismatch when the anchor
// is missing (unless fresh: a new store, nothing ever written), malformed,
// longer than the chain, or names a different hash for its entry. An
// anchor behind the chain whose entry matches is not a mismatch: the
// daemon stopped between a commit and the anchor write.
func CheckAnchor(log *store.AuditLog, anchorPath string, fresh bool) (Anchor, *Mismatch, error) {
	cur, err := storedTip(log)
	if err != nil {
		return Anchor{}, nil, err
	}
	found := func() string {
		if cur.Length == 0 {
			return "an empty audit log"
		}
		return cur.String()
	}
	a, err := ReadAnchor(anchorPath)
	switch {
	case errors.Is(err, ErrNoAnchor):
		if fresh && cur.Length == 0 {
			return cur, nil, nil
		}
		return cur, &Mismatch{AnchorStatus: "missing", Expected: "an anchor file at " + anchorPath, Found: found()}, nil
	case err != nil:
		return cur, &Mismatch{AnchorStatus: "malformed", Expected: "a readable anchor (" + err.Error() + ")", Found: found()}, nil
	case a.Length > cur.Length:
		return cur, &Mismatch{AnchorStatus: "mismatch",
			Expected: a.String(),
			Found:    found() + fmt.Sprintf(" (%d entries missing)", a.Length-cur.Length)}, nil
	case a.Length == 0:
		if a.Tip != Genesis {
			return cur, &Mismatch{AnchorStatus: "mismatch", Expected: "0 entries with tip " + a.Tip, Found: found()}, nil
		}
		return cur, nil, nil
	}
	h, err := hashAt(log, a.Length)
	if err != nil {
		return cur, nil, err
	}
	if h != a.Tip {
		if h == "" {
			h = "(absent)"
		}
		return cur, &Mismatch{AnchorStatus: "mismatch",
			Expected: fmt.Sprintf("entry %d with hash %s", a.Length, a.Tip),
			Found:    fmt.Sprintf("entry %d with hash %s, in %s", a.Length, h, found())}, nil
	}
	return cur, nil, nil
}

// AcceptEvent is the entry that records an accepted anchor mismatch: what
// the anchor expected, what the store held, who accepted it and why. The
// offline `fangd audit accept` and POST /api/audit/accept append the same.
func AcceptEvent(m *Mismatch, who, reason string) Event {
	return Event{
		EventType: "audit_anchor_accepted",
		Details: fmt.Sprintf("audit anchor %s accepted by %s: expected %s; found %s; reason: %s",
			m.AnchorStatus, who, m.Expected, m.Found, reason),
		Outcome: "ok",
		Actor:   who,
	}
}

// AppendOffline chains one event onto the stored log of a stopped daemon
// and returns the entry. Only `fangd audit accept` uses it: while the
// daemon runs, the writer actor is the only one that appends.
func AppendOffline(log *store.AuditLog, ev Event) (Entry, error) {
	cur, err := storedTip(log)
	if err != nil {
		return Entry{}, err
	}
	if len(cur.Tip) != len(Genesis) {
		return Entry{}, fmt.Errorf("the newest audit entry %d does not decode: nothing can be chained onto it", cur.Length)
	}
	e, raw := newEntry(cur.Length+1, cur.Tip, ev)
	if err := log.Append([]store.AuditRecord{{ID: e.ID, Raw: raw}}); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// newEntry builds entry id of the chain after prev.
func newEntry(id uint64, prev string, ev Event) (Entry, []byte) {
	e := chainEntry(id, prev, ev)
	raw, _ := marshalEntry(&e)
	return e, raw
}

// chainEntry is entry id of the chain after prev, hashed.
func chainEntry(id uint64, prev string, ev Event) Entry {
	e := Entry{
		ID:        id,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
		EventType: clean(ev.EventType),
		AgentID:   clean(orDefault(ev.AgentID, "system")),
		Details:   clean(ev.Details),
		Outcome:   clean(orDefault(ev.Outcome, "ok")),
		Actor:     clean(ev.Actor),
		SourceIP:  clean(ev.SourceIP),
		PrevHash:  prev,
	}
	e.Hash = Hash(&e)
	return e
}
