package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/fangd/fangd/actors/auth/authtest"
)

// Sign in on the binary through a local OIDC provider, use the API with
// the session cookie as an operator, be refused an admin route, and keep
// the session across kill -9.
func TestOIDCSignInOnTheBinary(t *testing.T) {
	t.Parallel()
	idp := authtest.New("fangd", "s3cret-0123456789")
	defer idp.Close()
	idp.SetUser(authtest.User{Subject: "u-9", Email: "olga@example.com", EmailVerified: true, Name: "Olga", Groups: []string{"ops"}})
	cfg := fmt.Sprintf(`api_key = %q

[external_auth]
enabled = true
issuer_url = %q
client_id = "fangd"
client_secret = "vault:oidc-client"
allowed_domains = ["example.com"]
role_map = { ops = "operator" }
`, e2eKey, idp.URL) + loopbackPolicy
	home := t.TempDir()
	// The client secret lives in the vault (fangd vault set, on a stopped
	// daemon's home), not in the file.
	td := runFangd(t, home, fmt.Sprintf("api_key = %q\n", e2eKey))
	td.stop()
	if err := (&vaultSetCommand{home: home, in: strings.NewReader("s3cret-0123456789\n")}).Run(t.Context(), []string{"oidc-client"}); err != nil {
		t.Fatal(err)
	}
	td.config = cfg
	td.start()

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/dashboard/" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	get := func(method, path, csrf string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, td.base+path, nil)
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if st, body := get("GET", "/api/auth/login?return_to=/dashboard/", ""); st != 302 {
		t.Fatalf("sign-in: %d %s", st, body)
	}
	u, _ := url.Parse(td.base)
	csrf := ""
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "fangd_csrf" {
			csrf = ck.Value
		}
	}
	if st, body := get("GET", "/api/audit/recent", ""); st != 200 {
		t.Fatalf("operator read: %d %s", st, body)
	}
	if st, body := get("GET", "/api/audit/export", ""); st != 403 || !strings.Contains(body, "role 'operator'") {
		t.Fatalf("operator on an admin route: %d %s", st, body)
	}
	if st, body := get("PUT", "/api/logs/level", csrf); st != 403 {
		t.Fatalf("operator changes config: %d %s", st, body)
	}
	if err := td.p.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("kill -9 reported a clean exit")
	}
	td.start()
	// The cookie jar holds the old origin's cookies; the port changed.
	nu, _ := url.Parse(td.base)
	jar.SetCookies(nu, jar.Cookies(u))
	if st, body := get("GET", "/api/auth/userinfo", ""); st != 200 || !strings.Contains(body, `"email":"olga@example.com"`) || !strings.Contains(body, `"operator"`) {
		t.Fatalf("session after kill -9: %d %s", st, body)
	}
}
