package store

import (
	"path/filepath"
	"testing"
)

func TestEachOrQuarantineMovesUndecodableRecordsAside(t *testing.T) {
	db, err := Open(DefaultOptions(filepath.Join(t.TempDir(), "data")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type rec struct{ N int }
	c := NewCollection[rec](db, "things")
	c.Put("a", rec{1})
	c.Put("c", rec{3})
	db.Update(func(tx *Txn) error { return tx.Set([]byte("things/b"), []byte(`{"N":`)) })

	var seen []string
	q, err := c.EachOrQuarantine(func(id string, r rec) bool { seen = append(seen, id); return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != "a" || seen[1] != "c" {
		t.Fatalf("good records seen: %v", seen)
	}
	if len(q) != 1 || q[0].Key != "things/b" || q[0].Error == "" {
		t.Fatalf("quarantined: %+v", q)
	}
	if _, err := c.Get("b"); err != ErrNotFound {
		t.Fatalf("bad record still in place: %v", err)
	}
	var kept []byte
	db.View(func(tx *Txn) error { kept, err = tx.Get([]byte("quarantine/things/b")); return err })
	if string(kept) != `{"N":` {
		t.Fatalf("quarantined value: %q", kept)
	}
	keys, total, err := db.QuarantinedKeys(10)
	if err != nil || total != 1 || keys[0] != "things/b" {
		t.Fatalf("QuarantinedKeys: %v %d %v", keys, total, err)
	}
	// The next load is clean.
	if q, err := c.EachOrQuarantine(func(string, rec) bool { return true }); err != nil || len(q) != 0 {
		t.Fatalf("second load: %+v %v", q, err)
	}
}
