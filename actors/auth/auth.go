// Package auth is OAuth 2.0 / OpenID Connect sign-in ([external_auth]):
// the authorization code flow with PKCE S256, a signed short-lived state
// bound to the browser, a nonce, ID-token verification by
// github.com/coreos/go-oidc (issuer, audience, expiry, signature against
// the provider's JWKS), allowed email domains or groups, role mapping from
// claims, and server-side sessions. The root actor "auth-sessions" owns
// the sessions in Badger (written asynchronously, answered once durable);
// every request reads them from a map it swaps whole, without asking.
// docs/pairing.md ("Sign-in with OIDC") has the recipe.
package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Provider is one identity provider, LibreFang's ExternalAuthConfig names.
type Provider struct {
	ID             string
	DisplayName    string
	IssuerURL      string
	ClientID       string
	ClientSecret   string
	RedirectURL    string
	Scopes         []string
	AllowedDomains []string
	// Audience the ID token must carry (default ClientID).
	Audience string
	// Endpoints for a provider without OIDC discovery (LibreFang's
	// auth_url, token_url, jwks_uri, userinfo_url): when AuthURL is set
	// the provider is built from these and IssuerURL (the "iss" its ID
	// tokens carry) and no discovery document is read. UserInfoURL may
	// be empty.
	AuthURL, TokenURL, JWKSURI, UserInfoURL string
	// fangd's: groups (from GroupsClaim) of which the user must be in
	// one, when set; RoleMap maps a group or role claim value to a role.
	AllowedGroups []string
	GroupsClaim   string
	RoleMap       map[string]string
}

// Config is [external_auth], validated.
type Config struct {
	Providers            []Provider
	SessionTTL           time.Duration
	RequireEmailVerified bool
	// DefaultRole is the role of a signed-in user no RoleMap entry
	// matches (viewer).
	DefaultRole string
	// StateKey signs the state parameter (random per start when empty).
	StateKey []byte
}

// Options wire the service.
type Options struct {
	Config Config
	// HTTPClient reaches the providers (discovery, JWKS, token, userinfo);
	// the daemon passes its SSRF-guarded client.
	HTTPClient *http.Client
	Now        func() time.Time
	// Vault seals the providers' refresh tokens before a session is
	// stored: a copy of the store must not hand out a credential the
	// provider honours. Required.
	Vault *store.Vault
}

