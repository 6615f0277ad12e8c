package audit

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
)

func TestRetentionTrimsAndTheRestVerifies(t *testing.T) {
	home := t.TempDir()
	archive := filepath.Join(home, "audit-archive")
	h := start(t, home)
	appendN(t, h.log, 1, 30)
	n, err := h.log.Trim(10, archive)
	if err != nil || n != 20 {
		t.Fatalf("trim: %d %v", n, err)
	}
	rep, _ := h.log.Verify()
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
	if n, err := h.log.Trim(10, archive); err != nil || n != 21 {
		t.Fatalf("second trim: %d %v", n, err)
	}
	h.stop()
	if rep := offlineVerify(t, home); !rep.Valid() || rep.TrimmedLength != 41 || rep.ChainLength != 52 {
		t.Fatalf("offline after trims: %+v", rep)
	}
	// Restart: the anchor still matches, the chain goes on.
	h2 := start(t, home)
	appendN(t, h2.log, 1, 1)
	if rep, _ := h2.log.Verify(); !rep.Valid() || rep.ChainLength != 53 {
		t.Fatalf("after restart: %+v", rep)
	}
	// Deleting beyond the checkpoint is seen.
	h2.db.AuditLog().Remove(43)
	if rep, _ := h2.log.Verify(); rep.Valid() {
		t.Fatalf("an entry after the checkpoint was removed, verify says %+v", rep)
	}
}
