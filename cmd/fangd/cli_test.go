package main

// The CLI client run as a user runs it: the real binary against a real
// daemon on loopback (fake LLM providers where a turn runs).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

type cliResult struct {
	code        int
	out, errOut string
}

// cliEnv is the test's environment without any FANGD_* variable, with a
// FANGD_HOME of its own (so no ~/.fangd/config.toml is read), then extra.
func cliEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FANGD_") {
			env = append(env, kv)
		}
	}
	env = append(env, "FANGD_HOME="+t.TempDir())
	return append(env, extra...)
}

// runCLI runs `fangd args...` with env (cliEnv's) and returns its exit
// code and output.
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(fangdBin, args...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{out: out.String(), errOut: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	noPanic(t, r.out+r.errOut)
	return r
}

func (r cliResult) want(t *testing.T, code int, what string) cliResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.out, r.errOut)
	}
	return r
}

// keyedDaemon is a daemon with the e2e API key and the fake providers.
func keyedDaemon(t *testing.T, extra string) *proc {
	t.Helper()
	_, _, cfg := fakes(t, extra)
	return startFangd(t, t.TempDir(), cfg, append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)...)
}

// agents create, list and delete, as tables and as the server's JSON.
func TestCLIAgentsRoundTrip(t *testing.T) {
	t.Parallel()
	p := keyedDaemon(t, "")
	env := cliEnv(t, "FANGD_URL="+p.url, "FANGD_API_KEY="+e2eKey)

	r := runCLI(t, env, "agents", "create", "ops", "--model", "fakeoai/gpt-test", "--system-prompt", "You run ops.", "--tag", "a,b").
		want(t, 0, "agents create")
	if !strings.Contains(r.out, "created:") || !strings.Contains(r.out, "ops") || !strings.Contains(r.out, "fakeoai/gpt-test") {
		t.Fatalf("create table: %s", r.out)
	}
	r = runCLI(t, env, "agents", "create", "helper", "--model", "fakeanth/claude-test", "--json").want(t, 0, "agents create --json")
	var created struct {
		ID, AgentID, Name, Model string
		Tags                     []string
	}
	if err := json.Unmarshal([]byte(r.out), &created); err != nil || created.Name != "helper" || created.ID == "" {
		t.Fatalf("create --json is not the server's agent: %v %s", err, r.out)
	}
	if !strings.Contains(r.out, `"agent_id"`) {
		t.Fatalf("create --json is not the server's JSON as is (no agent_id): %s", r.out)
	}

	// The table: a header, then one row per agent, oldest first.
	r = runCLI(t, env, "agents", "list").want(t, 0, "agents list")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "ops ") ||
		!strings.HasPrefix(lines[2], "helper ") || !strings.Contains(lines[2], created.ID) {
		t.Fatalf("agents list table:\n%s", r.out)
	}
	var page struct {
		Items []struct{ Name, SystemPrompt string }
		Total int
	}
	r = runCLI(t, env, "agents", "list", "--json").want(t, 0, "agents list --json")
	if err := json.Unmarshal([]byte(r.out), &page); err != nil || page.Total != 2 || page.Items[0].Name != "ops" {
		t.Fatalf("agents list --json: %v %s", err, r.out)
	}

	runCLI(t, env, "agents", "delete", "ops").want(t, 0, "agents delete")
	r = runCLI(t, env, "agents", "delete", created.ID, "--json").want(t, 0, "agents delete by id --json")
	if strings.TrimSpace(r.out) != fmt.Sprintf(`{"deleted":%q}`, created.ID) {
		t.Fatalf("delete --json: %s", r.out)
	}
	r = runCLI(t, env, "agents", "list", "--json").want(t, 0, "agents list after delete")
	if json.Unmarshal([]byte(r.out), &page) != nil || page.Total != 0 {
		t.Fatalf("after delete: %s", r.out)
	}
	// A 4xx is exit 1 with the server's message; a bad command line is 2.
	r = runCLI(t, env, "agents", "delete", "ops").want(t, 1, "delete a deleted agent")
	if !strings.Contains(r.errOut, "not found") || !strings.Contains(r.errOut, "404") {
		t.Fatalf("delete unknown: %s", r.errOut)
	}
	runCLI(t, env, "agents", "create").want(t, 2, "create without a name")
	runCLI(t, env, "agents", "create", "x", "--template", "a", "--tag", "b").want(t, 2, "--tag with --template")
	runCLI(t, env, "agents", "frobnicate").want(t, 2, "unknown verb")
	runCLI(t, env, "agents", "list", "--bogus").want(t, 2, "unknown flag")

	// The audit chain recorded all of it; online verify reads it valid.
	r = runCLI(t, env, "audit", "verify").want(t, 0, "audit verify online")
	if !strings.Contains(r.out, "valid") {
		t.Fatalf("audit verify: %s", r.out)
	}
	r = runCLI(t, env, "audit", "export", "--format", "jsonl", "--action", "agent_spawned").want(t, 0, "audit export")
	if n := strings.Count(r.out, "\n"); n != 2 {
		t.Fatalf("audit export of agent_spawned: %d lines\n%s", n, r.out)
	}
	runCLI(t, env, "audit", "verify", "--home", t.TempDir(), "--json").want(t, 2, "offline verify with an online flag")

	// No [network]: no peers, and the CLI says why.
	r = runCLI(t, env, "peers", "list").want(t, 0, "peers list")
	if r.out != "" || !strings.Contains(r.errOut, "peer network is off") {
		t.Fatalf("peers list with the network off: %q %q", r.out, r.errOut)
	}
}