// Session is a signed-in user, as stored (keyed by its token's hash).
type Session struct {
	ID        string    `json:"id"`
	Provider  string    `json:"provider"`
	Subject   string    `json:"sub"`
	Email     string    `json:"email,omitempty"`
	Name      string    `json:"name,omitempty"`
	Groups    []string  `json:"groups,omitempty"`
	Role      string    `json:"role"`
	Issuer    string    `json:"iss"`
	CSRF      string    `json:"csrf"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// RefreshedAt is when the session was last rotated by Refresh.
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	// Upstream is the provider's refresh token, kept server-side only
	// (never in a response): Refresh uses it to ask the provider whether
	// it still vouches for the user. It is held in memory in the clear
	// and stored only sealed (UpstreamSealed).
	Upstream string `json:"-"`
	// UpstreamSealed is Upstream sealed by the vault under the session's
	// id (sealedName), as stored.
	UpstreamSealed []byte `json:"upstream_sealed,omitempty"`
	// LegacyUpstream is the clear refresh token records written before
	// sealing carry; load seals it and rewrites the record.
	LegacyUpstream string `json:"upstream_refresh,omitempty"`
}

// sealedName binds a sealed refresh token to its session: a sealed value
// copied into another session's record does not open.
func sealedName(sessionID string) string { return "auth/upstream/" + sessionID }

// stored is sess as written to the store: the refresh token sealed,
// nothing in the clear.
func (s *Service) stored(sess Session) (Session, error) {
	sess.LegacyUpstream, sess.UpstreamSealed = "", nil
	if sess.Upstream != "" {
		sealed, err := s.opts.Vault.Seal(sealedName(sess.ID), []byte(sess.Upstream))
		if err != nil {
			return Session{}, fmt.Errorf("seal the provider refresh token: %w", err)
		}
		sess.UpstreamSealed = sealed
	}
	sess.Upstream = ""
	return sess, nil
}

// opened is a stored session as held in memory: the refresh token
// opened. legacy reports a record that still carried it in the clear.
func (s *Service) opened(sess Session) (out Session, legacy bool, err error) {
	switch {
	case sess.LegacyUpstream != "":
		sess.Upstream, legacy = sess.LegacyUpstream, true
	case len(sess.UpstreamSealed) > 0:
		err = s.opts.Vault.Open(sealedName(sess.ID), sess.UpstreamSealed, func(b []byte) error {
			sess.Upstream = string(b)
			return nil
		})
	}
	sess.LegacyUpstream, sess.UpstreamSealed = "", nil
	return sess, legacy, err
}

// Identity is the audit identity of a session's user.
func (s *Session) Identity() string {
	who := s.Email
	if who == "" {
		who = s.Subject
	}
	return "oidc:" + s.Provider + ":" + who
}

// Service is the handle the HTTP layer uses.
type Service struct {
	k    *kernel.Kernel
	pid  *actor.PID
	opts Options
	// sessions maps token hash -> session; swapped whole by the actor.
	sessions atomic.Pointer[map[string]*Session]
	log      zerolog.Logger

	mu        sync.Mutex
	providers map[string]*resolved
	// logins are the flows under way: state id -> login, single use.
	logins map[string]*login
}

// resolved is a provider after discovery.
type resolved struct {
	p        *oidc.Provider
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

type login struct {
	provider string
	redirect string
	nonce    string
	verifier string // PKCE code verifier
	bind     string // hash of the browser-binding cookie
	returnTo string
	expires  time.Time
}

// StateTTL is how long a login may take.
const StateTTL = 10 * time.Minute

// Start spawns "auth-sessions" and loads the stored sessions.
func Start(k *kernel.Kernel, db *store.DB, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if opts.Vault == nil {
		return nil, errors.New("auth: a vault is required to store provider refresh tokens sealed")
	}
	if len(opts.Config.StateKey) == 0 {
		opts.Config.StateKey = make([]byte, 32)
		if _, err := rand.Read(opts.Config.StateKey); err != nil {
			return nil, err
		}
	}
	if opts.Config.DefaultRole == "" {
		opts.Config.DefaultRole = "viewer"
	}
	s := &Service{k: k, opts: opts, log: k.Log.With().Str("component", "auth").Logger(),
		providers: map[string]*resolved{}, logins: map[string]*login{}}
	empty := map[string]*Session{}
	s.sessions.Store(&empty)
	pid, err := k.SpawnRoot("auth-sessions", func() actor.Actor {
		return &sessionsActor{s: s, db: db, coll: store.NewCollection[Session](db, "auth/sessions")}
	})
	if err != nil {
		return nil, err
	}
	s.pid = pid
	// Wait for the load (start-up: generous).
	loadCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kernel.Ask[bool](loadCtx, k, pid, &sync0{}); err != nil {
		return nil, err
	}
	return s, nil
}

// ProviderView is one provider as GET /api/auth/providers lists it.
type ProviderView struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
}

// Providers lists the configured providers, the default first.
func (s *Service) Providers() []ProviderView {
	out := make([]ProviderView, 0, len(s.opts.Config.Providers))
	for _, p := range s.opts.Config.Providers {
		out = append(out, ProviderView{ID: p.ID, DisplayName: p.DisplayName})
	}
	return out
}

func (s *Service) provider(id string) (*Provider, error) {
	if id == "" && len(s.opts.Config.Providers) > 0 {
		return &s.opts.Config.Providers[0], nil
	}
	for i := range s.opts.Config.Providers {
		if s.opts.Config.Providers[i].ID == id {
			return &s.opts.Config.Providers[i], nil
		}
	}
	return nil, kernel.NotFound("no identity provider %q", id)
}

// resolve runs discovery once per provider (go-oidc caches the JWKS).
func (s *Service) resolve(ctx context.Context, p *Provider) (*resolved, error) {
	s.mu.Lock()
	r := s.providers[p.ID]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	cctx := oidc.ClientContext(ctx, s.opts.HTTPClient)
	var op *oidc.Provider
	var err error
	if p.AuthURL != "" {
		// No discovery: go-oidc builds the provider from the endpoints;
		// the JWKS is still fetched (and cached) from JWKSURI.
		op = (&oidc.ProviderConfig{IssuerURL: p.IssuerURL, AuthURL: p.AuthURL, TokenURL: p.TokenURL, JWKSURL: p.JWKSURI,
			UserInfoURL: p.UserInfoURL, Algorithms: []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256}}).NewProvider(cctx)
	} else {
		op, err = oidc.NewProvider(cctx, p.IssuerURL)
	}
	if err != nil {
		return nil, &kernel.Error{Kind: kernel.KindUpstream, Code: "oidc_discovery_failed",
			Msg: "the identity provider's discovery document could not be read", Err: err}
	}
	aud := p.Audience
	if aud == "" {
		aud = p.ClientID
	}
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	r = &resolved{p: op,
		oauth:    &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, RedirectURL: p.RedirectURL, Endpoint: op.Endpoint(), Scopes: scopes},
		verifier: op.VerifierContext(oidc.ClientContext(context.Background(), s.opts.HTTPClient), &oidc.Config{ClientID: aud, Now: s.opts.Now})}
	s.mu.Lock()
	s.providers[p.ID] = r
	s.mu.Unlock()
	return r, nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// SafeReturnTo accepts only a same-origin path ("/x", not "//host" or a
// URL): the redirect after sign-in never leaves fangd.
func SafeReturnTo(s string) bool {
	return s == "" || (strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//") && !strings.HasPrefix(s, "/\\") &&
		!strings.ContainsAny(s, "\r\n\\") && len(s) <= 1024)
}

// LoginStart is what a login redirect needs.
type LoginStart struct {
	URL string
	// Binding is the browser-binding cookie's value: the callback must
	// come from the browser that started the login.
	Binding string
}

// Login starts an authorization code flow with PKCE S256 at provider
// ("" = the default).
// redirect is the callback URL to use when the provider has no
// redirect_url configured (the HTTP layer derives it from the request).
func (s *Service) Login(ctx context.Context, providerID, returnTo, redirect string) (*LoginStart, error) {
	if !SafeReturnTo(returnTo) {
		return nil, kernel.Invalid("return_to must be a path on this server")
	}
	p, err := s.provider(providerID)
	if err != nil {
		return nil, err
	}
	r, err := s.resolve(ctx, p)
	if err != nil {
		return nil, err
	}
	now := s.opts.Now()
	id, bind := randomToken(16), randomToken(24)
	if p.RedirectURL != "" {
		redirect = p.RedirectURL
	}
	l := &login{provider: p.ID, redirect: redirect, nonce: randomToken(16), verifier: oauth2.GenerateVerifier(), bind: hashOf(bind),
		returnTo: returnTo, expires: now.Add(StateTTL)}
	s.mu.Lock()
	for k, v := range s.logins {
		if !v.expires.After(now) {
			delete(s.logins, k)
		}
	}
	if len(s.logins) >= maxLogins {
		s.mu.Unlock()
		return nil, kernel.Errorf(kernel.KindRateLimited, "too_many_logins", "too many sign-ins under way; try again shortly")
	}
	s.logins[id] = l
	s.mu.Unlock()
	state := s.signState(id, l.expires)
	oc := *r.oauth
	oc.RedirectURL = redirect
	u := oc.AuthCodeURL(state, oidc.Nonce(l.nonce), oauth2.S256ChallengeOption(l.verifier))
	return &LoginStart{URL: u, Binding: bind}, nil
}

// maxLogins bounds the flows under way (each is a few hundred bytes).
const maxLogins = 10_000

func (s *Service) signState(id string, exp time.Time) string {
	p := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%s.%d", id, exp.Unix())))
	mac := hmac.New(sha256.New, s.opts.Config.StateKey)
	mac.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var errBadState = kernel.Errorf(kernel.KindInvalid, "invalid_state", "the sign-in state is invalid, expired, already used or from another browser")

// takeLogin checks the state's signature and expiry and the browser
// binding, and removes the login: a state works once.
func (s *Service) takeLogin(state, binding string) (*login, error) {
	p, sig, ok := strings.Cut(state, ".")
	if !ok {
		return nil, errBadState
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	mac := hmac.New(sha256.New, s.opts.Config.StateKey)
	mac.Write([]byte(p))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return nil, errBadState
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil, errBadState
	}
	id, _, _ := strings.Cut(string(raw), ".")
	s.mu.Lock()
	l := s.logins[id]
	if l != nil && hmac.Equal([]byte(l.bind), []byte(hashOf(binding))) {
		delete(s.logins, id)
	} else {
		l = nil
	}
	s.mu.Unlock()
	if l == nil || !l.expires.After(s.opts.Now()) {
		return nil, errBadState
	}
	return l, nil
}

// claims are the ID-token claims fangd reads.
type claims struct {
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified *bool  `json:"email_verified"`
	Name          string `json:"name"`
	Nonce         string `json:"nonce"`
}

// Callback finishes a flow: state and binding, code exchange with the
// PKCE verifier, ID-token verification, nonce, email and domain or group
// checks, role mapping; then a durable session. It returns the session's
// token (shown once, as the cookie) and the session.
func (s *Service) Callback(ctx context.Context, code, state, binding string) (string, *Session, string, error) {
	l, err := s.takeLogin(state, binding)
	if err != nil {
		return "", nil, "", err
	}
	if code == "" {
		return "", nil, "", kernel.Invalid("code is required")
	}
	p, err := s.provider(l.provider)
	if err != nil {
		return "", nil, "", err
	}
	r, err := s.resolve(ctx, p)
	if err != nil {
		return "", nil, "", err
	}
	cctx := oidc.ClientContext(ctx, s.opts.HTTPClient)
	oc := *r.oauth
	oc.RedirectURL = l.redirect
	tok, err := oc.Exchange(cctx, code, oauth2.VerifierOption(l.verifier))
	if err != nil {
		return "", nil, "", &kernel.Error{Kind: kernel.KindUnauthorized, Code: "code_exchange_failed",
			Msg: "the identity provider refused the authorization code", Err: err}
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return "", nil, "", kernel.Errorf(kernel.KindUnauthorized, "no_id_token", "the identity provider sent no ID token")
	}
	idt, err := r.verifier.Verify(cctx, rawID)
	if err != nil {
		return "", nil, "", &kernel.Error{Kind: kernel.KindUnauthorized, Code: "invalid_id_token", Msg: "the ID token does not verify", Err: err}
	}
	var c claims
	if err := idt.Claims(&c); err != nil {
		return "", nil, "", kernel.Errorf(kernel.KindUnauthorized, "invalid_id_token", "the ID token's claims do not decode")
	}
	if !hmac.Equal([]byte(c.Nonce), []byte(l.nonce)) {
		return "", nil, "", kernel.Errorf(kernel.KindUnauthorized, "invalid_nonce", "the ID token's nonce does not match this sign-in")
	}
	var all map[string]any
	_ = idt.Claims(&all)
	sess, err := s.admit(p, idt.Issuer, c, all)
	if err != nil {
		return "", nil, "", err
	}
	sess.Upstream = tok.RefreshToken
	token := "fss_" + randomToken(32)
	if _, err := kernel.Ask[bool](ctx, s.k, s.pid, &put{hash: hashOf(token), sess: sess}); err != nil {
		return "", nil, "", err
	}
	return token, sess, l.returnTo, nil
}

// admit applies the email, domain and group rules and maps the role.
func (s *Service) admit(p *Provider, iss string, c claims, all map[string]any) (*Session, error) {
	cfg := s.opts.Config
	if cfg.RequireEmailVerified && (c.EmailVerified == nil || !*c.EmailVerified) {
		return nil, kernel.Errorf(kernel.KindForbidden, "email_not_verified", "the identity provider does not vouch for this email address")
	}
	if len(p.AllowedDomains) > 0 {
		_, domain, _ := strings.Cut(strings.ToLower(c.Email), "@")
		if !slices.Contains(p.AllowedDomains, domain) {
			return nil, kernel.Errorf(kernel.KindForbidden, "domain_not_allowed", "email domain %q is not authorized", domain)
		}
	}
	groups := stringsClaim(all, p.GroupsClaim)
	if len(p.AllowedGroups) > 0 && !slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(p.AllowedGroups, g) }) {
		return nil, kernel.Errorf(kernel.KindForbidden, "group_not_allowed", "the user is in none of the allowed groups")
	}
	role := mapRole(p.RoleMap, groups, cfg.DefaultRole)
	now := s.opts.Now().UTC()
	return &Session{ID: randomToken(9), Provider: p.ID, Subject: c.Subject, Email: c.Email, Name: c.Name, Groups: groups,
		Role: role, Issuer: iss, CSRF: randomToken(18), CreatedAt: now, ExpiresAt: now.Add(cfg.SessionTTL)}, nil
}

// rank orders roles: a user in several mapped groups gets the highest.
var rank = map[string]int{"viewer": 1, "operator": 2, "admin": 3}

func mapRole(m map[string]string, groups []string, def string) string {
	role := def
	for _, g := range groups {
		if r, ok := m[g]; ok && rank[r] > rank[role] {
			role = r
		}
	}
	return role
}

func stringsClaim(all map[string]any, name string) []string {
	if name == "" {
		name = "groups"
	}
	switch v := all[name].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Session finds a live session by its token, without asking an actor.
func (s *Service) Session(token string) (*Session, bool) {
	if s == nil || !strings.HasPrefix(token, "fss_") {
		return nil, false
	}
	sess, ok := (*s.sessions.Load())[hashOf(token)]
	if !ok || !sess.ExpiresAt.After(s.opts.Now()) {
		return nil, false
	}
	return sess, true
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, token string) error {
	_, err := kernel.Ask[bool](ctx, s.k, s.pid, &drop{hash: hashOf(token)})
	return err
}

// Introspection is RFC 7662's answer.
type Introspection struct {
	Active   bool     `json:"active"`
	Subject  string   `json:"sub,omitempty"`
	Email    string   `json:"email,omitempty"`
	Name     string   `json:"name,omitempty"`
	Role     string   `json:"role,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Issuer   string   `json:"iss,omitempty"`
	Audience string   `json:"aud,omitempty"`
	Exp      int64    `json:"exp,omitempty"`
	Iat      int64    `json:"iat,omitempty"`
	Provider string   `json:"provider,omitempty"`
	Type     string   `json:"token_type,omitempty"`
}

