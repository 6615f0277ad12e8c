package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestBackupRoundTripAndRefusals(t *testing.T) {
	want := map[string][]byte{}
	db, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 300 {
		want[fmt.Sprintf("rec/%05d", i)] = smallValue(i)
	}
	if err := db.Update(func(tx *Txn) error {
		for k, v := range want {
			if err := tx.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := db.Backup(&buf, func(tx *Txn) ([]byte, error) {
		v, err := tx.Get([]byte("rec/00007"))
		return []byte(`{"seven":` + string(v) + `}`), err
	})
	if err != nil || n != int64(len(want)) {
		t.Fatalf("backup: %d records, %v", n, err)
	}
	path := filepath.Join(t.TempDir(), "b")
	os.WriteFile(path, buf.Bytes(), 0o600)
	header, records, err := VerifyBackup(path)
	if err != nil || records != n || !bytes.Contains(header, want["rec/00007"]) {
		t.Fatalf("verify: %s %d %v", header, records, err)
	}
	dir := t.TempDir()
	rdb, err := Open(DefaultOptions(filepath.Join(dir, "new")))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.LoadBackup(path); err != nil || got != n {
		t.Fatalf("load: %d %v", got, err)
	}
	rdb.Close()
	got, err := readAll(filepath.Join(dir, "new"))
	if err != nil || len(got) != len(want) {
		t.Fatalf("restored %d of %d records: %v", len(got), len(want), err)
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("%s restored as %q", k, got[k])
		}
	}
	if _, err := db.LoadBackup(path); err == nil {
		t.Fatal("a backup was loaded into a store that has data")
	}

	raw := buf.Bytes()
	for name, bad := range map[string][]byte{
		"truncated at a record": raw[:len(raw)/2],
		"without its checksum":  raw[:len(raw)-sha256Len],
		"one byte short":        raw[:len(raw)-1],
		"empty":                 nil,
		"flipped byte":          flipped(raw, len(raw)/3),
		"trailing bytes":        append(bytes.Clone(raw), 0),
	} {
		os.WriteFile(path, bad, 0o600)
		if _, _, err := VerifyBackup(path); !errors.Is(err, ErrBadBackup) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

const sha256Len = 32

func flipped(raw []byte, at int) []byte {
	c := bytes.Clone(raw)
	c[at] ^= 0x10
	return c
}
