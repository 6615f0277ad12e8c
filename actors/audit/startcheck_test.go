package audit

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// stoppedWithEntries leaves home with n committed entries and an up-to-date
// anchor, the daemon stopped.
func stoppedWithEntries(t *testing.T, n int) string {
	t.Helper()
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 1, n)
	h.stop()
	return home
}

func offlineVerify(t *testing.T, home string) Report {
	t.Helper()
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := Verify(db.AuditLog(), AnchorPath(home), 0)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestStartRefusesEveryAnchorMismatch(t *testing.T) {
	cases := []struct {
		name   string
		damage func(home string)
		status string
		says   string
	}{
		{"deleted", func(home string) { os.Remove(AnchorPath(home)) }, "missing", "an anchor file at"},
		{"malformed", func(home string) { os.WriteFile(AnchorPath(home), []byte("garbage\n"), 0o600) }, "malformed", "malformed"},
		{"longer (truncated tail)", func(home string) {
			a, _ := ReadAnchor(AnchorPath(home))
			WriteAnchor(AnchorPath(home), Anchor{Length: a.Length + 3, Tip: a.Tip})
		}, "mismatch", "3 entries missing"},
		{"different tip", func(home string) {
			a, _ := ReadAnchor(AnchorPath(home))
			WriteAnchor(AnchorPath(home), Anchor{Length: a.Length, Tip: strings.Repeat("ab", 32)})
		}, "mismatch", "entry 5 with hash abab"},
		{"shorter with a different tip", func(home string) {
			WriteAnchor(AnchorPath(home), Anchor{Length: 2, Tip: strings.Repeat("cd", 32)})
		}, "mismatch", "entry 2 with hash cdcd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := stoppedWithEntries(t, 5)
			c.damage(home)
			before, _ := os.ReadFile(AnchorPath(home))
			_, err := startWith(t, home, Options{})
			var m *Mismatch
			if !errors.As(err, &m) || m.AnchorStatus != c.status || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("start: %v, want a %s mismatch saying %q", err, c.status, c.says)
			}
			after, _ := os.ReadFile(AnchorPath(home))
			if string(before) != string(after) {
				t.Fatalf("refused start rewrote the anchor: %q -> %q", before, after)
			}
			if rep := offlineVerify(t, home); rep.Valid() {
				t.Fatalf("offline verify after a refused start: %+v", rep)
			}
		})
	}
}

func TestDegradedUntilAccepted(t *testing.T) {
	home := stoppedWithEntries(t, 5)
	a, _ := ReadAnchor(AnchorPath(home))
	WriteAnchor(AnchorPath(home), Anchor{Length: a.Length + 2, Tip: a.Tip}) // two entries "lost"

	h, err := startWith(t, home, Options{OnMismatch: OnMismatchDegraded})
	if err != nil {
		t.Fatal(err)
	}
	if st := h.k.Security.State("merkle_audit_trail"); st != kernel.StateDegraded {
		t.Fatalf("merkle_audit_trail = %s in degraded mode", st)
	}
	// Appends go on; the evidence stays, online and offline, also once the
	// chain has grown past the anchor's length.
	appendN(t, h.log, 1, 4)
	rep, _ := h.log.Verify(context.Background())
	if rep.Valid() || rep.StartupMismatch == "" {
		t.Fatalf("online verify while degraded: %+v", rep)
	}
	h.stop()
	if rep := offlineVerify(t, home); rep.Valid() {
		t.Fatalf("offline verify after a degraded run: %+v", rep)
	}
	if _, err := startWith(t, home, Options{}); err == nil {
		t.Fatal("a degraded run made the mismatch go away")
	}

	// What `fangd audit accept` does: record the break, then re-anchor.
	db, _ := store.Open(store.DefaultOptions(store.DataDir(home)))
	_, m, _ := CheckAnchor(db.AuditLog(), AnchorPath(home), db.Fresh())
	e, err := AppendOffline(db.AuditLog(), Event{EventType: "audit_anchor_accepted", Details: m.Error(), Actor: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	WriteAnchor(AnchorPath(home), Anchor{Length: e.ID, Tip: e.Hash})
	db.Close()
	if e.ID != 10 {
		t.Fatalf("accept entry id %d, want 10", e.ID)
	}
	if rep := offlineVerify(t, home); !rep.Valid() || rep.ChainLength != 10 {
		t.Fatalf("offline verify after accept: %+v", rep)
	}
	h2 := start(t, home)
	if rep, _ := h2.log.Verify(context.Background()); !rep.Valid() {
		t.Fatalf("online verify after accept: %+v", rep)
	}
	if st := h2.k.Security.State("merkle_audit_trail"); st != kernel.StateActive {
		t.Fatalf("merkle_audit_trail = %s after accept", st)
	}
	if _, err := h2.log.Append(context.Background(), Event{EventType: "after_accept"}); err != nil {
		t.Fatal(err)
	}
}

func TestFreshStoreWithoutAnchorStarts(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	if a, err := ReadAnchor(AnchorPath(home)); err != nil || a.Length != 0 || a.Tip != Genesis {
		t.Fatalf("anchor of a new home: %+v %v", a, err)
	}
	h.stop()
	// The data dir exists now: a missing anchor is no longer a new install.
	os.Remove(AnchorPath(home))
	if _, err := startWith(t, home, Options{}); err == nil {
		t.Fatal("started without the anchor of an existing store")
	}
}