// send prints the agent's reply: streamed when the server streams, else
// through the plain endpoint; --json is the turn's answer.
func TestCLISendPrintsReply(t *testing.T) {
	t.Parallel()
	p := keyedDaemon(t, "")
	env := cliEnv(t, "FANGD_URL="+p.url, "FANGD_API_KEY="+e2eKey)
	runCLI(t, env, "agents", "create", "ops", "--model", "fakeoai/gpt-test").want(t, 0, "create")

	r := runCLI(t, env, "send", "ops", "how", "are", "you?").want(t, 0, "send")
	if r.out != "echo: how are you?\n" {
		t.Fatalf("send printed %q (stderr %s)", r.out, r.errOut)
	}
	r = runCLI(t, env, "send", "ops", "--no-stream", "--json", "ping").want(t, 0, "send --no-stream --json")
	var turn struct {
		Response, SessionID string
		OutputTokens        int64 `json:"output_tokens"`
	}
	if err := json.Unmarshal([]byte(r.out), &turn); err != nil || turn.Response != "echo: ping" || turn.OutputTokens == 0 {
		t.Fatalf("send --json: %v %s", err, r.out)
	}
	r = runCLI(t, env, "send", "nobody", "hi").want(t, 1, "send to an unknown agent")
	if !strings.Contains(r.errOut, "not found") {
		t.Fatalf("unknown agent: %s", r.errOut)
	}
}

