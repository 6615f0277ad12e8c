// Package safepath resolves user-supplied relative paths inside a root
// directory and refuses every way out of it: absolute paths, ".." segments,
// NUL bytes, and symlinks that point outside the root.
package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// ErrOutsideRoot is returned for any path that would leave the root.
var ErrOutsideRoot = errors.New("path escapes the allowed directory")

// Resolve returns the absolute path of rel inside root. rel must be
// relative; the result (following any symlinks that exist) stays inside
// root. A path that does not exist yet is allowed as long as its nearest
// existing ancestor is inside root.
func Resolve(root, rel string) (string, error) {
	if rel == "" || strings.ContainsRune(rel, 0) || filepath.IsAbs(rel) || strings.HasPrefix(rel, `\`) {
		return "", ErrOutsideRoot
	}
	for _, seg := range strings.FieldsFunc(rel, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return "", ErrOutsideRoot
		}
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	realRoot, err := filepath.EvalSymlinks(absRoot)
	if err != nil {
		return "", err
	}
	joined := filepath.Join(realRoot, rel)
	real, err := evalExisting(joined)
	if err != nil {
		return "", err
	}
	if !within(realRoot, real) {
		return "", ErrOutsideRoot
	}
	return real, nil
}

// evalExisting resolves symlinks in the longest existing prefix of p and
// appends the rest unchanged.
func evalExisting(p string) (string, error) {
	rest := ""
	cur := p
	for {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return "", err
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

func within(root, p string) bool {
	if p == root {
		return true
	}
	return strings.HasPrefix(p, root+string(filepath.Separator))
}
