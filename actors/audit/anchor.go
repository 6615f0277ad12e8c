package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Anchor is the (length, tip hash) of the committed chain, kept in a file
// outside the store. The store can be rewritten wholesale or cut short; the
// anchor makes that visible. It is written after each commit, so it may lag
// the store by one batch after a crash, never lead it.
type Anchor struct {
	Length uint64
	Tip    string
}

// String says what the anchor records, as mismatch messages quote it.
func (a Anchor) String() string { return fmt.Sprintf("%d entries ending in %s", a.Length, a.Tip) }

// AnchorPath is where the anchor lives under a fangd home.
func AnchorPath(home string) string { return filepath.Join(home, "audit.anchor") }

// ErrNoAnchor means the anchor file does not exist.
var ErrNoAnchor = errors.New("audit anchor file is missing")

// ReadAnchor reads the anchor file.
func ReadAnchor(path string) (Anchor, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Anchor{}, ErrNoAnchor
	}
	if err != nil {
		return Anchor{}, err
	}
	fields := strings.Fields(string(raw))
	if len(fields) != 2 || len(fields[1]) != 64 {
		return Anchor{}, fmt.Errorf("audit anchor %s is malformed", path)
	}
	n, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return Anchor{}, fmt.Errorf("audit anchor %s is malformed", path)
	}
	return Anchor{Length: n, Tip: fields[1]}, nil
}

// WriteAnchor replaces the anchor file atomically (write, sync, rename).
func WriteAnchor(path string, a Anchor) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := fmt.Fprintf(f, "%d %s\n", a.Length, a.Tip)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// anchorWriter rewrites the anchor file off the commit path. Each commit
// hands it the new (length, tip); it writes the newest it holds, so several
// commits during one file write cost one write. The file (write, fsync,
// rename) used to be rewritten inside every commit and cost about a quarter
// of the daemon's CPU under write load. The anchor may therefore lag the
// store by what is committed during one write; verification accepts an
// anchor behind the store, and start-up catches it up. Writes are also at
// least anchorInterval apart: back to back they still took a tenth of the
// daemon's CPU at a few thousand audited requests per second, while an
// anchor a few milliseconds older protects the same history.
type anchorWriter struct {
	path    string
	onError func(error)
	mu      sync.Mutex
	latest  Anchor
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// anchorInterval is the least time between two anchor writes.
const anchorInterval = 20 * time.Millisecond

func startAnchorWriter(path string, onError func(error)) *anchorWriter {
	a := &anchorWriter{path: path, onError: onError, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// set records a newer committed state; it never blocks.
func (a *anchorWriter) set(x Anchor) {
	a.mu.Lock()
	if x.Length > a.latest.Length {
		a.latest = x
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *anchorWriter) run() {
	defer close(a.done)
	var written uint64
	write := func() {
		a.mu.Lock()
		x := a.latest
		a.mu.Unlock()
		if x.Length == written {
			return
		}
		if err := WriteAnchor(a.path, x); err != nil {
			a.onError(err)
			return
		}
		written = x.Length
	}
	for {
		select {
		case <-a.wake:
			write()
		case <-a.stop:
			write()
			return
		}
		select {
		case <-time.After(anchorInterval):
		case <-a.stop:
			write()
			return
		}
	}
}

// close writes the newest state and stops.
func (a *anchorWriter) close() {
	close(a.stop)
	<-a.done
}