// Introspect says whether token is a live session token or an ID token
// one of the providers signed for fangd; anything else is inactive.
func (s *Service) Introspect(ctx context.Context, token string) *Introspection {
	if sess, ok := s.Session(token); ok {
		return &Introspection{Active: true, Subject: sess.Subject, Email: sess.Email, Name: sess.Name, Role: sess.Role, Groups: sess.Groups,
			Issuer: sess.Issuer, Exp: sess.ExpiresAt.Unix(), Iat: sess.CreatedAt.Unix(), Provider: sess.Provider, Type: "session"}
	}
	if strings.Count(token, ".") != 2 {
		return &Introspection{Active: false}
	}
	for i := range s.opts.Config.Providers {
		p := &s.opts.Config.Providers[i]
		r, err := s.resolve(ctx, p)
		if err != nil {
			continue
		}
		idt, err := r.verifier.Verify(oidc.ClientContext(ctx, s.opts.HTTPClient), token)
		if err != nil {
			continue
		}
		var c claims
		_ = idt.Claims(&c)
		var all map[string]any
		_ = idt.Claims(&all)
		groups := stringsClaim(all, p.GroupsClaim)
		return &Introspection{Active: true, Subject: c.Subject, Email: c.Email, Name: c.Name, Groups: groups,
			Role: mapRole(p.RoleMap, groups, s.opts.Config.DefaultRole), Issuer: idt.Issuer, Audience: strings.Join(idt.Audience, " "),
			Exp: idt.Expiry.Unix(), Iat: idt.IssuedAt.Unix(), Provider: p.ID, Type: "id_token"}
	}
	return &Introspection{Active: false}
}

