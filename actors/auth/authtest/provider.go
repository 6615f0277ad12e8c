// Package authtest is an in-process OpenID Connect provider for tests:
// discovery (/.well-known/openid-configuration), a JWKS, an authorization
// endpoint that signs the configured user in at once (redirecting with a
// code), a token endpoint that checks the client, the redirect URI and the
// PKCE S256 verifier and uses each code once (and answers the
// refresh_token grant, rotating refresh tokens), and a userinfo endpoint.
// ID tokens are real RS256 JWTs. Knobs let a test break one check at a
// time: another issuer or audience, a wrong nonce, an expired token.
package authtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// User is who signs in.
type User struct {
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Groups        []string
}

// Provider is the fake.
type Provider struct {
	*httptest.Server
	ClientID, ClientSecret string

	mu    sync.Mutex
	key   *rsa.PrivateKey
	user  User
	codes map[string]*grant
	// access tokens -> user, for userinfo
	access map[string]User
	// refresh tokens -> user; each works once (the fake rotates them).
	refresh   map[string]User
	refreshes int
	// Knobs.
	Issuer   string // "" = the server's URL
	Audience string // "" = ClientID
	Nonce    string // non-empty replaces the nonce asked for
	TTL      time.Duration
	// NoDiscovery makes the discovery document 404 (a provider that
	// must be configured by its endpoints).
	NoDiscovery bool
}

type grant struct {
	challenge, redirect, nonce string
	user                       User
}

// New starts a provider with one client.
func New(clientID, secret string) *Provider {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	p := &Provider{ClientID: clientID, ClientSecret: secret, key: key, codes: map[string]*grant{}, access: map[string]User{}, refresh: map[string]User{},
		user: User{Subject: "u-1", Email: "ada@example.com", EmailVerified: true, Name: "Ada"}, TTL: time.Hour}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /userinfo", p.userinfo)
	p.Server = httptest.NewServer(mux)
	return p
}

// SetUser changes who signs in next.
func (p *Provider) SetUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = u
}

// Set changes a knob under the lock.
func (p *Provider) Set(f func(p *Provider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *Provider) issuer() string {
	if p.Issuer != "" {
		return p.Issuer
	}
	return p.URL
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	off := p.NoDiscovery
	p.mu.Unlock()
	if off {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, 200, map[string]any{
		"issuer": p.URL, "authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token",
		"userinfo_endpoint": p.URL + "/userinfo", "jwks_uri": p.URL + "/jwks",
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"}, "code_challenge_methods_supported": []string{"S256"},
	})
}

func (p *Provider) jwks(w http.ResponseWriter, _ *http.Request) {
	pub := p.key.PublicKey
	writeJSON(w, 200, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

func random() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// authorize signs the user in at once and redirects back with a code.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "bad authorization request", 400)
		return
	}
	p.mu.Lock()
	code := random()
	p.codes[code] = &grant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), nonce: q.Get("nonce"), user: p.user}
	p.mu.Unlock()
	u, _ := url.Parse(q.Get("redirect_uri"))
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.ClientID || secret != p.ClientSecret {
		writeJSON(w, 401, map[string]string{"error": "invalid_client"})
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.PostForm.Get("grant_type") == "refresh_token" {
		p.refreshGrant(w, r.PostForm.Get("refresh_token"))
		return
	}
	g := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code")) // a code works once
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if g == nil || r.PostForm.Get("grant_type") != "authorization_code" || r.PostForm.Get("redirect_uri") != g.redirect ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
		return
	}
	nonce := g.nonce
	if p.Nonce != "" {
		nonce = p.Nonce
	}
	p.issue(w, g.user, nonce)
}

// refreshGrant is RFC 6749 section 6: a known refresh token gets a new
// access token, a new ID token (no nonce, OIDC Core 12.2) for the user
// as they are now (SetUser), and a new refresh token; the old one is spent.
func (p *Provider) refreshGrant(w http.ResponseWriter, rt string) {
	u, ok := p.refresh[rt]
	delete(p.refresh, rt)
	if !ok {
		writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
		return
	}
	p.refreshes++
	cur := p.user
	if cur.Subject == u.Subject {
		u = cur
	}
	p.issue(w, u, "")
}

// Refreshes counts the refresh grants answered.
func (p *Provider) Refreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshes
}

// RevokeRefreshTokens forgets every refresh token issued (the user was
// signed out at the provider).
func (p *Provider) RevokeRefreshTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.refresh)
}

// issue answers a token request for u; called with p.mu held.
func (p *Provider) issue(w http.ResponseWriter, u User, nonce string) {
	aud := p.Audience
	if aud == "" {
		aud = p.ClientID
	}
	now := time.Now()
	claims := jwt.MapClaims{"iss": p.issuer(), "aud": aud, "sub": u.Subject, "email": u.Email,
		"email_verified": u.EmailVerified, "name": u.Name,
		"iat": now.Unix(), "exp": now.Add(p.TTL).Unix()}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	if u.Groups != nil {
		claims["groups"] = u.Groups
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = "k1"
	idToken, err := t.SignedString(p.key)
	if err != nil {
		writeJSON(w, 500, map[string]string{"error": err.Error()})
		return
	}
	access, refresh := "at_"+random(), "rt_"+random()
	p.access[access] = u
	p.refresh[refresh] = u
	writeJSON(w, 200, map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 3600, "id_token": idToken,
		"refresh_token": refresh})
}

// IDToken signs an ID token for the current user outside a flow (for
// introspection tests).
func (p *Provider) IDToken(aud string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": p.issuer(), "aud": aud, "sub": p.user.Subject,
		"email": p.user.Email, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	t.Header["kid"] = "k1"
	s, _ := t.SignedString(p.key)
	return s
}

func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("Authorization")
	p.mu.Lock()
	u, ok := p.access[strings.TrimPrefix(tok, "Bearer ")]
	p.mu.Unlock()
	if !ok {
		writeJSON(w, 401, map[string]string{"error": "invalid_token"})
		return
	}
	writeJSON(w, 200, map[string]any{"sub": u.Subject, "email": u.Email, "email_verified": u.EmailVerified, "name": u.Name})
}
