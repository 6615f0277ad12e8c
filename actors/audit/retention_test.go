package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

func TestRetentionTrimsAndTheRestVerifies(t *testing.T) {
	home := t.TempDir()
	archive := filepath.Join(home, "audit-archive")
	h := start(t, home)
	appendN(t, h.log, 1, 30)
	waitAnchor(t, home, 30) // the anchored entry is never trimmed
	n, err := h.log.Trim(context.Background(), 10, archive)
	if err != nil || n != 20 {
		t.Fatalf("trim: %d %v", n, err)
	}
	rep, _ := h.log.Verify(context.Background())
	if !rep.Valid() || rep.TrimmedLength != 20 || rep.ChainLength != 31 {
		t.Fatalf("after trim: %+v", rep)
	}
	f, err := os.Open(filepath.Join(archive, "audit-1-20.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
	}
	f.Close()
	if lines != 20 {
		t.Fatalf("archive has %d lines", lines)
	}
	// A second trim starts where the first ended.
	appendN(t, h.log, 1, 20)
	waitAnchor(t, home, 51)
	if n, err := h.log.Trim(context.Background(), 10, archive); err != nil || n != 21 {
		t.Fatalf("second trim: %d %v", n, err)
	}
	h.stop()
	if rep := offlineVerify(t, home); !rep.Valid() || rep.TrimmedLength != 41 || rep.ChainLength != 52 {
		t.Fatalf("offline after trims: %+v", rep)
	}
	// Restart: the anchor still matches, the chain goes on.
	h2 := start(t, home)
	appendN(t, h2.log, 1, 1)
	if rep, _ := h2.log.Verify(context.Background()); !rep.Valid() || rep.ChainLength != 53 {
		t.Fatalf("after restart: %+v", rep)
	}
	// Deleting beyond the checkpoint is seen.
	h2.db.AuditLog().Remove(43)
	if rep, _ := h2.log.Verify(context.Background()); rep.Valid() {
		t.Fatalf("an entry after the checkpoint was removed, verify says %+v", rep)
	}
}

// [audit] retain_days: entries older than the age are trimmed the same
// way as beyond retain_entries (exported, checkpointed), and the rest
// verifies online and offline.
func TestRetentionByAge(t *testing.T) {
	home := t.TempDir()
	archive := filepath.Join(home, "audit-archive")
	h := start(t, home)
	appendN(t, h.log, 1, 10)
	time.Sleep(5 * time.Millisecond) // wall-clock ordering, not a timing assertion
	cutoff := time.Now()
	time.Sleep(5 * time.Millisecond)
	appendN(t, h.log, 1, 5)
	waitAnchor(t, h.home, 15)
	day := 24 * time.Hour
	// Nothing is older than a day.
	if n, err := h.log.TrimPolicy(context.Background(), Retention{MaxAge: day}, archive, cutoff.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("young chain: %d %v", n, err)
	}
	// A day after the cutoff, the ten entries before it (and only those)
	// are older than a day.
	n, err := h.log.TrimPolicy(context.Background(), Retention{MaxAge: day, Entries: 1000}, archive, cutoff.Add(day))
	if err != nil || n != 10 {
		t.Fatalf("trim by age: %d %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(archive, "audit-1-10.jsonl")); err != nil {
		t.Fatal(err)
	}
	rep, _ := h.log.Verify(context.Background())
	if !rep.Valid() || rep.TrimmedLength != 10 || rep.ChainLength != 16 {
		t.Fatalf("after trim: %+v", rep)
	}
	// The count limit still applies when it trims more than the age.
	waitAnchor(t, h.home, 16)
	if n, err := h.log.TrimPolicy(context.Background(), Retention{MaxAge: day, Entries: 2}, archive, cutoff.Add(day)); err != nil || n != 4 {
		t.Fatalf("count over age: %d %v", n, err)
	}
	h.stop()
	if rep := offlineVerify(t, home); !rep.Valid() || rep.TrimmedLength != 14 || rep.ChainLength != 17 {
		t.Fatalf("offline after trims: %+v", rep)
	}
}

// waitAnchor waits until the anchor file (written behind the commits)
// records n entries.
func waitAnchor(t *testing.T, home string, n uint64) {
	t.Helper()
	kerneltest.WaitFor(t, "anchor", func() bool {
		a, err := ReadAnchor(AnchorPath(home))
		return err == nil && a.Length >= n
	})
}

// The anchor file lags the commits: retention never trims the entry it
// names (verify would then report an anchor mismatch, and the next start
// refuse), even when the policy asks for everything.
func TestRetentionKeepsTheAnchoredEntry(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 1, 5)
	waitAnchor(t, home, 5)
	// Make the anchor lag as it can between a commit and its write: it
	// names entry 3 (no append follows, so the writer leaves it there).
	var tip3 string
	h.db.AuditLog().Scan(3, false, func(r store.AuditRecord) (bool, error) {
		var e Entry
		err := json.Unmarshal(r.Raw, &e)
		tip3 = e.Hash
		return false, err
	})
	if err := WriteAnchor(AnchorPath(home), Anchor{Length: 3, Tip: tip3}); err != nil {
		t.Fatal(err)
	}
	n, err := h.log.TrimPolicy(context.Background(), Retention{Entries: 1}, filepath.Join(home, "audit-archive"), time.Now())
	if err != nil || n != 2 {
		t.Fatalf("trim: %d %v", n, err)
	}
	if rep, _ := h.log.Verify(context.Background()); !rep.Valid() || rep.TrimmedLength != 2 {
		t.Fatalf("after trim: %+v", rep)
	}
}
