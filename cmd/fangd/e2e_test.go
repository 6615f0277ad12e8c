package main

// Black-box tests: build the real binary, run it on a free loopback port with
// a temp home, and talk HTTP to it as a user would.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

var fangdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fangd-e2e")
	if err != nil {
		panic(err)
	}
	fangdBin = filepath.Join(dir, "fangd")
	build := exec.Command("go", "build", "-race", "-o", fangdBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic("building fangd: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const e2eKey = "e2e-key-0123456789abcdef"

type proc struct {
	cmd    *exec.Cmd
	url    string
	home   string
	stderr *bytes.Buffer
	log    *syncWriter // writes stderr
	done   chan error
}

// freeAddr is a loopback host:port nothing listens on, for a daemon to
// take (ssrftest's closed address: a port the kernel just gave out).
var freeAddr = ssrftest.ClosedAddr

// The daemon tests call t.Parallel: each has its own home and
// daemon, they wait more than they compute, and this package is make
// test's critical path.

// startFangd runs `fangd serve` on home with config (may be empty) and env,
// and waits until /api/health answers.
func startFangd(t *testing.T, home, config string, env ...string) *proc {
	t.Helper()
	p := launch(t, home, config, env...)
	deadline := time.Now().Add(15 * time.Second)
	for tries := 1; time.Now().Before(deadline); {
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup, which waits on it
			// The free port was free only until someone else bound it
			// (tests run in parallel, and so do other packages' daemons):
			// another port, not a failed test.
			if p.log.contains("address already in use") && tries < 5 {
				tries++
				p = launch(t, home, config, env...)
				continue
			}
			t.Fatalf("fangd exited during start: %v\n%s", err, p.stderr)
		default:
		}
		// Another test's daemon may have taken the free port first (the
		// port is free only until someone binds it): its health answer
		// would pass for ours. Ours says it bound the port.
		if !p.log.contains(`"fangd is serving"`) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if res, err := http.Get(p.url + "/api/health"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fangd did not become healthy\n%s", p.stderr)
	return nil
}

func launch(t *testing.T, home, config string, env ...string) *proc {
	t.Helper()
	if config != "" {
		if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	cmd := exec.Command(fangdBin, "serve", "--home", home, "--listen", addr)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, url: "http://" + addr, home: home, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	p.log = &syncWriter{w: p.stderr}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done; p.done <- nil })
	return p
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *syncWriter) contains(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Contains(s.w.Bytes(), []byte(text))
}

func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("fangd did not exit")
		return nil
	}
}

// stopOrderly stops p with SIGTERM and fails unless it exits cleanly
// after logging its orderly stop.
func (p *proc) stopOrderly(t *testing.T) {
	t.Helper()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v\n%s", err, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), `"message":"stopped"`) {
		t.Fatalf("no orderly stop in the log:\n%s", p.stderr)
	}
}

func (p *proc) request(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	return p.requestAs(t, e2eKey, method, path, body)
}

// requestAs is request with another bearer token (a webhook trigger's, a
// peer's).
func (p *proc) requestAs(t *testing.T, token, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, p.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func verifyOffline(t *testing.T, home string) (audit.Report, int) {
	t.Helper()
	out, err := exec.Command(fangdBin, "audit", "verify", "--home", home).Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep audit.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("audit verify printed %q: %v", out, err)
	}
	return rep, code
}

func TestServeWithNoConfigAndGracefulStop(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := startFangd(t, home, "")
	res, err := http.Get(p.url + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]string
	json.NewDecoder(res.Body).Decode(&h)
	res.Body.Close()
	if h["status"] != "ok" || h["version"] == "" {
		t.Fatalf("health = %v", h)
	}
	p.stopOrderly(t)
	rep, code := verifyOffline(t, home)
	if code != 0 || rep.ChainLength != 2 { // daemon_started, daemon_stopped
		t.Fatalf("after graceful stop: code %d report %+v", code, rep)
	}
	for _, f := range []string{"vault.key", "audit.anchor", "data"} {
		if _, err := os.Stat(filepath.Join(home, f)); err != nil {
			t.Errorf("home lacks %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(home, "vault.key")); fi != nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("vault.key mode %v", fi.Mode().Perm())
	}
}

func TestSecondDaemonOnSameHomeFailsAtOnce(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	startFangd(t, home, "")
	start := time.Now()
	out, err := exec.Command(fangdBin, "serve", "--home", home, "--listen", freeAddr(t)).CombinedOutput()
	if err == nil {
		t.Fatal("second daemon started")
	}
	if !strings.Contains(string(out), "already using home") || time.Since(start) > 5*time.Second {
		t.Fatalf("second daemon: %v after %v: %s", err, time.Since(start), out)
	}
	// The offline verifier refuses too, instead of reading a live store.
	out, err = exec.Command(fangdBin, "audit", "verify", "--home", home).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already using home") {
		t.Fatalf("audit verify on a running home: %v %s", err, out)
	}
}

func TestRefusesNonLoopbackWithoutKeyAndBadConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"public bind without key", "", []string{"--listen", "0.0.0.0:0"}, "not a loopback address"},
		{"unknown key", "api_lisen = \"127.0.0.1:1\"\n", nil, "unknown key(s): api_lisen"},
		{"bad level", "[log]\nlevel = \"chatty\"\n", nil, "log.level"},
		{"negative rate", "[rate_limit]\napi_requests_per_minute = -1\n", nil, "api_requests_per_minute"},
	}
	for _, c := range cases {
		home := t.TempDir()
		if c.config != "" {
			os.WriteFile(filepath.Join(home, "config.toml"), []byte(c.config), 0o600)
		}
		args := append([]string{"serve", "--home", home}, c.args...)
		cmd := exec.Command(fangdBin, args...)
		cmd.Env = append(os.Environ(), "FANGD_API_KEY=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: err=%v output=%s", c.name, err, out)
		}
	}
}

