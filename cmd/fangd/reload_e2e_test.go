package main

// Signals on the real binary: SIGHUP reloads config.toml while the same
// process keeps serving; SIGTERM stops it without error-level lines.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
)

// count is how many times text occurs in the log so far.
func (s *syncWriter) count(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Count(s.w.Bytes(), []byte(text))
}

// reloadDone marks the end of one SIGHUP, applied or refused.
var reloadDone = []string{`"message":"config reloaded"`, `"message":"config reload refused`}

// sighup writes config as the daemon's config.toml, sends SIGHUP and waits
// until the daemon has finished that reload. It fails if the process
// exits: a reload never stops the daemon.
func sighup(t *testing.T, p *proc, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.home, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, m := range reloadDone {
		before += p.log.count(m)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("fangd exited on SIGHUP: %v\n%s", err, p.stderr)
		default:
		}
		n := 0
		for _, m := range reloadDone {
			n += p.log.count(m)
		}
		if n > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no end of reload in the log\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines are the daemon's JSON log lines that have field = value.
func logLines(p *proc, field, value string) []map[string]any {
	p.log.mu.Lock()
	raw := append([]byte(nil), p.log.w.Bytes()...)
	p.log.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && fmt.Sprint(m[field]) == value {
			out = append(out, m)
		}
	}
	return out
}

type auditEntry struct {
	EventType string `json:"event_type"`
	Outcome   string `json:"outcome"`
	Details   string `json:"details"`
}

func auditEntries(t *testing.T, p *proc, eventType string) []auditEntry {
	t.Helper()
	code, body := p.request(t, "GET", "/api/audit/recent?limit=500", "")
	if code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	var rec struct{ Entries []auditEntry }
	json.Unmarshal(body, &rec)
	var out []auditEntry
	for _, e := range rec.Entries {
		if e.EventType == eventType {
			out = append(out, e)
		}
	}
	return out
}

func logLevel(t *testing.T, p *proc) string {
	t.Helper()
	code, body := p.request(t, "GET", "/api/logs/level", "")
	var l struct{ Level string }
	if code != 200 || json.Unmarshal(body, &l) != nil {
		t.Fatalf("log level: %d %s", code, body)
	}
	return l.Level
}

