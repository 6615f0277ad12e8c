package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A home deleted and recreated while its daemon still runs (or is still
// stopping) is a new directory with a new fangd.lock that nobody holds;
// the lock keyed by the home's path must still refuse a second daemon.
func TestHomeLockHoldsAcrossRecreatedHome(t *testing.T) {
	t.Setenv("FANGD_LOCK_DIR", t.TempDir())
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	first, err := lockHome(home)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	second, err := lockHome(home)
	if err == nil {
		second.release()
		t.Fatal("a second lock on a recreated home was granted while the first is held")
	}
	if !strings.Contains(err.Error(), "already using home") || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("refusal: %v", err)
	}
	// The same home through a symlink is the same home.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(home, link); err != nil {
		t.Fatal(err)
	}
	if l, err := lockHome(link); err == nil {
		l.release()
		t.Fatal("a lock through a symlink to a held home was granted")
	}
	first.release()
	again, err := lockHome(home)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.release()
	// Another home is independent.
	other, err := lockHome(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other.release()
}