// approve and reject take any prefix that names one pending approval; a
// prefix that names several is refused, naming them, and decides nothing.
func TestCLIApprovalsByPrefix(t *testing.T) {
	t.Parallel()
	p := keyedDaemon(t, "[approval]\nmax_pending_per_agent = 20\n")
	env := cliEnv(t, "FANGD_URL="+p.url, "FANGD_API_KEY="+e2eKey)
	runCLI(t, env, "agents", "create", "ops", "--model", "fakeoai/gpt-test").want(t, 0, "create")
	// 17 ids: two at least share their first hex digit.
	var ids []string
	for i := range 17 {
		code, body := p.request(t, "POST", "/api/approvals", fmt.Sprintf(`{"agent_id":"ops","action":"deploy_%d"}`, i))
		var a struct{ ID string }
		if code != 201 || json.Unmarshal(body, &a) != nil {
			t.Fatalf("create approval: %d %s", code, body)
		}
		ids = append(ids, a.ID)
	}
	byFirst := map[byte][]string{}
	for _, id := range ids {
		byFirst[id[0]] = append(byFirst[id[0]], id)
	}
	var shared []string
	for _, group := range byFirst {
		if len(group) > 1 {
			shared = group
			break
		}
	}
	r := runCLI(t, env, "approvals", "approve", shared[0][:1]).want(t, 1, "ambiguous prefix")
	if !strings.Contains(r.errOut, "ambiguous") || !strings.Contains(r.errOut, shared[0]) || !strings.Contains(r.errOut, shared[1]) {
		t.Fatalf("ambiguous prefix message: %s", r.errOut)
	}
	if _, body := p.request(t, "GET", "/api/approvals/count", ""); !strings.Contains(string(body), `"pending":17`) {
		t.Fatalf("an ambiguous prefix decided something: %s", body)
	}
	runCLI(t, env, "approvals", "approve", "xyz").want(t, 2, "a prefix that is not hex")

	// The shortest prefix that names one approval alone.
	unique := func(id string) string {
		for n := 1; n <= len(id); n++ {
			matches := 0
			for _, other := range ids {
				if strings.HasPrefix(other, id[:n]) {
					matches++
				}
			}
			if matches == 1 {
				return id[:n]
			}
		}
		return id
	}
	r = runCLI(t, env, "approvals", "approve", unique(shared[0]), "--reason", "looks fine").want(t, 0, "approve by prefix")
	if !strings.Contains(r.out, shared[0]) || !strings.Contains(r.out, "approved") {
		t.Fatalf("approve table: %s", r.out)
	}
	code, body := p.request(t, "GET", "/api/approvals/"+shared[0], "")
	if code != 200 || !strings.Contains(string(body), `"status":"approved"`) || !strings.Contains(string(body), "looks fine") {
		t.Fatalf("after approve: %d %s", code, body)
	}
	// Once decided it is no longer pending: its prefix names the other.
	r = runCLI(t, env, "approvals", "reject", strings.ToUpper(unique(shared[1])), "--json").want(t, 0, "reject by prefix")
	var rec struct{ ID, Status string }
	if err := json.Unmarshal([]byte(r.out), &rec); err != nil || rec.ID != shared[1] || rec.Status != "rejected" {
		t.Fatalf("reject --json: %v %s", err, r.out)
	}
	r = runCLI(t, env, "approvals", "approve", shared[0][:8]).want(t, 1, "approve a decided approval by prefix")
	if !strings.Contains(r.errOut, "no pending approval") {
		t.Fatalf("decided approval: %s", r.errOut)
	}
	r = runCLI(t, env, "approvals", "list").want(t, 0, "approvals list")
	if n := strings.Count(strings.TrimSpace(r.out), "\n"); n != 15 || !strings.HasPrefix(r.out, "ID ") {
		t.Fatalf("approvals list: %d rows\n%s", n, r.out)
	}
}