// SIGHUP after an edit changes the log level, the approval policy, the
// network policy and the webhook triggers of the same process; restart-only
// keys are named in one warning and keep their value; a broken file is
// refused whole and the daemon serves on with the old config.
func TestSIGHUPReloadsTheConfig(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	_, _, providers := fakes(t, "")
	base := providers + "\n" // [rate_limit] off, fake providers
	p := startFangd(t, home, base+"[log]\nlevel = \"info\"\n[approval]\ntimeout_secs = 600\n",
		append([]string{"FANGD_API_KEY=" + e2eKey, "FANGD_WEBHOOK_TOKEN=" + hookToken}, keyEnv...)...)
	if code, body := p.request(t, "POST", "/api/agents", `{"name":"ops","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("agent: %d %s", code, body)
	}
	pid := p.cmd.Process.Pid
	if lvl := logLevel(t, p); lvl != "info" {
		t.Fatalf("level at start: %s", lvl)
	}
	createApproval := func() approvalJSON {
		t.Helper()
		code, body := p.request(t, "POST", "/api/approvals", `{"agent_id":"ops","action":"deploy_prod"}`)
		var a approvalJSON
		if code != 201 || json.Unmarshal(body, &a) != nil {
			t.Fatalf("create approval: %d %s", code, body)
		}
		return a
	}
	if a := createApproval(); !a.ExpiresAt.Equal(a.RequestedAt.Add(600 * time.Second)) {
		t.Fatalf("approval timeout at start: %+v", a)
	}
	peerURL := goPeer(t)
	if code, body := p.request(t, "POST", "/api/mcp/servers", `{"name":"probe","transport":{"type":"http","url":"`+peerURL+`"}}`); code != 400 || !strings.Contains(string(body), "url_not_allowed") {
		t.Fatalf("loopback MCP server before the reload: %d %s", code, body)
	}
	if code, _ := p.hook(t, "/hooks/wake", `{"text":"hi"}`); code != 404 {
		t.Fatalf("hooks before they are enabled: %d", code)
	}

	// A good edit: reloadable keys apply, restart-only ones are named.
	sighup(t, p, base+`[log]
level = "debug"
[approval]
timeout_secs = 60
[network_policy]
allow_hosts = ["127.0.0.1/32"]
[webhook_triggers]
enabled = true
[http]
security_headers = false
[comms]
event_log_size = 500
`)
	if p.cmd.Process.Pid != pid {
		t.Fatal("another process")
	}
	if lvl := logLevel(t, p); lvl != "debug" {
		t.Fatalf("level after SIGHUP: %s\n%s", lvl, p.stderr)
	}
	if a := createApproval(); !a.ExpiresAt.Equal(a.RequestedAt.Add(60 * time.Second)) {
		t.Fatalf("approval timeout after SIGHUP: %+v", a)
	}
	if code, body := p.request(t, "POST", "/api/mcp/servers", `{"name":"probe","transport":{"type":"http","url":"`+peerURL+`"}}`); code != 201 {
		t.Fatalf("allow-listed loopback MCP server after SIGHUP: %d %s", code, body)
	}
	if code, body := p.hook(t, "/hooks/wake", `{"text":"hi"}`); code != 200 {
		t.Fatalf("hooks after they were enabled: %d %s", code, body)
	}
	warns := logLines(p, "level", "warn")
	var restartWarn []map[string]any
	for _, w := range warns {
		if strings.Contains(fmt.Sprint(w["message"]), "restart") {
			restartWarn = append(restartWarn, w)
		}
	}
	if len(restartWarn) != 1 || fmt.Sprint(restartWarn[0]["keys"]) != "[comms.event_log_size http.security_headers]" {
		t.Fatalf("restart-only warning: %v", restartWarn)
	}
	// security_headers keeps its running value (on).
	res, err := http.Get(p.url + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("a restart-only key took effect on reload")
	}
	ok := auditEntries(t, p, "config_reloaded")
	if len(ok) != 1 || ok[0].Outcome != "ok" || !strings.Contains(ok[0].Details, "needs_restart=comms.event_log_size,http.security_headers") {
		t.Fatalf("config_reloaded entries: %+v", ok)
	}
	for _, key := range []string{"approval.timeout_secs", "log.level", "network_policy.allow_hosts", "webhook_triggers.enabled"} {
		if !strings.Contains(ok[0].Details, key) {
			t.Fatalf("config_reloaded does not name %s: %s", key, ok[0].Details)
		}
	}
	if strings.Contains(ok[0].Details, hookToken) || strings.Contains(ok[0].Details, e2eKey) {
		t.Fatalf("config_reloaded holds a secret: %s", ok[0].Details)
	}

	// A broken edit changes nothing and the daemon serves on.
	sighup(t, p, base+"[log]\nlevel = \"chatty\"\n[approval]\ntimeout_secs = 5\ntimeout_action = \"shrug\"\n")
	if lvl := logLevel(t, p); lvl != "debug" {
		t.Fatalf("a refused reload changed the level to %s", lvl)
	}
	if a := createApproval(); !a.ExpiresAt.Equal(a.RequestedAt.Add(60 * time.Second)) {
		t.Fatalf("a refused reload changed the approval timeout: %+v", a)
	}
	refused := logLines(p, "message", "config reload refused: the file has errors; the running config is unchanged")
	if len(refused) != 1 || refused[0]["level"] != "error" || !strings.Contains(fmt.Sprint(refused[0]["problems"]), "log.level") ||
		!strings.Contains(fmt.Sprint(refused[0]["problems"]), "approval.timeout_action") {
		t.Fatalf("refusal log: %v", refused)
	}
	failed := auditEntries(t, p, "config_reloaded")
	if len(failed) != 2 || failed[0].Outcome != "error" || !strings.Contains(failed[0].Details, "log.level") {
		t.Fatalf("config_reloaded entries after a refused reload: %+v", failed)
	}
	// SIGHUP is not a stop signal: the daemon stops on SIGTERM, gracefully.
	p.stopOrderly(t)
}

// SIGHUP adds, restarts and removes config-declared channels and MCP
// servers; the audit entry names them and never holds a secret.
func TestSIGHUPReconcilesChannelsAndMCPServers(t *testing.T) {
	t.Parallel()
	nt := ntfytest.New()
	defer nt.Close()
	peerURL := goPeer(t)
	home := t.TempDir()
	base := "[rate_limit]\napi_requests_per_minute = 0\n[network_policy]\nallow_hosts = [\"127.0.0.1/32\"]\n"
	p := startFangd(t, home, base, "FANGD_API_KEY="+e2eKey)
	channel := fmt.Sprintf("[channels.alerts]\nadapter = \"ntfy\"\nserver_url = %q\ntopic = \"fang\"\ntoken = %q\n", nt.URL, ntfytest.BotToken)
	server := fmt.Sprintf("[[mcp_servers]]\nname = \"peer\"\ntransport = \"http\"\nurl = %q\n", peerURL)

	sighup(t, p, base+channel+server)
	waitChannels(t, p, "alerts connected", connected("alerts"))
	waitMCP := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := p.request(t, "GET", "/api/mcp/servers/peer", "")
			if code == want && (want != 200 || strings.Contains(string(body), `"connected":true`)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("MCP server peer: %d %s, want %d", code, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitMCP(200)
	added := auditEntries(t, p, "config_reloaded")
	if len(added) != 1 || !strings.Contains(added[0].Details, "channels=started:alerts") || !strings.Contains(added[0].Details, "mcp_servers=added:peer") {
		t.Fatalf("config_reloaded after adding: %+v", added)
	}

	// Both removed: the channel stops, the server is gone.
	sighup(t, p, base)
	waitChannels(t, p, "alerts gone", func(m map[string]map[string]any) bool { _, ok := m["alerts"]; return !ok })
	waitMCP(404)
	all := auditEntries(t, p, "config_reloaded")
	if len(all) != 2 || !strings.Contains(all[0].Details, "channels=stopped:alerts") || !strings.Contains(all[0].Details, "mcp_servers=removed:peer") {
		t.Fatalf("config_reloaded after removing: %+v", all)
	}
	// A channel table that would not start refuses the whole file.
	sighup(t, p, base+"[log]\nlevel = \"debug\"\n[channels.broken]\nadapter = \"ntfy\"\ntopic = \"fang\"\ntoken_env = \"FANGD_TEST_UNSET_TOKEN\"\n")
	if lvl := logLevel(t, p); lvl != "info" {
		t.Fatalf("a file with a bad channel was partly applied: level %s", lvl)
	}
	log := p.stderr.String()
	_, body := p.request(t, "GET", "/api/audit/recent?limit=500", "")
	for _, where := range []string{log, string(body)} {
		if strings.Contains(where, ntfytest.BotToken) {
			t.Fatal("the channel's token leaked into the log or the audit log")
		}
	}
	if !strings.Contains(log, "channels.broken") {
		t.Fatalf("the refusal does not name the channel:\n%s", log)
	}
	// Rate limits reload too (last: the test's own calls count from here).
	sighup(t, p, strings.Replace(base, "api_requests_per_minute = 0", "api_requests_per_minute = 3", 1))
	limited := false
	for range 10 {
		if code, _ := p.request(t, "GET", "/api/health", ""); code == 429 {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("10 requests under a reloaded quota of 3 per minute: none refused")
	}
}

// A normal stop after real traffic (a connected channel and MCP server,
// an agent turn, open SSE streams) logs nothing at error level.
func TestNormalStopLogsNoErrors(t *testing.T) {
	t.Parallel()
	nt := ntfytest.New()
	defer nt.Close()
	peerURL := goPeer(t)
	_, _, providers := fakes(t, fmt.Sprintf(`
[network_policy]
allow_hosts = ["127.0.0.1/32"]

[channels.alerts]
adapter = "ntfy"
server_url = %q
topic = "fang"
token = %q

[[mcp_servers]]
name = "peer"
transport = "http"
url = %q
`, nt.URL, ntfytest.BotToken, peerURL))
	p := startFangd(t, t.TempDir(), providers, append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)...)
	waitChannels(t, p, "alerts connected", connected("alerts"))
	if code, body := p.request(t, "POST", "/api/agents", `{"name":"ops","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("agent: %d %s", code, body)
	}
	if code, body := p.request(t, "POST", "/api/agents/ops/message", `{"message":"hello"}`); code != 200 {
		t.Fatalf("agent turn: %d %s", code, body)
	}
	for _, path := range []string{"/api/health", "/api/agents", "/api/audit/recent", "/api/comms/events", "/api/mcp/servers", "/api/nope"} {
		p.request(t, "GET", path, "")
	}
	for _, path := range []string{"/api/comms/events/stream", "/api/logs/stream"} {
		req, _ := http.NewRequest("GET", p.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+e2eKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d", path, res.StatusCode)
		}
		if line, _ := bufio.NewReader(res.Body).ReadString('\n'); line == "" { // the stream is open
			t.Fatalf("%s sent nothing", path)
		}
	}
	p.stopOrderly(t)
	if errs := logLines(p, "level", "error"); len(errs) > 0 {
		t.Fatalf("error-level lines on a normal stop: %v", errs)
	}
}

// fangd config check validates without starting: 0 and "ok" for a good
// file, 1 and one line per bad key otherwise; nothing is created.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(body), 0o600)
		return path
	}
	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(fangdBin, append([]string{"config", "check"}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Env = append(os.Environ(), "FANGD_API_KEY=")
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errOut.String()
	}
	good := write("good.toml", "[log]\nlevel = \"debug\"\n[rate_limit]\napi_requests_per_minute = 10\n")
	if code, out, _ := run("--config", good); code != 0 || strings.TrimSpace(out) != "ok: "+good {
		t.Fatalf("good file: %d %q", code, out)
	}
	bad := write("bad.toml", `api_listen = "0.0.0.0:4545"
[log]
level = "chatty"
format = "xml"
[rate_limit]
api_requests_per_minute = -1
[approval]
timeout_action = "shrug"
[channels.alerts]
adapter = "ntfy"
topic = "fang"
token_env = "FANGD_TEST_UNSET_TOKEN"
`)
	code, _, errOut := run("--config", bad)
	if code != 1 {
		t.Fatalf("bad file: exit %d\n%s", code, errOut)
	}
	for _, key := range []string{"api_listen", "log.level", "log.format", "rate_limit.api_requests_per_minute", "approval.timeout_action", "channels.alerts"} {
		if !strings.Contains(errOut, key) {
			t.Errorf("the report does not name %s:\n%s", key, errOut)
		}
	}
	if code, _, errOut := run("--config", write("unknown.toml", "api_lisen = \"x\"\n")); code != 1 || !strings.Contains(errOut, "api_lisen") {
		t.Fatalf("unknown key: %d %s", code, errOut)
	}
	if code, _, errOut := run("--config", filepath.Join(dir, "missing.toml")); code != 1 || errOut == "" {
		t.Fatalf("missing explicit file: %d %s", code, errOut)
	}
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	os.WriteFile(filepath.Join(home, "config.toml"), []byte("[log]\nlevel = \"warn\"\n"), 0o600)
	if code, out, _ := run("--home", home); code != 0 || !strings.Contains(out, filepath.Join(home, "config.toml")) {
		t.Fatalf("--home: %d %q", code, out)
	}
	if entries, _ := os.ReadDir(home); len(entries) != 1 {
		t.Fatalf("config check created files in home: %v", entries)
	}
}
