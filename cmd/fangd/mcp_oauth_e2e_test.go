package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// A remote MCP server behind OAuth, end to end against the real binary:
// the server shows needs_auth; POST .../auth/start gives an auth_url whose
// redirect comes back to fangd's own callback route (which needs no API
// key: the browser has none); fangd then connects and the tool works; the
// token survives a restart; revoke forgets it. Secrets never show.
func TestMCPOAuthEndToEnd(t *testing.T) {
	t.Parallel()
	o := mcptest.NewOAuthServer(t)
	home := t.TempDir()
	cfg := "[rate_limit]\napi_requests_per_minute = 0\n[network_policy]\nallow_hosts = [\"127.0.0.1\"]\n"
	p := startFangd(t, home, cfg, "FANGD_API_KEY="+e2eKey)
	code, body := p.request(t, "POST", "/api/mcp/servers", `{"name":"remote","transport":{"type":"http","url":"`+o.URL+`"}}`)
	if code != 201 {
		t.Fatalf("add: %d %s", code, body)
	}
	authState := func() map[string]any {
		code, body := p.request(t, "GET", "/api/mcp/servers/remote/auth/status", "")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		var out struct {
			Server string         `json:"server"`
			Auth   map[string]any `json:"auth"`
		}
		json.Unmarshal(body, &out)
		if out.Server != "remote" {
			t.Fatalf("status names %q", out.Server)
		}
		return out.Auth
	}
	waitState := func(want string) map[string]any {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := authState()
			if st["state"] == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("auth state %v, want %s", st, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitState("needs_auth")

	if code, body := p.request(t, "POST", "/api/mcp/servers/remote/auth/start", `{"nope":1}`); code != 400 {
		t.Fatalf("start with an unknown field: %d %s", code, body)
	}
	code, body = p.request(t, "POST", "/api/mcp/servers/remote/auth/start", "")
	if code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	var started struct {
		AuthURL string `json:"auth_url"`
	}
	json.Unmarshal(body, &started)
	if st := authState(); st["state"] != "pending_auth" || st["auth_url"] != started.AuthURL {
		t.Fatalf("status while pending: %v", st)
	}
	back, err := o.Approve(started.AuthURL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(back.String(), p.url+"/api/mcp/servers/remote/auth/callback?") {
		t.Fatalf("the authorization server sent the browser to %s", back)
	}
	// A forged state is refused without touching the pending flow.
	forged := strings.Replace(back.String(), "state=", "state=x", 1)
	if code, text := browserGet(t, forged); code != 400 || !strings.Contains(text, "Authorization failed") {
		t.Fatalf("forged state: %d %s", code, text)
	}
	if code, text := browserGet(t, back.String()); code != 200 || !strings.Contains(text, "Authorization complete") {
		t.Fatalf("callback: %d %s", code, text)
	}
	st := waitState("authorized")
	if st["refreshable"] != true {
		t.Fatalf("authorized without a refresh token: %v", st)
	}
	callEcho := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := p.request(t, "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
			if code == 200 && strings.Contains(string(body), "mcp_remote_echo") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the remote tool never appeared: %d %s", code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	callEcho()

	p.stop(t, syscall.SIGTERM)
	p = startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	waitState("authorized")
	callEcho()
	if r, x, _ := o.Counts(); r != 1 || x != 1 {
		t.Fatalf("after a restart: %d registrations, %d exchanges (the stored token should serve)", r, x)
	}

	code, body = p.request(t, "DELETE", "/api/mcp/servers/remote/auth/revoke", "")
	if code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	waitState("needs_auth")
	code, body = p.request(t, "GET", "/api/audit/recent?limit=200", "")
	for _, want := range []string{"mcp_oauth_authorized", "mcp_oauth_revoked"} {
		if code != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("audit lacks %s: %s", want, body)
		}
	}
	if p.log.contains("access_token") || p.log.contains("refresh_token") {
		t.Fatal("a token field reached the log")
	}
	if code, _ := p.request(t, "POST", "/api/mcp/servers/nope/auth/start", ""); code != 404 {
		t.Fatalf("start on an unknown server: %d", code)
	}
	// Taint routes belong to the security systems: a clear 501, not a 404.
	for _, r := range [][3]string{{"PATCH", "/api/mcp/servers/remote/taint", `{}`}, {"GET", "/api/mcp/taint-rules", ""}} {
		code, body := p.request(t, r[0], r[1], r[2])
		if code != 501 || !strings.Contains(string(body), "not implemented") || !strings.Contains(string(body), "taint") {
			t.Fatalf("%s %s: %d %s", r[0], r[1], code, body)
		}
	}
}

// browserGet follows nothing and sends no API key, like a browser
// arriving from the authorization server.
func browserGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
