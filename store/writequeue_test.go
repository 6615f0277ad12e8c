package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Writes handed to UpdateAsync are ordered before a later synchronous
// Update: a delete after a queued put wins, also after a restart.
func TestUpdateAsyncIsOrderedBeforeLaterUpdates(t *testing.T) {
	db, home := openTemp(t)
	c := NewCollection[widget](db, "w")
	for i := range 200 {
		id := fmt.Sprint(i)
		c.PutAsync(id, widget{Name: id}, func(err error) {
			if err != nil {
				t.Error(err)
			}
		})
		if i%2 == 0 {
			if err := c.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(db *DB) {
		t.Helper()
		c := NewCollection[widget](db, "w")
		for i := range 200 {
			_, err := c.Get(fmt.Sprint(i))
			if deleted := i%2 == 0; deleted != errors.Is(err, ErrNotFound) {
				t.Fatalf("widget %d: deleted=%v, read %v", i, deleted, err)
			}
		}
	}
	check(db)
	db.Close()
	db, err := Open(DefaultOptions(DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check(db)
}

// Each UpdateAsync call is applied whole or not at all, once done says
// so; a callback that fails leaves nothing; reads inside it are refused.
func TestUpdateAsyncAppliesWholeCallsAndRefusesReads(t *testing.T) {
	db, _ := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		db.UpdateAsync(func(tx *Txn) error {
			for j := range 3 {
				if err := tx.Set(fmt.Appendf(nil, "k/%02d/%d", i, j), []byte("v")); err != nil {
					return err
				}
			}
			if i%8 == 0 {
				return errors.New("changed my mind")
			}
			return nil
		}, func(err error) { errs <- err; wg.Done() })
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != 8 {
		t.Fatalf("%d calls failed, want 8", failed)
	}
	for i := range 64 {
		for j := range 3 {
			err := db.View(func(tx *Txn) error { _, err := tx.Get(fmt.Appendf(nil, "k/%02d/%d", i, j)); return err })
			if want := i%8 != 0; want != (err == nil) {
				t.Fatalf("k/%02d/%d: written=%v, read %v", i, j, want, err)
			}
		}
	}
	read := make(chan error, 1)
	db.UpdateAsync(func(tx *Txn) error {
		_, err := tx.Get([]byte("k/01/0"))
		return err
	}, func(err error) { read <- err })
	if err := <-read; !errors.Is(err, errReadInAsync) {
		t.Fatalf("a read inside UpdateAsync: %v", err)
	}
}

// Close waits for queued writes: every one handed over before Close is
// on disk after a reopen, and later ones fail with ErrClosed.
func TestCloseKeepsQueuedWrites(t *testing.T) {
	db, home := openTemp(t)
	c := NewCollection[widget](db, "q")
	var mu sync.Mutex
	var failed []error
	for i := range 500 {
		c.PutAsync(fmt.Sprintf("%03d", i), widget{Count: i}, func(err error) {
			if err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if len(failed) > 0 {
		t.Fatalf("queued writes failed: %v", failed)
	}
	late := make(chan error, 1)
	c.PutAsync("late", widget{}, func(err error) { late <- err })
	select {
	case err := <-late:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("write after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write after Close was never answered")
	}
	db, err := Open(DefaultOptions(DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	NewCollection[widget](db, "q").Each(func(string, widget) bool { n++; return true })
	if n != 500 {
		t.Fatalf("%d of 500 queued writes survived Close", n)
	}
}

// After a synced commit fails, nothing later is committed: a group
// committer may have chained later writes onto the lost ones.
func TestAFailedCommitFailsEveryLaterWrite(t *testing.T) {
	db, _ := openTemp(t)
	c := NewCollection[widget](db, "f")
	if err := c.Put("before", widget{}); err != nil {
		t.Fatal(err)
	}
	real := db.queue.commitFn
	db.queue.commitFn = func([]asyncWrite) error { return fmt.Errorf("%w: %w", errCommit, errors.New("disk on fire")) }
	lost := make(chan error, 1)
	c.PutAsync("lost", widget{}, func(err error) { lost <- err })
	if err := <-lost; !errors.Is(err, errCommit) {
		t.Fatalf("the failed write: %v", err)
	}
	db.queue.commitFn = real // the disk would work again: the store still refuses
	later := make(chan error, 1)
	c.PutAsync("later", widget{}, func(err error) { later <- err })
	if err := <-later; !errors.Is(err, errCommit) {
		t.Fatalf("a write after the failed commit: %v", err)
	}
	if err := c.Put("sync", widget{}); !errors.Is(err, errCommit) {
		t.Fatalf("an Update after the failed commit: %v", err)
	}
	for id, want := range map[string]bool{"before": true, "lost": false, "later": false, "sync": false} {
		if _, err := c.Get(id); (err == nil) != want {
			t.Fatalf("%s: stored=%v, want %v", id, err == nil, want)
		}
	}
}
