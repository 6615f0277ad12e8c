package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// homeLock is an exclusive flock on $FANGD_HOME/fangd.lock, so that a second
// daemon (or an offline tool) on the same home fails at once with a clear
// message instead of fighting over Badger's files. The kernel releases it
// when the process dies, even on kill -9.
type homeLock struct{ f *os.File }

func lockHome(home string) (*homeLock, error) {
	path := filepath.Join(home, "fangd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
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
	return &homeLock{f: f}, nil
}

func (l *homeLock) release() {
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
