package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// retentionInterval is how often the retention goroutine looks at the
// chain's length.
const retentionInterval = 10 * time.Minute

// Trim applies retention: when more than retain entries are stored, it
// keeps the newest retain and removes the older ones so that what remains
// still verifies. In order, each step safe to stop after:
//
//  1. export the prefix to archiveDir/audit-<first>-<last>.jsonl (the
//     stored JSON, one entry per line; written, synced, renamed);
//  2. append an audit_checkpoint entry that commits to the prefix's length
//     and tip hash;
//  3. record the checkpoint in the store (Verify walks from it);
//  4. delete the prefix.
//
// It returns how many entries it removed.
func (l *Log) Trim(ctx context.Context, retain uint64, archiveDir string) (uint64, error) {
	return l.TrimPolicy(ctx, Retention{Entries: retain}, archiveDir, time.Now())
}

// Retention is what the chain keeps: at most Entries entries (0: no
// count limit) and none older than MaxAge (0: no age limit). An entry
// goes when either says so.
type Retention struct {
	Entries uint64
	MaxAge  time.Duration
}

func (r Retention) on() bool { return r.Entries > 0 || r.MaxAge > 0 }

// TrimPolicy is Trim for a whole Retention, ages measured from now: the
// prefix removed (exported, checkpointed, deleted, as Trim does) is the
// longer of the one beyond r.Entries and the run of oldest entries whose
// timestamp is before now-r.MaxAge.
func (l *Log) TrimPolicy(ctx context.Context, r Retention, archiveDir string, now time.Time) (uint64, error) {
	if !r.on() {
		return 0, nil
	}
	if l.broken.Load() != nil {
		return 0, errors.New("audit retention is paused while the anchor mismatch is not accepted")
	}
	snap, err := kernel.Ask[*SnapshotReply](ctx, l.k, l.pid, &Snapshot{})
	if err != nil {
		return 0, err
	}
	cp, _, err := l.store.Checkpoint()
	if err != nil {
		return 0, err
	}
	first := cp.Length + 1
	var last uint64
	if r.Entries > 0 && snap.Length > r.Entries {
		last = snap.Length - r.Entries
	}
	if r.MaxAge > 0 {
		old, err := olderThan(l.store, first, snap.Length, now.Add(-r.MaxAge))
		if err != nil {
			return 0, err
		}
		last = max(last, old)
	}
	// The anchor file follows the commits asynchronously and may still
	// name an entry the prefix holds: trimming that entry would make
	// verify (and the next start) report an anchor mismatch. The anchored
	// entry and everything after it stay; a later round trims the rest.
	if l.anchorPath != "" {
		a, err := ReadAnchor(l.anchorPath)
		if err != nil {
			return 0, fmt.Errorf("read the audit anchor: %w", err)
		}
		if a.Length <= last {
			last = a.Length - 1
		}
	}
	if last < first {
		return 0, nil
	}
	tip, file, err := exportPrefix(l.store, first, last, archiveDir)
	if err != nil {
		return 0, fmt.Errorf("export the audit prefix: %w", err)
	}
	next := store.AuditCheckpoint{Length: last, Tip: tip}
	ctx, cancel := context.WithTimeout(context.Background(), AppendTimeout)
	e, err := l.Append(ctx, Event{EventType: "audit_checkpoint", Actor: "daemon",
		Details: fmt.Sprintf("retention: entries %d..%d trimmed, exported to %s; %s", first, last, file, checkpointClaim(next))})
	cancel()
	if err != nil {
		return 0, err
	}
	next.Entry = e.ID
	if err := l.store.SetCheckpoint(next); err != nil {
		return 0, err
	}
	if err := l.store.DeleteThrough(last); err != nil {
		return 0, err
	}
	return last - first + 1, nil
}

// olderThan is the id of the last entry of the run from first (up to
// length) whose timestamps are before cutoff; first-1 when there is none.
// The run ends at the first entry that is not older, so one entry with a
// clock set back cannot take newer entries with it.
func olderThan(log *store.AuditLog, first, length uint64, cutoff time.Time) (uint64, error) {
	last := first - 1
	err := log.Scan(first, false, func(r store.AuditRecord) (bool, error) {
		if r.ID > length {
			return false, nil
		}
		var e struct {
			Timestamp string `json:"timestamp"`
		}
		if err := json.Unmarshal(r.Raw, &e); err != nil {
			return false, fmt.Errorf("entry %d does not decode: %w", r.ID, err)
		}
		ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		if err != nil || !ts.Before(cutoff) {
			return false, nil
		}
		last = r.ID
		return true, nil
	})
	return last, err
}

// exportPrefix writes entries first..last as JSON lines and returns the
// hash of entry last and the file's name.
func exportPrefix(log *store.AuditLog, first, last uint64, dir string) (tip, name string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	name = filepath.Join(dir, fmt.Sprintf("audit-%d-%d.jsonl", first, last))
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", "", err
	}
	defer os.Remove(tmp)
	want := first
	err = log.Scan(first, false, func(r store.AuditRecord) (bool, error) {
		if r.ID > last {
			return false, nil
		}
		if r.ID != want {
			return false, fmt.Errorf("entry %d is missing", want)
		}
		var e Entry
		if err := json.Unmarshal(r.Raw, &e); err != nil {
			return false, fmt.Errorf("entry %d does not decode: %w", r.ID, err)
		}
		tip, want = e.Hash, want+1
		if _, err := f.Write(append(r.Raw, '\n')); err != nil {
			return false, err
		}
		return true, nil
	})
	if err == nil && want != last+1 {
		err = fmt.Errorf("entry %d is missing", want)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	return tip, name, err
}

// startRetention trims at start and then every retentionInterval until
// stop is closed.
func (l *Log) startRetention(retain Retention, archiveDir string) {
	if !retain.on() {
		return
	}
	stop := make(chan struct{})
	l.stopRetention = stop
	go func() {
		t := time.NewTicker(retentionInterval)
		defer t.Stop()
		// Stop ends a round in progress too.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-stop
			cancel()
		}()
		for {
			if n, err := l.TrimPolicy(ctx, retain, archiveDir, time.Now()); err != nil {
				l.k.Log.Error().Err(err).Str("component", "audit").Msg("audit retention failed; nothing was removed that is not exported")
			} else if n > 0 {
				l.k.Log.Info().Str("component", "audit").Uint64("trimmed", n).Str("archive", archiveDir).Msg("audit retention trimmed the oldest entries")
			}
			select {
			case <-t.C:
			case <-stop:
				return
			}
		}
	}()
}
