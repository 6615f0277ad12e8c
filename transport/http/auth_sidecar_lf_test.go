package http

import (
	"encoding/json"
	nethttp "net/http"
	"net/url"
	"strings"
	"testing"
)

// LibreFang's dashboard sign-in routes (server.rs dashboard_auth_check,
// dashboard_login, change_password; routes/passkey.rs): the mode check
// answers {mode, username} with fangd's real mode, and the account and
// passkey routes answer 501 naming the route, without a credential too
// (LibreFang serves them before sign-in).
func TestLibreFangDashboardAuthRoutes(t *testing.T) {
	t.Parallel()
	open := newTestServer(t, func(c *Config) { c.APIKey = "" })
	var chk map[string]any
	open.mustStatus(t, 200, "GET", "/api/auth/dashboard-check", "").json(t, &chk)
	if chk["mode"] != "none" || chk["username"] != "" || chk["oidc"] != false {
		t.Fatalf("no key: %v", chk)
	}
	keyed := newTestServer(t, func(c *Config) { c.APIKey = "k-0123456789abcdef0123456789" })
	r := keyed.do(t, "GET", "/api/auth/dashboard-check", "")
	if err := json.Unmarshal(r.body, &chk); err != nil || r.status != 200 || chk["mode"] != "api_key" || chk["username"] != "" {
		t.Fatalf("keyed: %d %s", r.status, r.body)
	}
	for _, rt := range []struct{ method, path, body string }{
		{"POST", "/api/auth/dashboard-login", `{"username":"admin","password":"pw"}`},
		{"POST", "/api/auth/change-password", `{"current_password":"a","new_password":"b"}`},
		{"POST", "/api/auth/passkey/registration-options", `{}`},
		{"POST", "/api/auth/passkey/registration-verify", `{}`},
		{"POST", "/api/auth/passkey/authentication-options", `{}`},
		{"POST", "/api/auth/passkey/authentication-verify", `{}`},
		{"GET", "/api/auth/passkey/credentials", ""},
		{"DELETE", "/api/auth/passkey/credentials/cred-1", ""},
	} {
		r := keyed.do(t, rt.method, rt.path, rt.body) // no key: still the honest 501
		e := r.envelope(t)
		route := strings.Replace(rt.path, "cred-1", "{id}", 1)
		if r.status != 501 || e.Code != "not_implemented" || !strings.Contains(e.Error, rt.method+" "+route) || !strings.Contains(e.Error, "API key") {
			t.Fatalf("%s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
}

// LibreFang's POST /api/auth/callback takes {code, state} as JSON (its
// SPA posts what the provider handed it) and answers the session; fangd
// finishes the same sign-in as the GET redirect does. The flow starts at
// LibreFang's per-provider login route.
func TestOIDCCallbackByPostLibreFangShape(t *testing.T) {
	t.Parallel()
	os := newOIDCServer(t)
	b := newBrowser()
	b.c.CheckRedirect = func(req *nethttp.Request, via []*nethttp.Request) error { return nethttp.ErrUseLastResponse }
	// LibreFang's GET /api/auth/login/{provider}: a redirect to that provider.
	r := b.do(t, "GET", os.url+"/api/auth/login/default", "")
	u, err := url.Parse(r.header.Get("Location"))
	if r.status != 302 || err != nil {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	// The provider's authorize endpoint redirects to the callback with code and state.
	r = b.do(t, "GET", u.String(), "")
	cb, err := url.Parse(r.header.Get("Location"))
	if err != nil || !strings.HasPrefix(cb.Path, "/api/auth/callback") {
		t.Fatalf("authorize: %d %v %s", r.status, r.header, r.body)
	}
	q := cb.Query()
	bad, _ := json.Marshal(map[string]string{"code": q.Get("code"), "state": q.Get("state") + "x"})
	if r := b.do(t, "POST", os.url+"/api/auth/callback", string(bad), "Content-Type", "application/json"); r.status != 400 || !strings.Contains(string(r.body), "invalid_state") {
		t.Fatalf("tampered state: %d %s", r.status, r.body)
	}
	body, _ := json.Marshal(map[string]string{"code": q.Get("code"), "state": q.Get("state")})
	r = b.do(t, "POST", os.url+"/api/auth/callback", string(body), "Content-Type", "application/json")
	var s map[string]any
	if err := json.Unmarshal(r.body, &s); err != nil || r.status != 200 || s["token"] == nil || s["token_type"] != "Bearer" || s["expires_in"] == nil {
		t.Fatalf("callback: %d %s", r.status, r.body)
	}
}

// LibreFang's sidecar channel routes (routes/channels.rs): the form
// values keyed by the adapter's environment variable names configure the
// channel in process, answered with LibreFang's reload plan; DELETE
// removes it, 404 for one not configured. Bad input changes nothing.
func TestLibreFangSidecarChannelRoutes(t *testing.T) {
	t.Parallel()
	ts, fake := channelServer(t)
	if r := ts.authed(t, "POST", "/api/channels/sidecar/nosuch/configure", `{"values":{}}`); r.status != 404 {
		t.Fatalf("unknown adapter: %d %s", r.status, r.body)
	}
	for _, bad := range []string{`{}`, `{"values":{"TELEGRAM_BOT_TOKEN":"x"},"extra":1}`, `{"values":{"NOPE":"x"}}`,
		`{"values":{"TELEGRAM_BOT_TOKEN":"` + tgToken + `","bot_token":"` + tgToken + `"}}`} {
		if r := ts.authed(t, "POST", "/api/channels/sidecar/telegram/configure", bad); r.status != 400 {
			t.Fatalf("%s: %d %s", bad, r.status, r.body)
		}
	}
	if r := ts.authed(t, "DELETE", "/api/channels/sidecar/telegram", ""); r.status != 404 {
		t.Fatalf("delete unconfigured: %d %s", r.status, r.body)
	}
	body, _ := json.Marshal(map[string]any{"values": map[string]string{"TELEGRAM_BOT_TOKEN": tgToken, "api_url": fake.URL(),
		"poll_interval_secs": "1"}})
	r := ts.authed(t, "POST", "/api/channels/sidecar/telegram/configure", string(body))
	var res map[string]any
	if err := json.Unmarshal(r.body, &res); err != nil || r.status != 200 || res["status"] != "saved" || res["restart_required"] != false ||
		res["hot_actions_applied"] == nil || res["shadowed_secrets"] == nil || res["channel"] != "telegram" || res["adapter"] != "telegram" {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), "bot_token") || strings.Contains(string(r.body), tgToken) {
		t.Fatalf("fields named, secret not shown: %s", r.body)
	}
	var ch map[string]any
	ts.mustStatus(t, 200, "GET", "/api/channels/telegram", "").json(t, &ch)
	if ch["configured"] != true || ch["has_token"] != true {
		t.Fatalf("after configure: %v", ch)
	}
	r = ts.authed(t, "DELETE", "/api/channels/sidecar/telegram", "")
	if err := json.Unmarshal(r.body, &res); err != nil || r.status != 200 || res["status"] != "removed" || res["restart_required"] != false {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	ts.mustStatus(t, 200, "GET", "/api/channels/telegram", "").json(t, &ch)
	if ch["configured"] != false {
		t.Fatalf("after delete: %v", ch)
	}
}
