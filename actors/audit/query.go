package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Filter picks entries for GET /api/audit/query and /api/audit/export.
// A zero field matches every entry.
type Filter struct {
	// Action is an event_type (agent_spawned) or LibreFang's name for
	// the same action (AgentSpawn); see MatchAction.
	Action  string
	AgentID string
	// Actor is who acted (LibreFang's "user" filter).
	Actor   string
	Outcome string
	// From and To bound the timestamp, both inclusive.
	From, To time.Time
	// AfterID and BeforeID bound the id, both exclusive: the cursors a
	// client pages with while the chain grows.
	AfterID, BeforeID uint64
}

// selective reports whether the filter looks inside entries (anything but
// the id bounds): only then must a count read every entry in the range.
func (f Filter) selective() bool {
	return f.Action != "" || f.AgentID != "" || f.Actor != "" || f.Outcome != "" || !f.From.IsZero() || !f.To.IsZero()
}

// libreFangActions maps LibreFang's AuditAction names onto the event
// types fangd records for the same thing, where the two are not the same
// word (BudgetExceeded and budget_exceeded already are, see normAction).
var libreFangActions = map[string]string{
	"agentspawn":    "agentspawned",
	"agentkill":     "agentterminated",
	"toolinvoke":    "toolinvoked",
	"authattempt":   "authfailed",
	"retentiontrim": "auditcheckpoint",
}

// normAction folds case and drops '_', so LibreFang's CamelCase names and
// fangd's snake_case ones compare equal when they are the same words.
func normAction(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "_", "")
}

// MatchAction reports whether eventType is the action a filter names: the
// same words in any case, with or without '_', or LibreFang's name for it.
func MatchAction(filter, eventType string) bool {
	f, e := normAction(filter), normAction(eventType)
	if f == e {
		return true
	}
	alias, ok := libreFangActions[f]
	return ok && alias == e
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Entry) bool {
	if f.AfterID > 0 && e.ID <= f.AfterID || f.BeforeID > 0 && e.ID >= f.BeforeID {
		return false
	}
	if f.AgentID != "" && e.AgentID != f.AgentID || f.Actor != "" && e.Actor != f.Actor ||
		f.Outcome != "" && e.Outcome != f.Outcome {
		return false
	}
	if f.Action != "" && !MatchAction(f.Action, e.EventType) {
		return false
	}
	if !f.From.IsZero() || !f.To.IsZero() {
		// An entry whose timestamp does not parse is outside every
		// explicit range: a corrupt row must not match by accident.
		ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		if err != nil || !f.From.IsZero() && ts.Before(f.From) || !f.To.IsZero() && ts.After(f.To) {
			return false
		}
	}
	return true
}

// Match is one entry a Walker found: decoded, and as stored (so it is
// served without re-encoding).
type Match struct {
	Entry Entry
	Raw   []byte
}

// walkPage is how many stored entries one store read holds: a walk never
// holds more than one page of the chain, however long the chain is.
var walkPage = 256

// Walker pages through the chain as committed when the walk started, one
// bounded store read at a time (each its own short read transaction, so a
// slow client of an export pins no Badger snapshot).
type Walker struct {
	store    *store.AuditLog
	f        Filter
	newest   bool
	next     uint64 // the next id to read
	lo, hi   uint64 // the id range still to walk, inclusive
	done     bool
	pageSize int
	// Pages counts the store reads so far; Held is the most entries one
	// read returned (tests check a long walk stays bounded by the page).
	Pages, Held int
}

// Walk starts a walk over the entries committed now that pass f, newest
// first or oldest first.
func (l *Log) Walk(ctx context.Context, f Filter, newestFirst bool) (*Walker, error) {
	snap, err := kernel.Ask[*SnapshotReply](ctx, l.k, l.pid, &Snapshot{})
	if err != nil {
		return nil, err
	}
	w := &Walker{store: l.store, f: f, newest: newestFirst, lo: 1, hi: snap.Length, pageSize: walkPage}
	if cp, ok, err := l.store.Checkpoint(); err != nil {
		return nil, err
	} else if ok {
		w.lo = cp.Length + 1 // trimmed by retention: archived, not stored
	}
	if f.AfterID >= w.lo {
		w.lo = f.AfterID + 1
	}
	if f.BeforeID > 0 && f.BeforeID-1 < w.hi {
		w.hi = f.BeforeID - 1
	}
	w.done = w.lo > w.hi
	w.next = w.lo
	if newestFirst {
		w.next = w.hi
	}
	return w, nil
}

// Done reports whether the walk has read its whole range.
func (w *Walker) Done() bool { return w.done }

// Count is how many entries in the walk's range pass its filter, known
// without reading them when the filter looks only at ids (ids are dense
// from the first stored entry). ok is false when they must be read.
func (w *Walker) Count() (n uint64, ok bool) {
	if w.f.selective() {
		return 0, false
	}
	if w.lo > w.hi {
		return 0, true
	}
	return w.hi - w.lo + 1, true
}

// Next reads one page of the store and returns the entries in it that pass
// the filter (possibly none: keep calling until Done).
func (w *Walker) Next(ctx context.Context) ([]Match, error) {
	if w.done {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, kernel.Unavailable("audit walk: %v", err)
	}
	var out []Match
	read, last := 0, w.next
	err := w.store.Scan(w.next, w.newest, func(r store.AuditRecord) (bool, error) {
		if r.ID < w.lo || r.ID > w.hi {
			return false, nil
		}
		read++
		last = r.ID
		var m Match
		if err := json.Unmarshal(r.Raw, &m.Entry); err != nil {
			return false, fmt.Errorf("audit entry %d does not decode: %w", r.ID, err)
		}
		if m.Entry.ID != r.ID {
			return false, fmt.Errorf("audit entry stored under %d says id %d", r.ID, m.Entry.ID)
		}
		if w.f.Match(&m.Entry) {
			m.Raw = r.Raw
			out = append(out, m)
		}
		return read < w.pageSize, nil
	})
	if err != nil {
		return nil, err
	}
	w.Pages++
	w.Held = max(w.Held, read)
	switch {
	case read < w.pageSize: // the range (or the stored chain) ended
		w.done = true
	case w.newest && last <= w.lo, !w.newest && last >= w.hi:
		w.done = true
	case w.newest:
		w.next = last - 1
	default:
		w.next = last + 1
	}
	return out, nil
}

// HistoryTrimmed reports whether retention trimmed the chain's oldest
// entries (they are in the archive files, not in the store): a query or
// export then cannot see the whole history.
func (l *Log) HistoryTrimmed() (bool, error) {
	_, ok, err := l.store.Checkpoint()
	return ok, err
}
