// Package mcptest provides real third-party MCP peers for tests: the
// reference servers and the TypeScript SDK from npm, installed on first use
// into a cache folder from the lockfile in testdata/npm (idempotent, safe
// when several test binaries install at once), so that a clean CI machine
// that reaches only the npm registry runs the same tests.
package mcptest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Peers locates the installed packages.
type Peers struct {
	// Modules is the node_modules directory.
	Modules string
	// Node is the node executable.
	Node string
}

// Everything returns the command and args that start
// @modelcontextprotocol/server-everything with the given transport
// ("stdio" or "streamableHttp").
func (p Peers) Everything(transport string) (string, []string) {
	return p.Node, []string{filepath.Join(p.Modules, "@modelcontextprotocol", "server-everything", "dist", "index.js"), transport}
}

// Filesystem returns the command and args that start
// @modelcontextprotocol/server-filesystem confined to dirs.
func (p Peers) Filesystem(dirs ...string) (string, []string) {
	return p.Node, append([]string{filepath.Join(p.Modules, "@modelcontextprotocol", "server-filesystem", "dist", "index.js")}, dirs...)
}

var (
	once     sync.Once
	peers    Peers
	setupErr error
)

// NPM installs the peers if needed and returns where they are. It fails
// the test when node or npm is missing or the install fails.
func NPM(t testing.TB) Peers {
	t.Helper()
	p, err := Install()
	if err != nil {
		t.Fatalf("installing the npm MCP test peers: %v", err)
	}
	return p
}

// Install is NPM for programs that are not tests (the bench).
func Install() (Peers, error) {
	once.Do(func() { peers, setupErr = install() })
	return peers, setupErr
}

func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "npm")
}

// Script copies testdata/<name> next to the installed node_modules (where
// its imports resolve) and returns the copy's path.
func (p Peers) Script(t testing.TB, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(TestdataDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(filepath.Dir(p.Modules), name)
	tmp := dst + fmt.Sprintf(".%d.tmp", os.Getpid())
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestdataDir is the repository's testdata directory.
func TestdataDir() string { return filepath.Dir(sourceDir()) }

func install() (Peers, error) { return InstallFrom(sourceDir()) }

// InstallFrom installs the package.json and package-lock.json of the
// directory src (npm ci, once per lockfile, into the same cache folder as
// the test peers) and returns where. The bench installs its peers (bench/npm)
// with it.
func InstallFrom(src string) (Peers, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return Peers{}, fmt.Errorf("node is not installed: %w", err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return Peers{}, fmt.Errorf("npm is not installed: %w", err)
	}
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		return Peers{}, err
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return Peers{}, err
	}
	sum := sha256.Sum256(append(pkg, lock...))
	base := os.Getenv("FANGD_TEST_CACHE")
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		base = filepath.Join(cache, "fangd-test")
	}
	dir := filepath.Join(base, "npm-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(base, 0o755); err != nil {
		return Peers{}, err
	}
	// One installer at a time across test binaries.
	lf, err := os.OpenFile(filepath.Join(base, "npm.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Peers{}, err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return Peers{}, err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	p := Peers{Modules: filepath.Join(dir, "node_modules"), Node: node}
	stamp := filepath.Join(dir, ".installed")
	if _, err := os.Stat(stamp); err == nil {
		return p, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return Peers{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Peers{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), pkg, 0o644); err != nil {
		return Peers{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "package-lock.json"), lock, 0o644); err != nil {
		return Peers{}, err
	}
	var lastErr error
	for attempt := range 3 {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("npm ci: %v: %s", err, out)
		time.Sleep(time.Duration(attempt+1) * 2 * time.Second)
	}
	if lastErr != nil {
		return Peers{}, lastErr
	}
	if err := os.WriteFile(stamp, []byte(time.Now().UTC().Format(time.RFC3339)), 0o644); err != nil {
		return Peers{}, err
	}
	return p, nil
}
