package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fillAndClose writes n records into a new store in dir and closes it, so
// that they sit in a table file (Close flushes the memtable).
func fillAndClose(t *testing.T, dir string, n int) map[string][]byte {
	t.Helper()
	db, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	err = db.Update(func(tx *Txn) error {
		for i := range n {
			k := fmt.Sprintf("rec/%05d", i)
			v := []byte(fmt.Sprintf(`{"id":%d,"system_prompt":"you are agent number %d, be helpful"}`, i, i))
			want[k] = v
			if err := tx.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

func onlyFile(t *testing.T, dir, ext string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	if len(m) != 1 {
		t.Fatalf("want one %s file in %s, have %v", ext, dir, m)
	}
	return m[0]
}

// readAll opens dir and reads every record back; it returns the first error.
func readAll(dir string) (map[string][]byte, error) {
	db, err := Open(DefaultOptions(dir))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	got := map[string][]byte{}
	err = db.View(func(tx *Txn) error {
		return tx.Iterate([]byte("rec/"), nil, false, func(k, v []byte) (bool, error) {
			got[string(k)] = v
			return true, nil
		})
	})
	return got, err
}

// A flipped byte in a table is an error, never different data.
func TestFlippedByteInTableIsDetected(t *testing.T) {
	for _, at := range []float64{0.1, 0.3, 0.5, 0.7} {
		dir := t.TempDir()
		want := fillAndClose(t, dir, 2000)
		sst := onlyFile(t, dir, ".sst")
		raw, _ := os.ReadFile(sst)
		off := int(float64(len(raw)) * at)
		raw[off] ^= 0x5a
		os.WriteFile(sst, raw, 0o600)
		got, err := readAll(dir)
		if err != nil {
			continue // detected
		}
		if len(got) != len(want) {
			t.Errorf("byte %d flipped: %d of %d records read back, no error", off, len(got), len(want))
			continue
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Errorf("byte %d flipped: %s reads %q, no error", off, k, got[k])
			}
		}
	}
}

// A truncated table is an error naming the store, not a panic.
func TestTruncatedTableIsAnError(t *testing.T) {
	dir := t.TempDir()
	fillAndClose(t, dir, 2000)
	sst := onlyFile(t, dir, ".sst")
	fi, _ := os.Stat(sst)
	if err := os.Truncate(sst, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	_, err := readAll(dir)
	var de *DamageError
	if err == nil {
		t.Fatal("truncated table read without error")
	}
	if !errors.As(err, &de) && !strings.Contains(err.Error(), "rec/") {
		t.Fatalf("error does not say what is damaged: %v", err)
	}
}

// Without its MANIFEST Badger would delete every table and start empty.
func TestMissingManifestIsRefused(t *testing.T) {
	dir := t.TempDir()
	fillAndClose(t, dir, 10)
	os.Remove(filepath.Join(dir, "MANIFEST"))
	_, err := Open(DefaultOptions(dir))
	var de *DamageError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "MANIFEST is missing") {
		t.Fatalf("open without MANIFEST: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.sst")); len(m) == 0 {
		t.Fatal("the tables were deleted")
	}
}

func TestFreshReportsANewDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	if !db.Fresh() {
		t.Fatal("a new data dir is not fresh")
	}
	db.Close()
	db, err = Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Fresh() {
		t.Fatal("a reopened data dir is fresh")
	}
}