// UserInfo asks the providers' userinfo endpoints about an access token;
// the first that answers wins. Unknown everywhere: 401.
func (s *Service) UserInfo(ctx context.Context, accessToken string) (string, map[string]any, error) {
	for i := range s.opts.Config.Providers {
		p := &s.opts.Config.Providers[i]
		r, err := s.resolve(ctx, p)
		if err != nil || r.p.UserInfoEndpoint() == "" {
			continue
		}
		ui, err := r.p.UserInfo(oidc.ClientContext(ctx, s.opts.HTTPClient), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken}))
		if err != nil {
			continue
		}
		var m map[string]any
		if err := ui.Claims(&m); err == nil {
			return p.ID, m, nil
		}
	}
	return "", nil, kernel.Errorf(kernel.KindUnauthorized, "invalid_token", "the token is not a session or an access token of a configured provider")
}

// ErrNotRefreshable is the one answer for a token that is no live
// session: which of "unknown", "expired" or "logged out" is not told.
var ErrNotRefreshable = kernel.Errorf(kernel.KindUnauthorized, "invalid_session", "the token is not a live fangd session")

// Refresh rotates a live session (POST /api/auth/refresh): a new session
// token, a new CSRF token and a new expiry, and the old token stops
// working once the new one is durable (one atomic write). When the
// provider gave a refresh token at sign-in, the provider is asked first
// (refresh_token grant): a refusal ends the session, because the
// provider no longer vouches for the user; a new ID token, when sent,
// is verified and must name the same subject, and its claims re-run the
// domain, group and role rules. Without a provider refresh token the
// session is rotated on fangd's word alone (Refreshed says which).
func (s *Service) Refresh(ctx context.Context, token string) (string, *Session, bool, error) {
	old, ok := s.Session(token)
	if !ok {
		return "", nil, false, ErrNotRefreshable
	}
	next := *old
	upstream := false
	if old.Upstream != "" {
		p, err := s.provider(old.Provider)
		if err != nil {
			return "", nil, false, err
		}
		r, err := s.resolve(ctx, p)
		if err != nil {
			return "", nil, false, err
		}
		cctx := oidc.ClientContext(ctx, s.opts.HTTPClient)
		// An expired token makes the source use the refresh token at once.
		tok, err := r.oauth.TokenSource(cctx, &oauth2.Token{RefreshToken: old.Upstream, Expiry: time.Unix(1, 0)}).Token()
		if err != nil {
			var re *oauth2.RetrieveError
			if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
				_ = s.Logout(ctx, token)
				return "", nil, false, &kernel.Error{Kind: kernel.KindUnauthorized, Code: "refresh_refused",
					Msg: "the identity provider refused to refresh the sign-in; the session has ended, sign in again", Err: err}
			}
			return "", nil, false, &kernel.Error{Kind: kernel.KindUpstream, Code: "refresh_failed",
				Msg: "the identity provider could not be reached to refresh the sign-in", Err: err}
		}
		if rawID, _ := tok.Extra("id_token").(string); rawID != "" {
			idt, err := r.verifier.Verify(cctx, rawID)
			if err != nil {
				return "", nil, false, &kernel.Error{Kind: kernel.KindUnauthorized, Code: "invalid_id_token", Msg: "the refreshed ID token does not verify", Err: err}
			}
			var c claims
			var all map[string]any
			if idt.Claims(&c) != nil || idt.Claims(&all) != nil || c.Subject != old.Subject {
				return "", nil, false, kernel.Errorf(kernel.KindUnauthorized, "invalid_id_token", "the refreshed ID token names another user")
			}
			fresh, err := s.admit(p, idt.Issuer, c, all)
			if err != nil {
				_ = s.Logout(ctx, token)
				return "", nil, false, err
			}
			next.Email, next.Name, next.Groups, next.Role = fresh.Email, fresh.Name, fresh.Groups, fresh.Role
		}
		// Providers that rotate refresh tokens send a new one; others
		// keep the old one valid (RFC 6749 section 6).
		if tok.RefreshToken != "" {
			next.Upstream = tok.RefreshToken
		}
		upstream = true
	}
	now := s.opts.Now().UTC()
	next.CSRF, next.RefreshedAt, next.ExpiresAt = randomToken(18), now, now.Add(s.opts.Config.SessionTTL)
	nt := "fss_" + randomToken(32)
	if _, err := kernel.Ask[bool](ctx, s.k, s.pid, &rotate{old: hashOf(token), put: put{hash: hashOf(nt), sess: &next}}); err != nil {
		return "", nil, false, err
	}
	return nt, &next, upstream, nil
}

