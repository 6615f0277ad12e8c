package http

import (
	"encoding/json"
	"io"
	nethttp "net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/auth"
	"github.com/fangd/fangd/actors/auth/authtest"
	"github.com/fangd/fangd/store"
)

type oidcServer struct {
	*testServer
	idp *authtest.Provider
}

func newOIDCServer(t *testing.T) *oidcServer {
	t.Helper()
	idp := authtest.New("fangd-client", "client-secret-0123456789")
	t.Cleanup(idp.Close)
	os := &oidcServer{idp: idp}
	os.testServer = newTestServer(t, nil, func(s *Server) {
		vault, err := store.OpenVault(s.deps.Store, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		svc, err := auth.Start(s.deps.Kernel, s.deps.Store, auth.Options{Vault: vault, Config: auth.Config{
			Providers: []auth.Provider{{ID: "default", DisplayName: "SSO", IssuerURL: idp.URL, ClientID: idp.ClientID,
				ClientSecret: idp.ClientSecret, AllowedDomains: []string{"example.com"},
				RoleMap: map[string]string{"ops": RoleOperator, "admins": RoleAdmin}}},
			SessionTTL: time.Hour, RequireEmailVerified: true}})
		if err != nil {
			t.Fatal(err)
		}
		s.deps.Auth = svc
	})
	return os
}

// browser is a cookie-keeping client that follows redirects until one
// leaves the API (the dashboard's return_to).
type browser struct {
	c   *nethttp.Client
	jar *cookiejar.Jar
}

func newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{jar: jar, c: &nethttp.Client{Jar: jar, CheckRedirect: func(req *nethttp.Request, via []*nethttp.Request) error {
		if !strings.HasPrefix(req.URL.Path, "/api/") && !strings.HasPrefix(req.URL.Path, "/authorize") {
			return nethttp.ErrUseLastResponse
		}
		return nil
	}}}
}

func (b *browser) do(t *testing.T, method, u, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := nethttp.NewRequest(method, u, rd)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, raw}
}

