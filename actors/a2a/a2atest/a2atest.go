// Package a2atest runs the official A2A JavaScript SDK (@a2a-js/sdk) as a
// real peer in fangd's tests: a client script that drives fangd, and an
// express server that fangd discovers and calls. The npm packages are
// installed idempotently into a cache folder ($FANGD_TEST_DEPS/a2a-js,
// default ~/.cache/fangd-test/a2a-js) by `make test-deps` or on first use.
package a2atest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SDKVersion is the @a2a-js/sdk version the tests pin (see
// testdata/a2a-js/package.json).
const SDKVersion = "1.3.0"

// scripts is testdata/a2a-js in the repository.
func scripts() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "a2a-js")
}

// depsDir is where the npm packages are installed.
func depsDir() string {
	if d := os.Getenv("FANGD_TEST_DEPS"); d != "" {
		return filepath.Join(d, "a2a-js")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fangd-test", "a2a-js")
}

// Install makes sure the pinned packages are in the cache folder and
// returns it. Concurrent test binaries serialise on a lock file.
func Install(t testing.TB) string {
	t.Helper()
	dir := depsDir()
	if installed(dir) {
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatal("node and npm are needed for the A2A JavaScript SDK tests: run `make test-deps`")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if installed(dir) {
		return dir
	}
	manifest, err := os.ReadFile(filepath.Join(scripts(), "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--no-save")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install @a2a-js/sdk@%s: %v\n%s", SDKVersion, err, out)
	}
	if !installed(dir) {
		t.Fatalf("npm install left no @a2a-js/sdk@%s in %s", SDKVersion, dir)
	}
	return dir
}

func installed(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "@a2a-js", "sdk", "package.json"))
	if err != nil {
		return false
	}
	var pkg struct {
		Version string `json:"version"`
	}
	_ = json.Unmarshal(raw, &pkg)
	_, err = os.Stat(filepath.Join(dir, "node_modules", "express", "package.json"))
	return pkg.Version == SDKVersion && err == nil
}

func node(t testing.TB, script string, args ...string) *exec.Cmd {
	dir := Install(t)
	cmd := exec.Command("node", append([]string{filepath.Join(scripts(), script)}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	return cmd
}

// RunClient runs the JavaScript client against an A2A server at base (its
// card at base/.well-known/agent-card.json) with a bearer token, and
// returns the JSON summary it printed.
func RunClient(t testing.TB, base, token string) map[string]any {
	t.Helper()
	cmd := node(t, "client.cjs", base, token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client.cjs: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("client.cjs did not finish\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(lastLine(stdout.Bytes())), &out); err != nil {
		t.Fatalf("client.cjs printed no JSON: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return out
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// StartServer starts the JavaScript agent (requiring token on JSON-RPC
// calls when set) and returns its base URL; it stops with the test.
func StartServer(t testing.TB, token string) string {
	t.Helper()
	args := []string{}
	if token != "" {
		args = append(args, token)
	}
	cmd := node(t, "server.cjs", args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	base := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				base <- u
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case u := <-base:
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("server.cjs did not start: %s", stderr.String())
	}
	return ""
}
