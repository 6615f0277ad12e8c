package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp/mcptest"
	"github.com/fangd/fangd/store/storetest"
)

const testRedirect = "http://127.0.0.1:4545/api/mcp/servers/o/auth/callback"

func authState(t *testing.T, h *harness, name string) AuthStatus {
	t.Helper()
	st, err := h.m.AuthStatus(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// authorize runs a whole flow: start, the user's consent, the redirect.
func authorize(t *testing.T, h *harness, o *mcptest.OAuthServer, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authURL, err := h.m.StartAuth(ctx, name, testRedirect)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if st := authState(t, h, name); st.State != AuthPending || st.AuthURL != authURL {
		t.Fatalf("status while waiting for the redirect: %+v", st)
	}
	back, err := o.Approve(authURL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(back.String(), testRedirect+"?") {
		t.Fatalf("redirected to %s", back)
	}
	q := back.Query()
	if err := h.m.CompleteAuth(ctx, name, CallbackParams{Code: q.Get("code"), State: q.Get("state")}); err != nil {
		t.Fatalf("callback: %v", err)
	}
}

func storedRecord(t *testing.T, h *harness, name string) *oauthRecord {
	t.Helper()
	rec, err := loadOAuth(h.vault, name)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// A server that wants OAuth says so (needs_auth, not retried); a flow
// started from the API and finished by the redirect stores the tokens in
// the vault and connects; after a restart the stored token is used with
// no new registration or consent; the status never shows a token.
func TestOAuthFlowConnectsAndSurvivesRestart(t *testing.T) {
	home := t.TempDir()
	o := mcptest.NewOAuthServer(t)
	h := newHarness(t, home, nil)
	h.add(Spec{Name: "o", Transport: Transport{Type: TransportHTTP, URL: o.URL}})
	v := h.waitFor("o", "refused", func(v ServerView) bool { return v.Status == StatusError })
	if v.LastErrorCode != codeAuthRequired {
		t.Fatalf("last_error_code %q, want %s (%s)", v.LastErrorCode, codeAuthRequired, v.LastError)
	}
	if st := authState(t, h, "o"); st.State != AuthNeedsAuth {
		t.Fatalf("status before authorizing: %+v", st)
	}

	authorize(t, h, o, "o")
	h.waitConnected("o")
	res, err := h.call("mcp_o_echo", map[string]any{"message": "hi"})
	if err != nil || textOf(res) != "echo: hi" {
		t.Fatalf("call with the token: %q %v", textOf(res), err)
	}
	st := authState(t, h, "o")
	if st.State != AuthAuthorized || !st.Refreshable || st.ExpiresAt == nil {
		t.Fatalf("status after authorizing: %+v", st)
	}
	rec := storedRecord(t, h, "o")
	raw, _ := json.Marshal(st)
	if rec == nil || strings.Contains(string(raw), rec.Token.AccessToken) || strings.Contains(string(raw), rec.Token.RefreshToken) {
		t.Fatalf("status %s shows a token (or none stored)", raw)
	}
	// Audit entries are appended off the actor: wait for it.
	eventually(t, "the authorization was audited", func() bool { return h.auditHas("mcp_oauth_authorized", "server o") })

	h.stop()
	h = newHarness(t, home, nil)
	h.waitConnected("o")
	if r, x, _ := o.Counts(); r != 1 || x != 1 {
		t.Fatalf("restart registered %d clients and exchanged %d codes; the stored token should serve", r, x)
	}
}

// An expired stored token is refreshed, and the new one saved, so the
// next restart does not refresh again with a spent token.
func TestOAuthRefreshesExpiredTokenAndSavesIt(t *testing.T) {
	home, o := expiredHome(t)
	o.ExpireAccessTokens()
	h := newHarness(t, home, nil)
	h.waitConnected("o")
	if _, _, refreshes := o.Counts(); refreshes != 1 {
		t.Fatalf("%d refreshes, want 1", refreshes)
	}
	rec := storedRecord(t, h, "o")
	if time.Until(rec.Token.Expiry) < 30*time.Minute {
		t.Fatalf("the refreshed token was not saved: expiry %s", rec.Token.Expiry)
	}
}

// expiredHome is where every refresh test starts: server "o" authorized
// against a fresh OAuth server in a new home, the manager stopped, and the
// stored token expired.
func expiredHome(t *testing.T) (string, *mcptest.OAuthServer) {
	home := t.TempDir()
	o := mcptest.NewOAuthServer(t)
	h := newHarness(t, home, nil)
	h.add(Spec{Name: "o", Transport: Transport{Type: TransportHTTP, URL: o.URL}})
	authorize(t, h, o, "o")
	h.waitConnected("o")
	h.stop()
	expireStored(t, home, "o")
	return home, o
}

// expireStored rewrites a stopped home's stored token as expired.
func expireStored(t *testing.T, home, name string) {
	t.Helper()
	db, vault := storetest.OpenWithVault(t, home)
	defer db.Close()
	rec, err := loadOAuth(vault, name)
	if err != nil || rec == nil {
		t.Fatalf("stored record: %v %v", rec, err)
	}
	rec.Token.Expiry = time.Now().Add(-time.Hour)
	if err := saveOAuth(vault, name, rec); err != nil {
		t.Fatal(err)
	}
}

// A refresh the authorization server refuses (the user revoked the
// grant) is permanent: status expired, no retry storm.
func TestOAuthRefusedRefreshIsExpiredNotRetried(t *testing.T) {
	home, o := expiredHome(t)
	o.SetRefuseRefresh(true)
	h := newHarness(t, home, nil)
	v := h.waitFor("o", "refused", func(v ServerView) bool { return v.Status == StatusError })
	if v.LastErrorCode != codeAuthRequired {
		t.Fatalf("last error %q (%s)", v.LastErrorCode, v.LastError)
	}
	if st := authState(t, h, "o"); st.State != AuthExpired {
		t.Fatalf("status %+v, want expired", st)
	}
	if n := reconnectAttempts(h, "o"); n != 0 {
		t.Fatalf("%d reconnect attempts after a refused refresh", n)
	}
}

// The redirect's state is the flow's one-time credential: an unknown or
// replayed state, a state of another server, or a flow replaced by a
// newer start are refused; an error from the authorization server fails
// the flow and the status says why.
func TestOAuthCallbackStateRules(t *testing.T) {
	o := mcptest.NewOAuthServer(t)
	h := newHarness(t, t.TempDir(), nil)
	h.add(Spec{Name: "o", Transport: Transport{Type: TransportHTTP, URL: o.URL}})
	h.add(Spec{Name: "p", Transport: Transport{Type: TransportHTTP, URL: o.URL}})
	ctx := context.Background()
	isCode := func(err error, code string) bool {
		var ke *kernel.Error
		return errors.As(err, &ke) && ke.Code == code
	}

	first, err := h.m.StartAuth(ctx, "o", testRedirect)
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.m.StartAuth(ctx, "o", testRedirect)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := o.Approve(first)
	if err := h.m.CompleteAuth(ctx, "o", CallbackParams{Code: old.Query().Get("code"), State: old.Query().Get("state")}); !isCode(err, "oauth_state_unknown") {
		t.Fatalf("a replaced flow's redirect: %v", err)
	}
	back, _ := o.Approve(second)
	q := back.Query()
	if err := h.m.CompleteAuth(ctx, "p", CallbackParams{Code: q.Get("code"), State: q.Get("state")}); !isCode(err, "oauth_state_unknown") {
		t.Fatalf("another server's state: %v", err)
	}
	if err := h.m.CompleteAuth(ctx, "o", CallbackParams{Code: q.Get("code"), State: q.Get("state")}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.CompleteAuth(ctx, "o", CallbackParams{Code: q.Get("code"), State: q.Get("state")}); !isCode(err, "oauth_state_unknown") {
		t.Fatalf("a replayed redirect: %v", err)
	}

	u, err := h.m.StartAuth(ctx, "p", testRedirect)
	if err != nil {
		t.Fatal(err)
	}
	back, _ = o.Approve(u)
	err = h.m.CompleteAuth(ctx, "p", CallbackParams{State: back.Query().Get("state"), Error: "access_denied", ErrorDescription: "the user said no"})
	if !isCode(err, "oauth_failed") || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("a refused consent: %v", err)
	}
	if st := authState(t, h, "p"); st.State != AuthError || !strings.Contains(st.Message, "access_denied") {
		t.Fatalf("status after a refused consent: %+v", st)
	}
}

// Revoking forgets the tokens (the server then refuses fangd again);
// stdio servers have no OAuth.
func TestOAuthRevokeAndStdio(t *testing.T) {
	o := mcptest.NewOAuthServer(t)
	h := newHarness(t, t.TempDir(), nil)
	h.add(Spec{Name: "o", Transport: Transport{Type: TransportHTTP, URL: o.URL}})
	authorize(t, h, o, "o")
	h.waitConnected("o")
	if _, err := h.m.RevokeAuth(context.Background(), "o"); err != nil {
		t.Fatal(err)
	}
	if storedRecord(t, h, "o") != nil {
		t.Fatal("tokens kept after revoke")
	}
	h.waitFor("o", "refused again", func(v ServerView) bool { return v.LastErrorCode == codeAuthRequired })
	if st := authState(t, h, "o"); st.State != AuthNeedsAuth {
		t.Fatalf("status after revoke: %+v", st)
	}
	// Audit entries are appended off the actor: wait for it.
	eventually(t, "revoke audited", func() bool { return h.auditHas("mcp_oauth_revoked", "server o") })

	h.add(Spec{Name: "local", Transport: Transport{Type: TransportStdio, Command: "true"}})
	var ke *kernel.Error
	if _, err := h.m.StartAuth(context.Background(), "local", testRedirect); !errors.As(err, &ke) || ke.Code != "oauth_unsupported_transport" {
		t.Fatalf("oauth on a stdio server: %v", err)
	}
	if _, err := h.m.StartAuth(context.Background(), "nope", testRedirect); !errors.As(err, &ke) || ke.Kind != kernel.KindNotFound {
		t.Fatalf("oauth on an unknown server: %v", err)
	}
}
