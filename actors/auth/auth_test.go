package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/auth/authtest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

// signIn runs the flow without a browser: the provider's authorize
// redirect carries the code and state back.
func signIn(t *testing.T, s *Service) (string, *Session) {
	t.Helper()
	ctx := context.Background()
	ls, err := s.Login(ctx, "", "", "http://127.0.0.1:1/api/auth/callback")
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(ls.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	loc, _ := url.Parse(res.Header.Get("Location"))
	tok, sess, _, err := s.Callback(ctx, loc.Query().Get("code"), loc.Query().Get("state"), ls.Binding)
	if err != nil {
		t.Fatal(err)
	}
	return tok, sess
}

func TestSessionsSurviveRestartExpireAndEndOnLogout(t *testing.T) {
	idp := authtest.New("c", "secret-0123456789")
	defer idp.Close()
	idp.SetUser(authtest.User{Subject: "s", Email: "a@example.com", EmailVerified: true, Groups: []string{"admins", "ops"}})
	home := t.TempDir()
	now := &atomic.Int64{}
	now.Store(time.Now().UnixNano())
	var stop func()
	start := func() *Service {
		db, vault := storetest.OpenWithVault(t, home)
		k := kernel.New(zerolog.Nop())
		s, err := Start(k, db, Options{Vault: vault, Now: func() time.Time { return time.Unix(0, now.Load()) }, Config: Config{SessionTTL: time.Hour,
			Providers: []Provider{{ID: "p", IssuerURL: idp.URL, ClientID: "c", ClientSecret: "secret-0123456789",
				RoleMap: map[string]string{"ops": "operator", "admins": "admin"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		stop = func() {
			kerneltest.Stop(k, db)
		}
		return s
	}
	s := start()
	defer func() { stop() }()
	tok, sess := signIn(t, s)
	if sess.Role != "admin" {
		t.Fatalf("the highest mapped role wins: %q", sess.Role)
	}
	if _, ok := s.Session(tok); !ok {
		t.Fatal("new session does not authenticate")
	}
	stop()
	s = start()
	if got, ok := s.Session(tok); !ok || got.Email != "a@example.com" {
		t.Fatal("session lost on restart")
	}
	tok2, _ := signIn(t, s)
	if err := s.Logout(context.Background(), tok2); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Session(tok2); ok {
		t.Fatal("session survives logout")
	}
	now.Add(int64(time.Hour + time.Second))
	if _, ok := s.Session(tok); ok {
		t.Fatal("expired session authenticates")
	}
	stop()
	s = start()
	if _, ok := s.Session(tok2); ok {
		t.Fatal("logged-out session back after restart")
	}
}

func TestReturnToIsSameOriginOnly(t *testing.T) {
	for in, want := range map[string]bool{"": true, "/dashboard/": true, "/a?b=c": true, "//evil.com": false, "/\\evil.com": false,
		"https://evil.com": false, "evil": false, "/x\r\nSet-Cookie: a=b": false} {
		if SafeReturnTo(in) != want {
			t.Fatalf("SafeReturnTo(%q) = %v", in, !want)
		}
	}
}

// startWith starts a service on a fresh store for one provider config.
func startWith(t *testing.T, p Provider) *Service {
	t.Helper()
	s, _ := startIn(t, t.TempDir(), p)
	return s
}

// startIn starts a service on the store in home; stop ends it.
func startIn(t *testing.T, home string, p Provider) (s *Service, stop func()) {
	t.Helper()
	db, vault := storetest.OpenWithVault(t, home)
	k := kernel.New(zerolog.Nop())
	s, err := Start(k, db, Options{Vault: vault, Config: Config{SessionTTL: time.Hour, Providers: []Provider{p}}})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { kerneltest.Stop(k, db) }) }
	t.Cleanup(stop)
	return s, stop
}

// signInProvider is a fake provider that vouches for one user, its
// config, and a home for the service's store.
func signInProvider(t *testing.T) (*authtest.Provider, Provider, string) {
	t.Helper()
	idp := authtest.New("c", "secret-0123456789")
	t.Cleanup(idp.Close)
	idp.SetUser(authtest.User{Subject: "s", Email: "a@example.com", EmailVerified: true})
	return idp, Provider{ID: "p", IssuerURL: idp.URL, ClientID: "c", ClientSecret: "secret-0123456789"}, t.TempDir()
}

// storedSessions reads the session records as written, bypassing the
// service.
func storedSessions(t *testing.T, home string) map[string]json.RawMessage {
	t.Helper()
	db := storetest.Open(t, home)
	defer db.Close()
	out := map[string]json.RawMessage{}
	if err := store.NewCollection[json.RawMessage](db, "auth/sessions").Each(func(id string, v json.RawMessage) bool {
		out[id] = v
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// A copy of the store must not hand out a refresh token the provider
// honours: it is stored sealed, and still refreshes after a restart.
func TestProviderRefreshTokenStoredSealed(t *testing.T) {
	idp, p, home := signInProvider(t)
	s, stop := startIn(t, home, p)
	tok, sess := signIn(t, s)
	if sess.Upstream == "" {
		t.Fatal("the provider's refresh token was not kept")
	}
	stop()
	recs := storedSessions(t, home)
	if len(recs) != 1 {
		t.Fatalf("%d stored sessions", len(recs))
	}
	for _, raw := range recs {
		if strings.Contains(string(raw), sess.Upstream) || !strings.Contains(string(raw), `"upstream_sealed"`) {
			t.Fatalf("stored session carries the refresh token in the clear or not at all: %s", raw)
		}
	}
	s, _ = startIn(t, home, p)
	if _, _, upstream, err := s.Refresh(context.Background(), tok); err != nil || !upstream || idp.Refreshes() != 1 {
		t.Fatalf("refresh after restart: upstream=%v refreshes=%d err=%v", upstream, idp.Refreshes(), err)
	}
}

// Records written before sealing carried the token in the clear: they
// keep working and are rewritten sealed at the first start.
func TestLegacyClearRefreshTokenIsResealed(t *testing.T) {
	_, p, home := signInProvider(t)
	s, stop := startIn(t, home, p)
	tok, sess := signIn(t, s)
	stop()
	// Rewrite the record the way older versions stored it.
	db := storetest.Open(t, home)
	coll := store.NewCollection[map[string]any](db, "auth/sessions")
	hash := hashOf(tok)
	rec, err := coll.Get(hash)
	if err != nil {
		t.Fatal(err)
	}
	delete(rec, "upstream_sealed")
	rec["upstream_refresh"] = sess.Upstream
	if err := coll.Put(hash, rec); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, stop = startIn(t, home, p)
	stop() // awaits the reseal write
	for _, raw := range storedSessions(t, home) {
		if strings.Contains(string(raw), sess.Upstream) || strings.Contains(string(raw), "upstream_refresh") {
			t.Fatalf("legacy record not resealed: %s", raw)
		}
	}
	s, _ = startIn(t, home, p)
	if _, _, upstream, err := s.Refresh(context.Background(), tok); err != nil || !upstream {
		t.Fatalf("legacy session does not refresh with the provider: upstream=%v err=%v", upstream, err)
	}
}

// A store moved to a daemon with another vault key: the refresh token
// does not open, and the session ends rather than rotating on fangd's
// word alone.
func TestSessionWhoseTokenDoesNotOpenIsDropped(t *testing.T) {
	t.Setenv(store.VaultKeyEnv, "")
	_, p, home := signInProvider(t)
	s, stop := startIn(t, home, p)
	tok, _ := signIn(t, s)
	stop()
	if err := os.Remove(filepath.Join(home, "vault.key")); err != nil {
		t.Fatal(err)
	}
	s, _ = startIn(t, home, p)
	if _, ok := s.Session(tok); ok {
		t.Fatal("a session whose refresh token does not open still authenticates")
	}
}

func TestRefreshRotatesSessionWithProviderRefreshToken(t *testing.T) {
	idp := authtest.New("c", "secret-0123456789")
	defer idp.Close()
	idp.SetUser(authtest.User{Subject: "s", Email: "a@example.com", EmailVerified: true, Groups: []string{"ops"}})
	s := startWith(t, Provider{ID: "p", IssuerURL: idp.URL, ClientID: "c", ClientSecret: "secret-0123456789",
		RoleMap: map[string]string{"ops": "operator", "admins": "admin"}})
	ctx := context.Background()
	tok, sess := signIn(t, s)
	if sess.Upstream == "" {
		t.Fatal("the provider's refresh token was not kept")
	}
	// The provider now says the user is an admin: the refresh re-maps.
	idp.SetUser(authtest.User{Subject: "s", Email: "a@example.com", EmailVerified: true, Groups: []string{"admins"}})
	nt, ns, upstream, err := s.Refresh(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !upstream || idp.Refreshes() != 1 {
		t.Fatalf("provider not asked: upstream=%v refreshes=%d", upstream, idp.Refreshes())
	}
	if nt == tok || ns.CSRF == sess.CSRF || ns.ID != sess.ID || ns.Role != "admin" || ns.Upstream == sess.Upstream {
		t.Fatalf("not rotated: %+v", ns)
	}
	if _, ok := s.Session(tok); ok {
		t.Fatal("the old token still works after refresh")
	}
	if got, ok := s.Session(nt); !ok || got.Role != "admin" {
		t.Fatal("the new token does not work")
	}
	if _, _, _, err := s.Refresh(ctx, tok); !errors.Is(err, ErrNotRefreshable) {
		t.Fatalf("refreshing a spent token: %v", err)
	}
	// Signed out at the provider: the refresh ends the session.
	idp.RevokeRefreshTokens()
	if _, _, _, err := s.Refresh(ctx, nt); kernel.AsError(err) == nil || kernel.AsError(err).Code != "refresh_refused" {
		t.Fatalf("refused refresh: %v", err)
	}
	if _, ok := s.Session(nt); ok {
		t.Fatal("session survives the provider's refusal")
	}
}

func TestProviderWithoutDiscoveryConfiguredByEndpoints(t *testing.T) {
	idp := authtest.New("c", "secret-0123456789")
	defer idp.Close()
	idp.Set(func(p *authtest.Provider) { p.NoDiscovery = true })
	ctx := context.Background()
	// Discovery alone fails, clearly.
	s := startWith(t, Provider{ID: "p", IssuerURL: idp.URL, ClientID: "c", ClientSecret: "secret-0123456789"})
	if _, err := s.Login(ctx, "", "", "http://127.0.0.1:1/api/auth/callback"); kernel.AsError(err) == nil || kernel.AsError(err).Code != "oidc_discovery_failed" {
		t.Fatalf("no discovery document: %v", err)
	}
	// With the endpoints, the whole flow works and the ID token verifies
	// against jwks_uri; userinfo uses userinfo_url.
	s = startWith(t, Provider{ID: "p", IssuerURL: idp.URL, ClientID: "c", ClientSecret: "secret-0123456789",
		AuthURL: idp.URL + "/authorize", TokenURL: idp.URL + "/token", JWKSURI: idp.URL + "/jwks", UserInfoURL: idp.URL + "/userinfo"})
	tok, sess := signIn(t, s)
	if sess.Email != "ada@example.com" || sess.Issuer != idp.URL {
		t.Fatalf("session: %+v", sess)
	}
	if in := s.Introspect(ctx, idp.IDToken("c")); !in.Active {
		t.Fatal("an ID token signed by the manual provider is inactive")
	}
	if in := s.Introspect(ctx, idp.IDToken("other")); in.Active {
		t.Fatal("audience not checked on the manual provider")
	}
	if _, _, up, err := s.Refresh(ctx, tok); err != nil || !up {
		t.Fatalf("refresh through token_url: %v %v", up, err)
	}
	// The issuer is still checked: a provider whose tokens name another
	// issuer is refused.
	idp.Set(func(p *authtest.Provider) { p.Issuer = "https://elsewhere.example" })
	if in := s.Introspect(ctx, idp.IDToken("c")); in.Active {
		t.Fatal("issuer not checked on the manual provider")
	}
}
