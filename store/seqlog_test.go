package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestSeqLogOrderScanAndDeletePrefix(t *testing.T) {
	db, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := NewSeqLog(db, "q/a")
	other := NewSeqLog(db, "q/ab") // a prefix sibling must not be touched
	if _, _, err := l.Last(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty Last: %v", err)
	}
	err = db.Update(func(tx *Txn) error {
		for _, seq := range []uint64{300, 2, 70000, 1} {
			if err := l.Put(tx, seq, []byte(fmt.Sprint(seq))); err != nil {
				return err
			}
		}
		return other.Put(tx, 5, []byte("x"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	l.Scan(2, false, func(s uint64, _ []byte) (bool, error) { got = append(got, s); return true, nil })
	if fmt.Sprint(got) != "[2 300 70000]" {
		t.Fatalf("scan from 2: %v", got)
	}
	if seq, raw, _ := l.Last(); seq != 70000 || string(raw) != "70000" {
		t.Fatalf("last %d %s", seq, raw)
	}
	if err := db.DeletePrefix("q/a/"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Last(); !errors.Is(err, ErrNotFound) {
		t.Fatal("DeletePrefix left entries")
	}
	if raw, err := other.Get(5); err != nil || string(raw) != "x" {
		t.Fatalf("sibling prefix touched: %v", err)
	}
	// Writes from elsewhere keep working (Badger's DropPrefix would block them).
	if err := NewCollection[int](db, "c").Put("k", 1); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Txn) error { return tx.SetTTL([]byte("ttl/k"), []byte("v"), time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Txn) error { _, err := tx.Get([]byte("ttl/k")); return err })
	if err != nil {
		t.Fatal(err)
	}
}
