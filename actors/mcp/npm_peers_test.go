package mcp

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// The reference server over stdio: connect, list, call; kill the process
// and the connection comes back by itself and calls work again.
func TestEverythingStdioConnectCallAndRecoverFromKill(t *testing.T) {
	peers := mcptest.NPM(t)
	h := newHarness(t, t.TempDir(), nil)
	cmd, args := peers.Everything("stdio")
	h.add(Spec{Name: "everything", Transport: Transport{Type: TransportStdio, Command: cmd, Args: args}})
	v := h.waitConnected("everything")
	if !hasTool(v, "mcp_everything_echo") || !hasTool(v, "mcp_everything_get_sum") {
		t.Fatalf("tools not namespaced as expected: %+v", v.Tools)
	}
	if v.Pid == 0 {
		t.Fatal("no pid reported for a stdio server")
	}
	res, err := h.call("mcp_everything_echo", map[string]any{"message": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(res); got != "Echo: hi" {
		t.Fatalf("echo answered %q", got)
	}
	// Audit entries are appended off the actor: wait for it.
	eventually(t, "the call was audited", func() bool { return h.auditHas("tool_invoked", "server=everything tool=echo outcome=ok") })

	// Kill the server (and only the server) from outside.
	oldPid := v.Pid
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v = h.waitFor("everything", "reconnected with a new process", func(v ServerView) bool {
		return v.Status == StatusConnected && v.Pid != 0 && v.Pid != oldPid
	})
	res, err = h.call("mcp_everything_get_sum", map[string]any{"a": 2, "b": 3})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(textOf(res), "5") {
		t.Fatalf("get-sum after reconnect answered %q", textOf(res))
	}
	hr, err := h.m.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if hr.Status != "healthy" || len(hr.Health) != 1 || hr.Health[0].ReconnectAttempts < 1 || hr.Health[0].ConnectedSince == nil {
		t.Fatalf("health after recovery: %+v", hr)
	}
	if !h.sink.has("mcp.server.down:everything") || !h.sink.has("mcp.server.up:everything") {
		t.Fatalf("events: %v", h.sink.events)
	}
}

// The sandbox: the server sees only the allowlist and what its spec
// declares, runs in its own process group under the fangd home, and
// stopping it kills the group.
func TestStdioSandboxEnvironmentGroupAndCwd(t *testing.T) {
	peers := mcptest.NPM(t)
	t.Setenv("FANGD_TEST_DAEMON_SECRET", "must-not-leak")
	t.Setenv("FANGD_TEST_PASSTHROUGH", "passed")
	h := newHarness(t, t.TempDir(), nil)
	cmd, args := peers.Everything("stdio")
	h.add(Spec{Name: "sandboxed", Transport: Transport{Type: TransportStdio, Command: cmd, Args: args},
		Env: []string{"FANGD_TEST_PASSTHROUGH", "INLINE_SECRET=inline-value"}})
	v := h.waitConnected("sandboxed")
	if strings.Join(v.Env, ",") != "FANGD_TEST_PASSTHROUGH,INLINE_SECRET" {
		t.Fatalf("env shown as %v; values must never be shown", v.Env)
	}
	res, err := h.call("mcp_sandboxed_get_env", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	envText := textOf(res)
	for _, want := range []string{`"FANGD_TEST_PASSTHROUGH": "passed"`, `"INLINE_SECRET": "inline-value"`, `"PATH"`} {
		if !strings.Contains(envText, want) {
			t.Errorf("server env lacks %s:\n%s", want, envText)
		}
	}
	if strings.Contains(envText, "FANGD_TEST_DAEMON_SECRET") || strings.Contains(envText, "must-not-leak") {
		t.Fatalf("a daemon variable leaked into the server:\n%s", envText)
	}
	// The inline value went to the vault, not into the stored spec.
	stored, err := h.m.env.servers.Get("sandboxed")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(stored.Env, ","), "inline-value") {
		t.Fatal("the stored spec holds a secret value")
	}

	pid := v.Pid
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
	if pgrp, _ := strconv.Atoi(fields[2]); pgrp != pid {
		t.Fatalf("server is in process group %d, want its own (%d)", pgrp, pid)
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(h.home, "mcp", "work", "sandboxed"); cwd != want {
		t.Fatalf("cwd %s, want %s", cwd, want)
	}

	if err := h.m.Remove(context.Background(), "sandboxed"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the process group is gone after remove", func() bool {
		return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
	})
	if has, _ := h.vault.Has(envKey("sandboxed", "INLINE_SECRET")); has {
		t.Fatal("remove left the credential in the vault")
	}
}

// Stopping kills children too: a shell that spawns a long sleep and then
// the server; both must be gone after the server is removed.
func TestStdioStopKillsChildren(t *testing.T) {
	t.Parallel() // an npm server each: mostly waiting on node
	peers := mcptest.NPM(t)
	h := newHarness(t, t.TempDir(), nil)
	node, args := peers.Everything("stdio")
	script := `sleep 300 & echo $! > child.pid; exec "$0" "$@"`
	h.add(Spec{Name: "parent", Transport: Transport{Type: TransportStdio, Command: "/bin/sh", Args: append([]string{"-c", script, node}, args...)}})
	h.waitConnected("parent")
	raw, err := os.ReadFile(filepath.Join(h.home, "mcp", "work", "parent", "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if syscall.Kill(child, 0) != nil {
		t.Fatal("the child is not running")
	}
	if err := h.m.Remove(context.Background(), "parent"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the spawned child is killed with its server", func() bool {
		return errors.Is(syscall.Kill(child, 0), syscall.ESRCH) || isZombie(child)
	})
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(stat)
	return strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
}

func TestFilesystemServerReadsInsideItsRoot(t *testing.T) {
	t.Parallel() // an npm server each: mostly waiting on node
	peers := mcptest.NPM(t)
	h := newHarness(t, t.TempDir(), nil)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "note.txt"), []byte("hello from disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, args := peers.Filesystem(root)
	h.add(Spec{Name: "fs", Transport: Transport{Type: TransportStdio, Command: cmd, Args: args}})
	v := h.waitConnected("fs")
	if !hasTool(v, "mcp_fs_read_text_file") || !hasTool(v, "mcp_fs_list_directory") {
		t.Fatalf("tools: %+v", v.Tools)
	}
	res, err := h.call("mcp_fs_read_text_file", map[string]any{"path": filepath.Join(root, "note.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(textOf(res), "hello from disk") {
		t.Fatalf("read_text_file answered %q", textOf(res))
	}
	res, err = h.call("mcp_fs_read_text_file", map[string]any{"path": "/etc/passwd"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError {
		t.Fatalf("the server read outside its root: %q", textOf(res))
	}
}

// The reference server in its streamable HTTP mode; when it dies the loss
// is noticed, calls fail fast, and the connection comes back when the
// server does.
func TestEverythingStreamableHTTPAndServerRestart(t *testing.T) {
	t.Parallel() // an npm server each: mostly waiting on node
	peers := mcptest.NPM(t)
	h := newHarness(t, t.TempDir(), nil)
	port := freePort(t)
	startHTTP := func() *exec.Cmd {
		cmd, args := peers.Everything("streamableHttp")
		c := exec.Command(cmd, args...)
		c.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	srv := startHTTP()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp"
	eventually(t, "the HTTP server listens", func() bool {
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	h.add(Spec{Name: "remote", Transport: Transport{Type: TransportHTTP, URL: url}})
	v := h.waitConnected("remote")
	if v.ProtocolVersion == "" || !hasTool(v, "mcp_remote_echo") {
		t.Fatalf("view: %+v", v)
	}
	res, err := h.call("mcp_remote_echo", map[string]any{"message": "over http"})
	if err != nil || textOf(res) != "Echo: over http" {
		t.Fatalf("echo: %v %v", textOf(res), err)
	}

	srv.Process.Kill()
	srv.Wait()
	h.waitFor("remote", "down", func(v ServerView) bool { return v.Status != StatusConnected })
	if _, err := h.call("mcp_remote_echo", map[string]any{"message": "x"}); err == nil {
		t.Fatal("a call to a down server succeeded")
	} else if kindOf(err) != kernel.KindUnavailable || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("a call to a down server failed with %v, want a fail-fast unavailable", err)
	}

	startHTTP()
	h.waitConnected("remote")
	res, err = h.call("mcp_remote_echo", map[string]any{"message": "back"})
	if err != nil || textOf(res) != "Echo: back" {
		t.Fatalf("echo after restart: %q %v", textOf(res), err)
	}
}

func hasTool(v ServerView, name string) bool {
	for _, t := range v.Tools {
		if t.Name == name {
			return true
		}
	}
	return false
}