func (b *browser) cookie(base, name string) string {
	u, _ := url.Parse(base)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func TestOIDCBrowserFlowSessionRolesCSRFAndLogout(t *testing.T) {
	t.Parallel()
	os := newOIDCServer(t)
	os.idp.SetUser(authtest.User{Subject: "u-7", Email: "ops@example.com", EmailVerified: true, Name: "Olga", Groups: []string{"ops"}})

	r := os.do(t, "GET", "/api/auth/providers", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"enabled":true`) || !strings.Contains(string(r.body), `"display_name":"SSO"`) {
		t.Fatalf("providers: %d %s", r.status, r.body)
	}
	br := newBrowser()
	r = br.do(t, "GET", os.url+"/api/auth/login?return_to=/dashboard/", "")
	if r.status != 302 || r.header.Get("Location") != "/dashboard/" {
		t.Fatalf("sign-in did not end at return_to: %d %s %s", r.status, r.header, r.body)
	}
	sc := r.header.Values("Set-Cookie")
	joined := strings.Join(sc, "\n")
	if !strings.Contains(joined, SessionCookie+"=fss_") || !strings.Contains(joined, "HttpOnly") || !strings.Contains(strings.ToLower(joined), "samesite=lax") {
		t.Fatalf("session cookie: %v", sc)
	}
	csrf := br.cookie(os.url, CSRFCookie)
	if csrf == "" {
		t.Fatal("no CSRF cookie")
	}

	// The session is honoured with the mapped role.
	if r := br.do(t, "GET", os.url+"/api/audit/recent", ""); r.status != 200 {
		t.Fatalf("operator read: %d %s", r.status, r.body)
	}
	if r := br.do(t, "GET", os.url+"/api/audit/export", ""); r.status != 403 || !strings.Contains(string(r.body), "role 'operator'") {
		t.Fatalf("operator on an admin route: %d %s", r.status, r.body)
	}
	form := "application/x-www-form-urlencoded"
	if r := br.do(t, "POST", os.url+"/api/auth/introspect", "token=x", "Content-Type", form); r.status != 403 || !strings.Contains(string(r.body), "csrf_failed") {
		t.Fatalf("cookie write without CSRF: %d %s", r.status, r.body)
	}
	if r := br.do(t, "POST", os.url+"/api/auth/introspect", "token=nonsense", "Content-Type", form, "X-CSRF-Token", csrf); r.status != 200 || strings.TrimSpace(string(r.body)) != `{"active":false}` {
		t.Fatalf("introspect unknown: %d %s", r.status, r.body)
	}
	session := br.cookie(os.url, SessionCookie)
	r = br.do(t, "POST", os.url+"/api/auth/introspect", "token="+session, "Content-Type", form, "X-CSRF-Token", csrf)
	var in auth.Introspection
	json.Unmarshal(r.body, &in)
	if r.status != 200 || !in.Active || in.Role != RoleOperator || in.Email != "ops@example.com" || in.Exp == 0 {
		t.Fatalf("introspect session: %d %s", r.status, r.body)
	}
	// An ID token the provider signed for fangd is active; one for
	// another audience is not.
	r = os.authed(t, "POST", "/api/auth/introspect", "", "Content-Type", form)
	if r.status != 400 {
		t.Fatalf("introspect without token: %d", r.status)
	}
	for aud, want := range map[string]bool{"fangd-client": true, "someone-else": false} {
		r := os.do(t, "POST", "/api/auth/introspect", "token="+os.idp.IDToken(aud), "Authorization", "Bearer "+testKey, "Content-Type", form)
		if r.status != 200 || strings.Contains(string(r.body), `"active":true`) != want {
			t.Fatalf("introspect id token for %s: %d %s", aud, r.status, r.body)
		}
	}
	if r := os.do(t, "POST", "/api/auth/introspect", "token=x", "Content-Type", form); r.status != 401 {
		t.Fatalf("introspect needs a caller: %d", r.status)
	}
	if r := br.do(t, "GET", os.url+"/api/auth/userinfo", ""); r.status != 200 || !strings.Contains(string(r.body), `"email":"ops@example.com"`) {
		t.Fatalf("userinfo: %d %s", r.status, r.body)
	}
	// The session token also works as a bearer (no CSRF: not a cookie).
	if r := os.do(t, "GET", "/api/audit/recent", "", "Authorization", "Bearer "+session); r.status != 200 {
		t.Fatalf("session bearer: %d", r.status)
	}
	var signedIn, acted bool
	for _, e := range os.recent(t, 30) {
		signedIn = signedIn || e.Actor == "oidc:default:ops@example.com" && e.EventType == "oidc_sign_in" && strings.Contains(e.Details, "role operator")
		acted = acted || e.Actor == "oidc:default:ops@example.com" && strings.Contains(e.Details, "/api/auth/introspect")
	}
	if !signedIn || !acted {
		t.Fatal("the session user's actions are not audited under its identity")
	}

	if r := br.do(t, "POST", os.url+"/api/auth/logout", "", "X-CSRF-Token", csrf); r.status != 200 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := os.do(t, "GET", "/api/audit/recent", "", "Authorization", "Bearer "+session); r.status != 401 {
		t.Fatalf("session after logout: %d", r.status)
	}
}

func TestOIDCRefusesTamperedReplayedAndForeignTokens(t *testing.T) {
	t.Parallel()
	os := newOIDCServer(t)
	// Stop at the callback to hold its URL.
	hold := func(b *browser) string {
		t.Helper()
		b.c.CheckRedirect = func(req *nethttp.Request, via []*nethttp.Request) error {
			if strings.HasPrefix(req.URL.Path, "/api/auth/callback") {
				return nethttp.ErrUseLastResponse
			}
			return nil
		}
		r := b.do(t, "GET", os.url+"/api/auth/login", "")
		if r.status != 302 {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		return r.header.Get("Location")
	}
	b := newBrowser()
	cb := hold(b)
	u, _ := url.Parse(cb)
	q := u.Query()
	q.Set("state", q.Get("state")+"x")
	if r := b.do(t, "GET", os.url+"/api/auth/callback?"+q.Encode(), ""); r.status != 400 || !strings.Contains(string(r.body), "invalid_state") {
		t.Fatalf("tampered state: %d %s", r.status, r.body)
	}
	// Another browser (no binding cookie) cannot use the state.
	if r := newBrowser().do(t, "GET", cb, ""); r.status != 400 || !strings.Contains(string(r.body), "invalid_state") {
		t.Fatalf("state from another browser: %d %s", r.status, r.body)
	}
	if r := b.do(t, "GET", cb, ""); r.status != 200 || !strings.Contains(string(r.body), `"role":"viewer"`) {
		t.Fatalf("the real callback (no mapped group: viewer): %d %s", r.status, r.body)
	}
	// Replayed: state and code are single use.
	if r := b.do(t, "GET", cb, ""); r.status != 400 {
		t.Fatalf("replayed callback: %d %s", r.status, r.body)
	}

	for name, c := range map[string]struct {
		knob func(p *authtest.Provider)
		user authtest.User
		want int
		code string
	}{
		"wrong nonce":      {func(p *authtest.Provider) { p.Nonce = "evil" }, authtest.User{}, 401, "invalid_nonce"},
		"other issuer":     {func(p *authtest.Provider) { p.Issuer = "http://127.0.0.1:1/other" }, authtest.User{}, 401, "invalid_id_token"},
		"other audience":   {func(p *authtest.Provider) { p.Audience = "someone-else" }, authtest.User{}, 401, "invalid_id_token"},
		"expired":          {func(p *authtest.Provider) { p.TTL = -time.Minute }, authtest.User{}, 401, "invalid_id_token"},
		"foreign domain":   {nil, authtest.User{Subject: "x", Email: "eve@evil.com", EmailVerified: true}, 403, "domain_not_allowed"},
		"unverified email": {nil, authtest.User{Subject: "y", Email: "bob@example.com"}, 403, "email_not_verified"},
	} {
		os.idp.Set(func(p *authtest.Provider) { p.Nonce, p.Issuer, p.Audience, p.TTL = "", "", "", time.Hour })
		os.idp.SetUser(authtest.User{Subject: "u-1", Email: "ada@example.com", EmailVerified: true})
		if c.knob != nil {
			os.idp.Set(c.knob)
		}
		if c.user.Subject != "" {
			os.idp.SetUser(c.user)
		}
		b := newBrowser()
		r := b.do(t, "GET", hold(b), "")
		if r.status != c.want || !strings.Contains(string(r.body), c.code) || b.cookie(os.url, SessionCookie) != "" {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := newBrowser().do(t, "GET", os.url+"/api/auth/login?return_to=//evil.example/", ""); r.status != 400 {
		t.Fatalf("off-site return_to: %d %s", r.status, r.body)
	}
	if r := os.do(t, "GET", "/api/auth/login/nope", ""); r.status != 404 {
		t.Fatalf("unknown provider: %d", r.status)
	}
}

func TestOIDCDisabled(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	if r := ts.do(t, "GET", "/api/auth/providers", ""); r.status != 200 || !strings.Contains(string(r.body), `"enabled":false`) {
		t.Fatalf("providers: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/api/auth/login", ""); r.status != 503 {
		t.Fatalf("login: %d", r.status)
	}
	if r := ts.do(t, "GET", "/api/auth/userinfo", "", "Authorization", "Bearer "+testKey); r.status != 200 || !strings.Contains(string(r.body), `"auth_method":"api_key"`) {
		t.Fatalf("userinfo with the key: %d %s", r.status, r.body)
	}
}

func TestOIDCRefreshRotatesSessionLibreFangShape(t *testing.T) {
	t.Parallel()
	os := newOIDCServer(t)
	os.idp.SetUser(authtest.User{Subject: "u-7", Email: "ops@example.com", EmailVerified: true, Name: "Olga", Groups: []string{"ops"}})
	br := newBrowser()
	if r := br.do(t, "GET", os.url+"/api/auth/login?return_to=/dashboard/", ""); r.status != 302 {
		t.Fatalf("sign-in: %d %s", r.status, r.body)
	}
	session, csrf := br.cookie(os.url, SessionCookie), br.cookie(os.url, CSRFCookie)
	js := "application/json"

	// Bad input: 400, nothing changes.
	for body, code := range map[string]string{`{}`: "invalid_input", `{"refresh_token":"  "}`: "invalid_input",
		`{"refresh_token":"rt_from_the_provider"}`: "unsupported_token"} {
		if r := os.do(t, "POST", "/api/auth/refresh", body, "Content-Type", js); r.status != 400 || !strings.Contains(string(r.body), code) {
			t.Fatalf("refresh %s: %d %s", body, r.status, r.body)
		}
	}
	if r := os.do(t, "POST", "/api/auth/refresh", `{"refresh_token":"fss_unknown"}`, "Content-Type", js); r.status != 401 {
		t.Fatalf("unknown session: %d %s", r.status, r.body)
	}
	// The cookie path needs the CSRF token.
	if r := br.do(t, "POST", os.url+"/api/auth/refresh", ""); r.status != 403 || !strings.Contains(string(r.body), "csrf_failed") {
		t.Fatalf("cookie refresh without CSRF: %d %s", r.status, r.body)
	}
	if r := os.do(t, "GET", "/api/audit/recent", "", "Authorization", "Bearer "+session); r.status != 200 {
		t.Fatalf("refused refreshes changed the session: %d", r.status)
	}

	// LibreFang's shape, with the session token in access_token.
	r := os.do(t, "POST", "/api/auth/refresh", `{"access_token":"`+session+`","provider":"default"}`, "Content-Type", js)
	var out struct {
		Token, TokenType, CSRF, Role string
		Refreshed                    bool
	}
	var raw map[string]any
	json.Unmarshal(r.body, &raw)
	out.Token, _ = raw["token"].(string)
	out.TokenType, _ = raw["token_type"].(string)
	out.CSRF, _ = raw["csrf_token"].(string)
	out.Role, _ = raw["role"].(string)
	out.Refreshed, _ = raw["provider_refreshed"].(bool)
	if r.status != 200 || !strings.HasPrefix(out.Token, "fss_") || out.Token == session || out.TokenType != "Bearer" ||
		out.CSRF == "" || out.CSRF == csrf || out.Role != RoleOperator || !out.Refreshed || raw["expires_in"] == nil {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	if _, leaked := raw["refresh_token"]; leaked || strings.Contains(string(r.body), "rt_") {
		t.Fatalf("the provider's refresh token leaked: %s", r.body)
	}
	if r := os.do(t, "GET", "/api/audit/recent", "", "Authorization", "Bearer "+session); r.status != 401 {
		t.Fatalf("old session token after refresh: %d", r.status)
	}
	if r := os.do(t, "GET", "/api/audit/recent", "", "Authorization", "Bearer "+out.Token); r.status != 200 {
		t.Fatalf("new session token: %d", r.status)
	}
	if os.idp.Refreshes() != 1 {
		t.Fatalf("provider refreshes: %d", os.idp.Refreshes())
	}
	var audited bool
	for _, e := range os.recent(t, 30) {
		audited = audited || e.EventType == "oidc_refresh" && e.Outcome == "ok" && e.Actor == "oidc:default:ops@example.com"
	}
	if !audited {
		t.Fatal("refresh not audited")
	}
}