// ---- the sessions actor ----

type sync0 struct{}

type put struct {
	hash string
	sess *Session
}

type drop struct{ hash string }

// rotate replaces the session under old with put, in one write.
type rotate struct {
	old string
	put put
}

type rotated struct {
	r      *rotate
	sender *actor.PID
	err    error
}

type sessionsActor struct {
	s    *Service
	db   *store.DB
	coll *store.Collection[Session]
	m    map[string]*Session
	// rotating are the old hashes of rotations under way: a second
	// refresh of the same token is refused, not a second new session.
	rotating map[string]bool
}

func (a *sessionsActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := a.load(); err != nil {
			panic(fmt.Errorf("auth-sessions: load: %w", err))
		}
	case *sync0:
		c.Respond(true)
	case *put:
		a.prune()
		rec, err := a.s.stored(*m.sess)
		if err != nil {
			c.Respond(err)
			return
		}
		self, sender, root := c.Self(), c.Sender(), c.ActorSystem().Root
		a.coll.PutAsync(m.hash, rec, func(err error) {
			root.Send(self, &published{put: m, sender: sender, err: err})
		})
	case *published:
		// A new session authenticates only once it is durable.
		if m.err != nil {
			c.Send(m.sender, m.err)
			return
		}
		a.m[m.put.hash] = m.put.sess
		a.publish()
		c.Send(m.sender, true)
	case *rotate:
		if _, ok := a.m[m.old]; !ok || a.rotating[m.old] {
			// Logged out (or rotated by a concurrent refresh) meanwhile.
			c.Respond(ErrNotRefreshable)
			return
		}
		sess, err := a.s.stored(*m.put.sess)
		if err != nil {
			c.Respond(err)
			return
		}
		self, sender, root := c.Self(), c.Sender(), c.ActorSystem().Root
		a.rotating[m.old] = true
		a.db.UpdateAsync(func(tx *store.Txn) error {
			if err := a.coll.DeleteTx(tx, m.old); err != nil {
				return err
			}
			return a.coll.PutTx(tx, m.put.hash, sess)
		}, func(err error) { root.Send(self, &rotated{r: m, sender: sender, err: err}) })
	case *rotated:
		delete(a.rotating, m.r.old)
		if m.err != nil {
			c.Send(m.sender, m.err)
			return
		}
		delete(a.m, m.r.old)
		a.m[m.r.put.hash] = m.r.put.sess
		a.publish()
		c.Send(m.sender, true)
	case *drop:
		// Out of the map first: the session stops now.
		delete(a.m, m.hash)
		a.publish()
		sender, root := c.Sender(), c.ActorSystem().Root
		a.coll.DeleteAsync(m.hash, func(err error) {
			if err != nil {
				root.Send(sender, err)
				return
			}
			root.Send(sender, true)
		})
	}
}

