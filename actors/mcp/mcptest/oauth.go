package mcptest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// OAuthServer is a remote MCP server protected by OAuth 2.1 as the MCP
// authorization spec describes, with its own authorization server on the
// same loopback origin: protected-resource metadata (RFC 9728, served by
// the SDK's handler and named in the SDK's WWW-Authenticate challenge),
// authorization-server metadata (RFC 8414), dynamic client registration
// (RFC 7591), the authorization endpoint (which plays the user's consent:
// it redirects at once), and the token endpoint (authorization_code with
// PKCE S256, refresh_token). It keeps count of what clients did.
type OAuthServer struct {
	URL string // the MCP endpoint, <origin>/mcp
	srv *httptest.Server

	mu            sync.Mutex
	tokenTTL      time.Duration
	refuseRefresh bool
	clients       map[string][]string // client_id -> redirect URIs
	codes         map[string]grant
	access        map[string]time.Time
	refresh       map[string]string // refresh token -> client_id
	registrations int
	exchanges     int
	refreshes     int
}

type grant struct {
	client, challenge, redirect string
}

// NewOAuthServer starts the server with one tool, "echo".
func NewOAuthServer(t testing.TB) *OAuthServer {
	o := &OAuthServer{tokenTTL: time.Hour, clients: map[string][]string{}, codes: map[string]grant{},
		access: map[string]time.Time{}, refresh: map[string]string{}}
	srv := sdk.NewServer(&sdk.Implementation{Name: "oauth-peer", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "echo", Description: "Echoes the message"},
		func(_ context.Context, _ *sdk.CallToolRequest, in echoIn) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "echo: " + in.Message}}}, nil, nil
		})
	mux := http.NewServeMux()
	o.srv = httptest.NewServer(mux)
	t.Cleanup(o.srv.Close)
	origin := o.srv.URL
	o.URL = origin + "/mcp"
	prm := &oauthex.ProtectedResourceMetadata{Resource: o.URL, AuthorizationServers: []string{origin}, ScopesSupported: []string{"mcp:tools"}}
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(prm))
	mcpHandler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	mux.Handle("/mcp", auth.RequireBearerToken(o.verify, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: origin + "/.well-known/oauth-protected-resource/mcp", Scopes: []string{"mcp:tools"},
	})(mcpHandler))
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": origin, "authorization_endpoint": origin + "/authorize", "token_endpoint": origin + "/token",
			"registration_endpoint": origin + "/register", "response_types_supported": []string{"code"},
			"grant_types_supported":            []string{"authorization_code", "refresh_token"},
			"code_challenge_methods_supported": []string{"S256"}, "scopes_supported": []string{"mcp:tools", "offline_access"},
			"token_endpoint_auth_methods_supported": []string{"none"},
		})
	})
	mux.HandleFunc("POST /register", o.register)
	mux.HandleFunc("GET /authorize", o.authorize)
	mux.HandleFunc("POST /token", o.token)
	return o
}

type echoIn struct {
	Message string `json:"message"`
}

func (o *OAuthServer) verify(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, ok := o.access[token]
	if !ok || time.Now().After(exp) {
		return nil, auth.ErrInvalidToken
	}
	return &auth.TokenInfo{Scopes: []string{"mcp:tools"}, Expiration: exp}, nil
}

// ExpireAccessTokens makes every issued access token invalid, as if their
// time had run out.
func (o *OAuthServer) ExpireAccessTokens() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.access)
}

// Counts returns registrations, code exchanges and refreshes so far.
func (o *OAuthServer) Counts() (registrations, exchanges, refreshes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.registrations, o.exchanges, o.refreshes
}

// SetRefuseRefresh makes refresh_token grants fail with invalid_grant,
// as when the user revoked the grant.
func (o *OAuthServer) SetRefuseRefresh(v bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refuseRefresh = v
}

func (o *OAuthServer) register(w http.ResponseWriter, r *http.Request) {
	var md oauthex.ClientRegistrationMetadata
	if err := json.NewDecoder(r.Body).Decode(&md); err != nil || len(md.RedirectURIs) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata"})
		return
	}
	o.mu.Lock()
	o.registrations++
	id := fmt.Sprintf("client-%d", o.registrations)
	o.clients[id] = md.RedirectURIs
	o.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"client_id": id, "redirect_uris": md.RedirectURIs,
		"token_endpoint_auth_method": "none", "grant_types": md.GrantTypes})
}

// authorize is the user saying yes: it checks the request as a real
// server would and redirects with a code.
func (o *OAuthServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o.mu.Lock()
	defer o.mu.Unlock()
	uris, ok := o.clients[q.Get("client_id")]
	switch {
	case !ok:
		http.Error(w, "unknown client", http.StatusBadRequest)
		return
	case !slices.Contains(uris, q.Get("redirect_uri")):
		http.Error(w, "redirect_uri not registered", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE S256 and response_type=code required", http.StatusBadRequest)
		return
	case q.Get("resource") != o.URL:
		http.Error(w, "resource must name the MCP server", http.StatusBadRequest)
		return
	}
	code := randomToken()
	o.codes[code] = grant{client: q.Get("client_id"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	to, _ := url.Parse(q.Get("redirect_uri"))
	rq := to.Query()
	rq.Set("code", code)
	rq.Set("state", q.Get("state"))
	to.RawQuery = rq.Encode()
	http.Redirect(w, r, to.String(), http.StatusFound)
}

func (o *OAuthServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		g, ok := o.codes[r.PostForm.Get("code")]
		delete(o.codes, r.PostForm.Get("code"))
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || g.client != r.PostForm.Get("client_id") || g.redirect != r.PostForm.Get("redirect_uri") ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
			return
		}
		o.exchanges++
		o.issue(w, g.client)
	case "refresh_token":
		client, ok := o.refresh[r.PostForm.Get("refresh_token")]
		if !ok || o.refuseRefresh {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
			return
		}
		o.refreshes++
		o.issue(w, client)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
	}
}

func (o *OAuthServer) issue(w http.ResponseWriter, client string) {
	access, refresh := randomToken(), randomToken()
	o.access[access] = time.Now().Add(o.tokenTTL)
	o.refresh[refresh] = client
	writeJSON(w, http.StatusOK, map[string]any{"access_token": access, "token_type": "Bearer",
		"expires_in": int(o.tokenTTL / time.Second), "refresh_token": refresh, "scope": "mcp:tools"})
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Approve plays the user's browser: it opens authURL and returns the
// redirect the authorization server sends back to the client (its code
// and state in Query), without following it.
func (o *OAuthServer) Approve(authURL string) (*url.URL, error) {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		var b [512]byte
		n, _ := resp.Body.Read(b[:])
		return nil, fmt.Errorf("authorize answered %d: %s", resp.StatusCode, b[:n])
	}
	return url.Parse(resp.Header.Get("Location"))
}
