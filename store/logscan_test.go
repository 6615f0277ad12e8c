package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// crashImage copies the files of an open store into a new directory: what
// a kill -9 leaves on disk (the logs are memory-mapped, so the page cache
// the copy reads is what survives the process). The zero tails of the
// preallocated logs stay sparse.
func crashImage(t *testing.T, db *DB) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(db.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "LOCK" || e.Name() == ballastName {
			continue
		}
		raw, size := readData(t, filepath.Join(db.Dir(), e.Name()))
		path := filepath.Join(dst, e.Name())
		if err := os.WriteFile(path, raw[:lastByte(raw)], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// readData reads a file up to its sparse tail, and tells its size.
func readData(t *testing.T, path string) ([]byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	raw := make([]byte, dataEnd(f, fi.Size()))
	if _, err = f.ReadAt(raw, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return raw, fi.Size()
}

// writeAt overwrites bytes of a file in place.
func writeAt(t *testing.T, path string, off int, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// flip changes one byte of a file.
func flip(t *testing.T, path string, off int, mask byte) {
	t.Helper()
	raw, _ := readData(t, path)
	writeAt(t, path, off, []byte{raw[off] ^ mask})
}

// lastByte is one past the last non-zero byte (a word at a time from the
// end: the preallocated tails are long).
func lastByte(raw []byte) int {
	end := len(raw)
	for end >= 8 && binary.LittleEndian.Uint64(raw[end-8:end]) == 0 {
		end -= 8
	}
	for end > 0 && raw[end-1] == 0 {
		end--
	}
	return end
}

// walImages writes n records, one synced transaction each, into a new store
// and returns copies crash images of it, taken while it is open.
func walImages(t *testing.T, n, copies int, value func(i int) []byte) (map[string][]byte, []string) {
	t.Helper()
	db, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[string][]byte{}
	for i := range n {
		k := fmt.Sprintf("rec/%05d", i)
		want[k] = value(i)
		if err := db.Update(func(tx *Txn) error { return tx.Set([]byte(k), want[k]) }); err != nil {
			t.Fatal(err)
		}
	}
	var dirs []string
	for range copies {
		dirs = append(dirs, crashImage(t, db))
	}
	return want, dirs
}

func smallValue(i int) []byte {
	return []byte(fmt.Sprintf(`{"id":%d,"system_prompt":"you are agent number %d, be helpful"}`, i, i))
}

// bigValue is over the value threshold: it goes to the value log.
func bigValue(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("value %d of the value log; ", i)), (1<<20)/20)
}

// sameUpTo checks that every record but the last n-keep is read back unchanged.
func sameUpTo(t *testing.T, dir string, want map[string][]byte, keep int) {
	t.Helper()
	db, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatalf("a crash image does not open: %v", err)
	}
	defer db.Close()
	for i := range keep {
		k := fmt.Sprintf("rec/%05d", i)
		var got []byte
		err := db.View(func(tx *Txn) error {
			var err error
			got, err = tx.Get([]byte(k))
			return err
		})
		if err != nil || !bytes.Equal(got, want[k]) {
			t.Fatalf("acknowledged record %s lost: %v (%d bytes)", k, err, len(got))
		}
	}
}

// refused opens dir, which must fail with a LogDamage naming file, and
// leave file as it was.
func refused(t *testing.T, dir, file string) {
	t.Helper()
	before, _ := os.ReadFile(filepath.Join(dir, file))
	_, err := Open(DefaultOptions(dir))
	var dmg *DamageError
	var ld *LogDamage
	if !errors.As(err, &dmg) || !errors.As(err, &ld) {
		t.Fatalf("a damaged log was opened: %v", err)
	}
	if ld.File != file || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("the refusal does not name %s or the way out: %v", file, err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, file)); !bytes.Equal(before, after) {
		t.Fatal("the damaged log was rewritten")
	}
}

func TestFlippedByteInTheWALIsRefused(t *testing.T) {
	want, dirs := walImages(t, 400, 3, smallValue)
	sameUpTo(t, dirs[0], want, 400) // the image itself is sound

	wal := onlyFile(t, dirs[1], ".mem")
	raw, _ := readData(t, wal)
	flip(t, wal, lastByte(raw)/2, 0x20)
	refused(t, dirs[1], filepath.Base(wal))

	// The file header: Badger would look for an encryption key.
	wal = onlyFile(t, dirs[2], ".mem")
	flip(t, wal, 5, 0x01)
	refused(t, dirs[2], filepath.Base(wal))
}

// A kill -9 in the middle of a write leaves one torn entry and zeros: the
// store opens and keeps everything acknowledged before it.
func TestTornWALTailOpens(t *testing.T) {
	want, dirs := walImages(t, 400, 2, smallValue)
	wal := onlyFile(t, dirs[0], ".mem")
	raw, _ := readData(t, wal)
	end := lastByte(raw)
	if err := os.Truncate(wal, int64(end-3)); err != nil { // mid-entry, file cut short
		t.Fatal(err)
	}
	sameUpTo(t, dirs[0], want, 399)

	wal = onlyFile(t, dirs[1], ".mem")
	writeAt(t, wal, end-7, make([]byte, 7)) // mid-entry, the rest of the preallocated file zero
	sameUpTo(t, dirs[1], want, 399)
}

// Values over the threshold live in the value log, which Badger truncates
// at the first bad entry when it opens.
func TestValueLogDamageIsRefusedAndATornTailOpens(t *testing.T) {
	want, dirs := walImages(t, 6, 3, bigValue)
	vlog := onlyFile(t, dirs[0], ".vlog")
	raw, _ := readData(t, vlog)
	end := lastByte(raw)
	if end < 5<<20 {
		t.Fatalf("the big values are not in the value log (%d bytes)", end)
	}
	sameUpTo(t, dirs[0], want, 6)

	vlog = onlyFile(t, dirs[1], ".vlog")
	flip(t, vlog, end/3, 0x01)
	refused(t, dirs[1], filepath.Base(vlog))

	vlog = onlyFile(t, dirs[2], ".vlog")
	if err := os.Truncate(vlog, int64(end-1000)); err != nil {
		t.Fatal(err)
	}
	sameUpTo(t, dirs[2], want, 5)
}