type published struct {
	put    *put
	sender *actor.PID
	err    error
}

func (a *sessionsActor) load() error {
	a.m = map[string]*Session{}
	a.rotating = map[string]bool{}
	now := a.s.opts.Now()
	// Expired sessions go with async deletes: no synced write in Receive.
	var legacy []string
	err := store.LoadLive(a.coll, a.m, func(v Session) (*Session, bool) {
		if !v.ExpiresAt.After(now) {
			return nil, false
		}
		sess, clear, err := a.s.opened(v)
		if err != nil {
			// Without its refresh token the session could only be
			// rotated on fangd's word, which the provider never vouched
			// for: it ends, and the user signs in again.
			a.s.log.Warn().Str("session", v.ID).Err(err).Msg("a stored session's provider refresh token does not open with this vault key; the session is dropped")
			return nil, false
		}
		if clear {
			legacy = append(legacy, v.ID)
		}
		return &sess, true
	})
	if err != nil {
		return err
	}
	a.resealLegacy(legacy)
	a.publish()
	return nil
}

// resealLegacy rewrites records stored before refresh tokens were
// sealed, so no clear token stays on disk past the first start.
func (a *sessionsActor) resealLegacy(ids []string) {
	if len(ids) == 0 {
		return
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for h, sess := range a.m {
		if !want[sess.ID] {
			continue
		}
		rec, err := a.s.stored(*sess)
		if err != nil {
			a.s.log.Warn().Str("session", sess.ID).Err(err).Msg("reseal a stored session")
			continue
		}
		id := sess.ID
		a.coll.PutAsync(h, rec, func(err error) {
			if err != nil {
				a.s.log.Warn().Str("session", id).Err(err).Msg("reseal a stored session")
			}
		})
	}
}

func (a *sessionsActor) prune() {
	now := a.s.opts.Now()
	for h, v := range a.m {
		if !v.ExpiresAt.After(now) {
			delete(a.m, h)
			a.coll.DeleteAsync(h, func(error) {})
		}
	}
}

func (a *sessionsActor) publish() {
	cp := make(map[string]*Session, len(a.m))
	for k, v := range a.m {
		cp[k] = v
	}
	a.s.sessions.Store(&cp)
}
