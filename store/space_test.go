package store

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeDisk is a filesystem whose free space the test sets.
type fakeDisk struct{ free, total atomic.Uint64 }

func (f *fakeDisk) statfs(string) (uint64, uint64, error) { return f.free.Load(), f.total.Load(), nil }

func TestWritesRefusedBelowReserveAndResume(t *testing.T) {
	disk := &fakeDisk{}
	disk.total.Store(10 << 30)
	disk.free.Store(1 << 30)
	var mu sync.Mutex
	var changes []SpaceState
	opts := DefaultOptions(t.TempDir())
	opts.StatFS = disk.statfs
	opts.OnSpaceChange = func(s SpaceState) { mu.Lock(); changes = append(changes, s); mu.Unlock() }
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	set := func(k string) error {
		return db.Write(func(tx *Txn) error { return tx.Set([]byte(k), []byte("v")) })
	}
	if err := set("a"); err != nil {
		t.Fatal(err)
	}

	// Below the reserve: writes fail at once with the store's error,
	// whichever door they take, even though the last measurement was
	// recent (a nearly used-up budget makes the guard measure again).
	disk.free.Store(DefaultMinFreeBytes - 1)
	db.space.markLow()
	err = set("b")
	var se *StorageError
	if !errors.Is(err, ErrInsufficientStorage) || !errors.As(err, &se) || se.Reserve != DefaultMinFreeBytes {
		t.Fatalf("write below the reserve: %v", err)
	}
	if err := db.Update(func(tx *Txn) error { return tx.Set([]byte("c"), nil) }); !errors.Is(err, ErrInsufficientStorage) {
		t.Fatalf("Update below the reserve: %v", err)
	}
	// Reads, the audit log and deletes keep working down to the floor (a quarter of the reserve here).
	if _, err := NewCollection[string](db, "x").Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read below the reserve: %v", err)
	}
	if err := db.AuditLog().Append([]AuditRecord{{ID: 1, Raw: []byte(`{}`)}}); err != nil {
		t.Fatalf("audit append below the reserve: %v", err)
	}
	if err := db.Write(func(tx *Txn) error { return tx.Delete([]byte("a")) }); err != nil {
		t.Fatalf("delete below the reserve: %v", err)
	}
	if st := db.Space(); !st.Low || st.Free != DefaultMinFreeBytes-1 {
		t.Fatalf("space %+v", st)
	}
	// Under the floor the audit writer is told not to chain more; a batch
	// it chained already may still commit down to half the floor.
	disk.free.Store(DefaultMinFreeBytes/4 - 1)
	time.Sleep(spaceRecheckLow)
	if err := db.AuditLog().Admits(); !errors.Is(err, ErrInsufficientStorage) {
		t.Fatalf("audit admitted under the floor: %v", err)
	}
	if err := db.AuditLog().Append([]AuditRecord{{ID: 2, Raw: []byte(`{}`)}}); err != nil {
		t.Fatalf("chained audit batch under the floor: %v", err)
	}
	disk.free.Store(DefaultMinFreeBytes/8 - 1)
	time.Sleep(spaceRecheckLow)
	if err := db.AuditLog().Append([]AuditRecord{{ID: 3, Raw: []byte(`{}`)}}); !errors.Is(err, ErrInsufficientStorage) {
		t.Fatalf("audit append under half the floor: %v", err)
	}

	// Space returns: writes resume by themselves.
	disk.free.Store(1 << 30)
	time.Sleep(spaceRecheckLow)
	if err := set("d"); err != nil {
		t.Fatalf("write after space returned: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[0].Low || changes[1].Low {
		t.Fatalf("changes %+v, want one low then one recovered", changes)
	}
}

func TestOpenRefusesBelowReserve(t *testing.T) {
	disk := &fakeDisk{}
	disk.total.Store(10 << 30)
	disk.free.Store(DefaultMinFreeBytes - 1)
	opts := DefaultOptions(t.TempDir())
	opts.StatFS = disk.statfs
	_, err := Open(opts)
	if !errors.Is(err, ErrInsufficientStorage) {
		t.Fatalf("open below the reserve: %v", err)
	}
	// A small filesystem keeps a quarter of itself, not 64 MiB.
	disk.total.Store(16 << 20)
	disk.free.Store(12 << 20)
	db, err := Open(opts)
	if err != nil {
		t.Fatalf("open on a 16 MiB filesystem: %v", err)
	}
	defer db.Close()
	if st := db.Space(); st.Reserve != 4<<20 || st.Low {
		t.Fatalf("space %+v", st)
	}
}

// Badger creates its memtable log files sparse and writes them through a
// memory map: on a full disk a store into a hole is SIGBUS. Every log file
// must have its blocks allocated.
func TestMemtableLogsAreAllocated(t *testing.T) {
	dir := t.TempDir()
	probe, _ := os.Create(filepath.Join(dir, "probe"))
	if err := syscall.Fallocate(int(probe.Fd()), 0, 0, 4096); err != nil {
		t.Skipf("the test directory's filesystem has no fallocate: %v", err)
	}
	probe.Close()
	os.Remove(probe.Name())
	opts := DefaultOptions(dir)
	opts.MemTableSize = 2 << 20
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	value := make([]byte, 64<<10)
	// Enough to rotate the memtable a few times.
	for i := 0; i < 120; i++ {
		if err := db.Write(func(tx *Txn) error { return tx.Set([]byte{byte(i)}, value) }); err != nil {
			t.Fatal(err)
		}
	}
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(mems) == 0 {
		t.Fatal("no memtable log")
	}
	for _, m := range mems {
		fi, err := os.Stat(m)
		if err != nil {
			continue // flushed and deleted meanwhile
		}
		allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
		if want := min(fi.Size(), db.wal.limit); allocated < want {
			t.Errorf("%s: %d bytes allocated of the %d Badger may write through its memory map", filepath.Base(m), allocated, want)
		}
	}
}