func TestEnvOverridesConfigAndSecurityFollowsConfig(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	config := `api_key = "file-key-0123456789abcdef"
[rate_limit]
api_requests_per_minute = 0
[http]
security_headers = false
`
	p := startFangd(t, home, config, "FANGD_API_KEY="+e2eKey)
	code, body := p.request(t, "GET", "/api/security", "")
	if code != 200 {
		t.Fatalf("env key not accepted: %d %s", code, body)
	}
	var st struct {
		Systems map[string]string `json:"security_systems"`
		Total   int               `json:"total_systems"`
	}
	json.Unmarshal(body, &st)
	if st.Systems["gcra_rate_limiter"] != "inactive" || st.Systems["security_headers"] != "inactive" ||
		st.Systems["merkle_audit_trail"] != "active" || st.Total != 16 {
		t.Fatalf("security = %s", body)
	}
	req, _ := http.NewRequest("GET", p.url+"/api/security", nil)
	req.Header.Set("X-API-Key", "file-key-0123456789abcdef")
	res, _ := http.DefaultClient.Do(req)
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("file key still accepted although FANGD_API_KEY overrides it: %d", res.StatusCode)
	}
}

func TestRateLimitOnTheBinary(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), "[rate_limit]\napi_requests_per_minute = 3\n")
	// startFangd's own health probe spent one cell.
	var last *http.Response
	for range 3 {
		res, err := http.Get(p.url + "/api/health")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		last = res
	}
	if last.StatusCode != 429 || last.Header.Get("Retry-After") == "" {
		t.Fatalf("4th request: %d Retry-After=%q", last.StatusCode, last.Header.Get("Retry-After"))
	}
}

// TestKill9DuringWritesLosesNoAcknowledgedAudit kills the daemon while 16
// clients make audited changes, restarts it, and checks that the chain is
// valid and holds an entry for every change that got a 2xx.
func TestKill9DuringWritesLosesNoAcknowledgedAudit(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	var acked atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			levels := []string{"info", "debug"}
			for i := 0; ctx.Err() == nil && i < 25; i++ {
				body := fmt.Sprintf(`{"level":%q}`, levels[(w+i)%2])
				req, _ := http.NewRequestWithContext(ctx, "PUT", p.url+"/api/logs/level", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+e2eKey)
				req.Header.Set("Content-Type", "application/json")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == 200 {
					acked.Add(1)
				}
			}
		}()
	}
	for acked.Load() < 60 {
		time.Sleep(2 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil
	cancel()
	wg.Wait()
	n := acked.Load()

	rep, code := verifyOffline(t, home)
	if code != 0 || !rep.Valid() {
		t.Fatalf("chain after kill -9: code %d %+v", code, rep)
	}
	p2 := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	_, body := p2.request(t, "GET", "/api/audit/recent?limit=500", "")
	var rec struct {
		Entries []audit.Entry `json:"entries"`
	}
	json.Unmarshal(body, &rec)
	recorded := 0
	for _, e := range rec.Entries {
		if strings.Contains(e.Details, "PUT /api/logs/level -> 200") {
			recorded++
		}
	}
	if int64(recorded) < n {
		t.Fatalf("%d changes were acknowledged but only %d are in the audit log", n, recorded)
	}
	_, body = p2.request(t, "GET", "/api/audit/verify", "")
	json.Unmarshal(body, &rep)
	if !rep.Valid() {
		t.Fatalf("online verify after restart: %s", body)
	}
}

func TestTamperedEntryIsReportedOnlineAndOffline(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	for _, l := range []string{"debug", "info", "warn"} {
		p.request(t, "PUT", "/api/logs/level", `{"level":"`+l+`"}`)
	}
	p.stop(t, syscall.SIGTERM)

	db := storetest.Open(t, home)
	al := db.AuditLog()
	var raw []byte
	al.Scan(3, false, func(r store.AuditRecord) (bool, error) { raw = r.Raw; return false, nil })
	edited := bytes.Replace(raw, []byte(`"outcome":"ok"`), []byte(`"outcome":"denied"`), 1)
	if bytes.Equal(edited, raw) {
		t.Fatalf("entry 3 not edited: %s", raw)
	}
	al.Overwrite(store.AuditRecord{ID: 3, Raw: edited})
	db.Close()

	rep, code := verifyOffline(t, home)
	if code != 1 || rep.Status != "broken" || rep.BrokenAt != 3 {
		t.Fatalf("offline verify of tampered log: code %d %+v", code, rep)
	}
	p2 := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	status, body := p2.request(t, "GET", "/api/audit/verify", "")
	var online map[string]any
	json.Unmarshal(body, &online)
	if status != 200 || online["status"] != "broken" || online["broken_at"] != float64(3) {
		t.Fatalf("online verify of tampered log: %d %s", status, body)
	}
}

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(fangdBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "fangd ") {
		t.Fatalf("version: %v %q", err, out)
	}
	if err := exec.Command(fangdBin, "bogus").Run(); err == nil {
		t.Fatal("unknown subcommand exited 0")
	}
}