// events tail prints the events published after it starts, resuming
// from --since; --count and SIGINT end it with exit 0.
func TestCLIEventsTail(t *testing.T) {
	t.Parallel()
	p := keyedDaemon(t, "")
	env := cliEnv(t, "FANGD_URL="+p.url, "FANGD_API_KEY="+e2eKey)
	runCLI(t, env, "agents", "create", "ops", "--model", "fakeoai/gpt-test").want(t, 0, "create")
	_, body := p.request(t, "GET", "/api/comms/events?limit=1", "")
	var latest struct {
		LatestID uint64 `json:"latest_id"`
	}
	json.Unmarshal(body, &latest)
	since := fmt.Sprint(latest.LatestID)

	// --count: started before the event is published; whether it
	// connects before or after, --since makes it see the event.
	counted := exec.Command(fangdBin, "events", "tail", "--type", "approval.*", "--since", since, "--count", "1", "--json")
	counted.Env = env
	var cout, cerr bytes.Buffer
	counted.Stdout, counted.Stderr = &cout, &cerr
	if err := counted.Start(); err != nil {
		t.Fatal(err)
	}
	code, body := p.request(t, "POST", "/api/approvals", `{"agent_id":"ops","action":"deploy"}`)
	var a struct{ ID string }
	if code != 201 || json.Unmarshal(body, &a) != nil {
		t.Fatalf("create approval: %d %s", code, body)
	}
	done := make(chan error, 1)
	go func() { done <- counted.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail --count 1: %v\n%s", err, cerr.String())
		}
	case <-time.After(20 * time.Second):
		counted.Process.Kill()
		t.Fatalf("tail --count 1 did not stop\nstdout %s\nstderr %s", cout.String(), cerr.String())
	}
	var ev struct {
		Type   string
		Detail struct{ ID string }
	}
	if err := json.Unmarshal(cout.Bytes(), &ev); err != nil || ev.Type != "approval.requested" || ev.Detail.ID != a.ID {
		t.Fatalf("tail --json printed %v %q", err, cout.String())
	}

	// Followed until SIGINT: a human line per event, exit 0.
	follow := exec.Command(fangdBin, "events", "tail", "--since", since)
	follow.Env = env
	pipe, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ferr bytes.Buffer
	follow.Stderr = &ferr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line := <-lines:
		if !strings.Contains(line, "approval.requested") || !strings.Contains(line, a.ID) {
			t.Fatalf("tail line: %q", line)
		}
	case <-time.After(20 * time.Second):
		follow.Process.Kill()
		t.Fatalf("tail printed nothing\n%s", ferr.String())
	}
	follow.Process.Signal(syscall.SIGINT)
	waited := make(chan error, 1)
	go func() {
		for range lines {
		}
		waited <- follow.Wait()
	}()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("tail after SIGINT: %v\n%s", err, ferr.String())
		}
	case <-time.After(10 * time.Second):
		follow.Process.Kill()
		t.Fatal("tail did not stop on SIGINT")
	}
}

// A server nobody answers on is exit 3 and says where it looked; the key
// given is never printed, whatever fails.
func TestCLIUnreachableAndKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "cli-secret-key-9d8c7b6a5f4e"
	closed := "http://" + freeAddr(t) // free: nothing listens there
	r := runCLI(t, cliEnv(t), "agents", "list", "--url", closed, "--api-key", secret).want(t, 3, "unreachable server")
	if !strings.Contains(r.errOut, "cannot reach fangd at "+closed) || !strings.Contains(r.errOut, "--url") {
		t.Fatalf("unreachable message: %s", r.errOut)
	}
	if strings.Contains(r.out+r.errOut, secret) {
		t.Fatalf("the key was printed: %s %s", r.out, r.errOut)
	}
	runCLI(t, cliEnv(t, "FANGD_URL="+closed), "events", "tail").want(t, 3, "tail of an unreachable server")

	p := keyedDaemon(t, "")
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"wrong key by flag", nil, []string{"agents", "list", "--url", p.url, "--api-key", secret}},
		{"wrong key by env", []string{"FANGD_API_KEY=" + secret}, []string{"approvals", "list", "--url", p.url}},
		{"wrong key, --json", []string{"FANGD_API_KEY=" + secret, "FANGD_URL=" + p.url}, []string{"send", "ops", "hi", "--json"}},
		{"wrong key, tail", []string{"FANGD_API_KEY=" + secret, "FANGD_URL=" + p.url}, []string{"logs", "tail"}},
	} {
		r := runCLI(t, cliEnv(t, c.env...), c.args...).want(t, 1, c.name)
		if !strings.Contains(r.errOut, "401") || strings.Contains(r.out+r.errOut, secret) {
			t.Fatalf("%s: %s %s", c.name, r.out, r.errOut)
		}
	}
	// A password in the URL is refused before anything is sent or shown.
	r = runCLI(t, cliEnv(t), "agents", "list", "--url", "http://admin:"+secret+"@127.0.0.1:1").want(t, 2, "credentials in the URL")
	if strings.Contains(r.out+r.errOut, secret) {
		t.Fatalf("the URL's password was printed: %s", r.errOut)
	}
}

