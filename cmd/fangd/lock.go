package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// homeLock is two exclusive flocks, so that a second daemon (or an offline
// tool) on the same home fails at once with a clear message instead of
// fighting over Badger's files. The kernel releases both when the process
// dies, even on kill -9.
//
//   - $FANGD_HOME/fangd.lock, inside the home: it follows the directory
//     (a home reached by two paths, a bind mount, a renamed home).
//   - <lock dir>/home-<sha256 of the home's absolute path>.lock, outside
//     it: a home deleted and recreated while the old daemon is still
//     stopping is a new directory with a new fangd.lock, which the old
//     daemon does not hold; the path is what names the home, so the lock
//     keyed by it still refuses the second daemon.
type homeLock struct{ files []*os.File }

// systemLockDir is where the path-keyed locks live: a directory shared by
// every user (sticky, like /tmp), so any user's daemon on a given path
// meets any other's. FANGD_LOCK_DIR overrides it (tests; systems whose
// /tmp is private per service).
func systemLockDir() string {
	if d := os.Getenv("FANGD_LOCK_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "fangd-locks")
}

func lockHome(home string) (*homeLock, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, err
	}
	// A symlinked home is locked under the path it resolves to, so two
	// links to one home meet on the same lock.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	dir := systemLockDir()
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return nil, fmt.Errorf("home lock directory: %w", err)
	}
	// MkdirAll's mode is filtered by the umask; the directory must stay
	// writable by every user. Only its creator can change it, and need to.
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm() != 0o777 && os.Getenv("FANGD_LOCK_DIR") == "" {
		os.Chmod(dir, 0o1777)
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	l := &homeLock{}
	for _, path := range []string{filepath.Join(dir, "home-"+hex.EncodeToString(sum[:16])+".lock"), filepath.Join(home, "fangd.lock")} {
		f, err := flockFile(path, home)
		if err != nil {
			l.release()
			return nil, err
		}
		l.files = append(l.files, f)
	}
	return l, nil
}

// flockFile takes an exclusive, non-blocking flock on path and writes our
// pid into it for the next one to name.
func flockFile(path, home string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrPermission) {
		// Another user's lock file: reading is enough to flock it.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(owner))
			return nil, fmt.Errorf("another fangd (pid %s) is already using home %s", orUnknown(pid), home)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func (l *homeLock) release() {
	for _, f := range l.files {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
	l.files = nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
