package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func edgeDo(t *testing.T, method, url, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

// The `make run` default (no API key): a request with a foreign Host (DNS
// rebinding) can neither change the log level nor read the audit log, and
// names in allowed_hosts are served.
func TestForeignHostOnTheDefaultDaemon(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), "allowed_hosts = [\"fangd.test\"]\ncors_origin = [\"http://app.test:5173\"]\n", "FANGD_API_KEY=")
	code, _, body := edgeDo(t, "PUT", p.url+"/api/logs/level", `{"level":"trace"}`, "Host", "evil.example.com", "Content-Type", "application/json")
	if code != 403 || !strings.Contains(string(body), `"code":"host_not_allowed"`) {
		t.Fatalf("foreign Host PUT = %d %s", code, body)
	}
	if code, _, body := edgeDo(t, "GET", p.url+"/api/audit/recent", "", "Host", "evil.example.com"); code != 403 {
		t.Fatalf("foreign Host audit read = %d %s", code, body)
	}
	_, _, body = edgeDo(t, "GET", p.url+"/api/logs/level", "")
	if !strings.Contains(string(body), `"info"`) {
		t.Fatalf("log level after the refused PUT: %s", body)
	}
	if code, _, _ := edgeDo(t, "GET", p.url+"/api/health/detail", "", "Host", "fangd.test:4545"); code != 200 {
		t.Fatalf("allowed_hosts name refused: %d", code)
	}
	code, h, _ := edgeDo(t, "OPTIONS", p.url+"/api/logs/level", "", "Origin", "http://app.test:5173", "Access-Control-Request-Method", "PUT")
	if code != 204 || h.Get("Access-Control-Allow-Origin") != "http://app.test:5173" {
		t.Fatalf("preflight for a listed origin = %d %v", code, h)
	}
	_, _, body = edgeDo(t, "GET", p.url+"/api/audit/recent?limit=20", "")
	if strings.Contains(string(body), "logs/level") {
		t.Fatalf("a refused request was audited as a change: %s", body)
	}
}

// Failed authentications counted before a graceful stop are in the audit
// log after it, as one aggregated entry.
func TestFailedAuthAuditedAtStop(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	for range 7 {
		if code, _, _ := edgeDo(t, "GET", p.url+"/api/health/detail", "", "X-API-Key", "wrong-key-0123456789abcdef"); code != 401 {
			t.Fatalf("bad key: %d", code)
		}
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v\n%s", err, p.stderr)
	}
	p = startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	code, body := p.request(t, "GET", "/api/audit/recent?limit=20", "")
	var out struct {
		Entries []struct {
			EventType string `json:"event_type"`
			Details   string `json:"details"`
			SourceIP  string `json:"source_ip"`
		} `json:"entries"`
	}
	json.Unmarshal(body, &out)
	n := 0
	for _, e := range out.Entries {
		if e.EventType == "auth_failed" {
			n++
			if !strings.HasPrefix(e.Details, "count=7 ") || e.SourceIP != "127.0.0.1" {
				t.Fatalf("auth_failed = %+v", e)
			}
		}
	}
	if code != 200 || n != 1 {
		t.Fatalf("%d auth_failed entries after restart (want 1): %d %s", n, code, body)
	}
}

func TestEdgeConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for config, want := range map[string]string{
		"allowed_hosts = [\"http://x\"]\n":          "allowed_hosts",
		"cors_origins = [\"*\"]\n":                  "cors_origins",
		"trusted_proxies = [\"proxy.lan\"]\n":       "trusted_proxies",
		"[audit]\nauth_failure_interval_secs = 0\n": "audit.auth_failure_interval_secs",
	} {
		home := t.TempDir()
		os.WriteFile(filepath.Join(home, "config.toml"), []byte(config), 0o600)
		cmd := exec.Command(fangdBin, "serve", "--home", home, "--listen", freeAddr(t))
		cmd.Env = append(os.Environ(), "FANGD_API_KEY=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("%q: err=%v output=%s", config, err, out)
		}
	}
}