// The address and key: --url/--api-key over FANGD_URL/FANGD_API_KEY over
// the config file; the config's key goes only to the config's address.
func TestCLIAddressAndKeyPrecedence(t *testing.T) {
	t.Parallel()
	p := keyedDaemon(t, "")
	closed := "http://" + freeAddr(t)
	good := "FANGD_API_KEY=" + e2eKey

	runCLI(t, cliEnv(t, "FANGD_URL="+closed, good), "agents", "list", "--url", p.url).want(t, 0, "--url over FANGD_URL")
	runCLI(t, cliEnv(t, "FANGD_URL="+p.url, good), "agents", "list").want(t, 0, "FANGD_URL")
	runCLI(t, cliEnv(t, "FANGD_URL="+closed, good), "agents", "list").want(t, 3, "FANGD_URL to nowhere")
	runCLI(t, cliEnv(t, "FANGD_URL="+p.url, good), "agents", "list", "--api-key", "wrong-key-0123456789").
		want(t, 1, "--api-key over FANGD_API_KEY")

	// The config `fangd serve` reads: api_listen and api_key.
	home := t.TempDir()
	addr := strings.TrimPrefix(p.url, "http://")
	cfg := fmt.Sprintf("api_listen = %q\napi_key = %q\n", addr, e2eKey)
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	fromHome := cliEnv(t, "FANGD_HOME="+home)
	runCLI(t, fromHome, "agents", "list").want(t, 0, "address and key from the config")
	runCLI(t, cliEnv(t), "agents", "list", "--config", filepath.Join(home, "config.toml")).want(t, 0, "--config")
	runCLI(t, append(fromHome, "FANGD_URL="+closed), "agents", "list").want(t, 3, "FANGD_URL over the config")
	runCLI(t, append(fromHome, "FANGD_API_KEY=wrong-key-0123456789"), "agents", "list").want(t, 1, "FANGD_API_KEY over the config")
	// The same daemon by another name is another address: the config's
	// key is not sent there.
	other := "http://localhost:" + addr[strings.LastIndex(addr, ":")+1:]
	r := runCLI(t, fromHome, "agents", "list", "--url", other).want(t, 1, "the config's key to another address")
	if !strings.Contains(r.errOut, "401") {
		t.Fatalf("want a 401: %s", r.errOut)
	}
	runCLI(t, cliEnv(t), "agents", "list", "--config", filepath.Join(home, "missing.toml")).want(t, 2, "a missing --config")
}

// Every verb answers --help (exit 0) with an example; completion scripts
// come from cobra for bash, zsh and fish.
func TestCLIHelpOnEveryVerb(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" || (c.HasParent() && c.Parent().Name() == "completion") {
			return
		}
		if c.Example == "" {
			t.Errorf("%s has no example", c.CommandPath())
		}
		path := strings.Fields(c.CommandPath())[1:]
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append(path, "--help"), &out, &errOut); code != 0 ||
			!strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), "Examples:") {
			t.Errorf("%s --help: exit %d\n%s%s", c.CommandPath(), code, out.String(), errOut.String())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"completion", shell}, &out, &errOut); code != 0 ||
			!strings.Contains(out.String(), "fangd") || out.Len() < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes %s", shell, code, out.Len(), errOut.String())
		}
	}
	// A bare group is a usage error, as a bare `fangd` is.
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"approvals"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "Usage:") {
		t.Errorf("bare approvals: exit %d\n%s", code, errOut.String())
	}
}
