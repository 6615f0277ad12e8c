package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Anchor is the (length, tip hash) of the committed chain, kept in a file
// outside the store. The store can be rewritten wholesale or cut short; the
// anchor makes that visible. It is written after each commit, so it may lag
// the store by one batch after a crash, never lead it.
type Anchor struct {
	Length uint64
	Tip    string
}

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
