package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// OAuth 2.1 for remote MCP servers (the MCP authorization spec). The
// official SDK's auth.AuthorizationCodeHandler does the protocol:
// protected-resource and authorization-server discovery, dynamic client
// registration, PKCE, the state check and the code exchange. fangd adds
// what a daemon needs around it: the flow is started from the API and
// finished by the browser's redirect to the callback route (the code
// fetcher waits for it), the tokens and the client registration are kept
// in the vault, and a connection sends the stored access token, refreshing
// it (and saving the refreshed one) when it expires.

// The auth states of GET /api/mcp/servers/{name}/auth/status (LibreFang's).
const (
	AuthNotRequired = "not_required"
	AuthNeedsAuth   = "needs_auth"
	AuthPending     = "pending_auth"
	AuthAuthorized  = "authorized"
	AuthExpired     = "expired"
	AuthError       = "error"
	AuthUnknown     = "unknown"
)

// errAuthRequired is a refresh the authorization server refused: only a
// new authorization helps.
var errAuthRequired = errors.New("authorization required")

// codeAuthRequired marks a server that refused fangd's credentials (or
// had none): the status says needs_auth and the operator can start a flow.
const codeAuthRequired = "mcp_auth_required"

// OAuthFlowTimeout bounds how long a started authorization waits for the
// browser's redirect.
const OAuthFlowTimeout = 10 * time.Minute

// AuthStatus is one server's authorization state. It never carries a
// token.
type AuthStatus struct {
	State        string     `json:"state"`
	AuthURL      string     `json:"auth_url,omitempty"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	AuthorizedAt *time.Time `json:"authorized_at,omitempty"`
	Refreshable  bool       `json:"refreshable,omitempty"`
	Scopes       []string   `json:"scopes,omitempty"`
	Message      string     `json:"message,omitempty"`
}

// CallbackParams are the authorization server's redirect parameters.
type CallbackParams struct {
	Code, State, Iss, Error, ErrorDescription string
}

func oauthKey(server string) string { return "mcp/" + server + "/oauth" }

// oauthRecord is what the vault keeps per server: the client registration
// (so a new flow reuses it instead of registering again), the token
// endpoint (for refreshes after a restart) and the tokens.
type oauthRecord struct {
	ClientID     string        `json:"client_id"`
	ClientSecret string        `json:"client_secret,omitempty"`
	AuthURL      string        `json:"auth_url"`
	TokenURL     string        `json:"token_url"`
	AuthStyle    int           `json:"auth_style"`
	RedirectURL  string        `json:"redirect_url"`
	Scopes       []string      `json:"scopes,omitempty"`
	Token        *oauth2.Token `json:"token"`
	AuthorizedAt time.Time     `json:"authorized_at"`
}

func (r *oauthRecord) config() *oauth2.Config {
	return &oauth2.Config{ClientID: r.ClientID, ClientSecret: r.ClientSecret, RedirectURL: r.RedirectURL, Scopes: r.Scopes,
		Endpoint: oauth2.Endpoint{AuthURL: r.AuthURL, TokenURL: r.TokenURL, AuthStyle: oauth2.AuthStyle(r.AuthStyle)}}
}

func loadOAuth(v secretStore, server string) (*oauthRecord, error) {
	var rec oauthRecord
	err := v.With(oauthKey(server), func(b []byte) error { return json.Unmarshal(b, &rec) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

func saveOAuth(v secretStore, server string, rec *oauthRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return v.Put(oauthKey(server), b)
}

// oauthFlow is one authorization in progress.
type oauthFlow struct {
	server  string
	state   string // the SDK's state parameter, known once the URL is built
	authURL string
	urls    chan string
	results chan callbackResult
	done    chan struct{}
	err     error
	cancel  context.CancelFunc
}

type callbackResult struct {
	res *auth.AuthorizationResult
	err error
}

// fetch is the SDK's AuthorizationCodeFetcher: publish the URL for the
// API caller, then wait for the browser's redirect.
func (f *oauthFlow) fetch(flows *oauthFlows) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		u, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		flows.register(f, u.Query().Get("state"), args.URL)
		f.urls <- args.URL
		select {
		case r := <-f.results:
			return r.res, r.err
		case <-ctx.Done():
			return nil, fmt.Errorf("no redirect from the authorization server within %s", OAuthFlowTimeout)
		}
	}
}

// oauthFlows are the flows in progress and the last failure per server
// (memory only: a flow does not survive a restart, its PKCE verifier
// lives in the SDK's handler).
type oauthFlows struct {
	mu       sync.Mutex
	byState  map[string]*oauthFlow
	byServer map[string]*oauthFlow
	failed   map[string]string
}

// begin makes f the server's flow, cancelling one already pending.
func (fl *oauthFlows) begin(f *oauthFlow) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.byServer == nil {
		fl.byState, fl.byServer, fl.failed = map[string]*oauthFlow{}, map[string]*oauthFlow{}, map[string]string{}
	}
	if old := fl.byServer[f.server]; old != nil {
		delete(fl.byState, old.state)
		old.cancel()
	}
	fl.byServer[f.server] = f
	delete(fl.failed, f.server)
}

func (fl *oauthFlows) register(f *oauthFlow, state, authURL string) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f.state, f.authURL = state, authURL
	if fl.byServer[f.server] == f && state != "" {
		fl.byState[state] = f
	}
}

// take hands out the flow a redirect's state names, once.
func (fl *oauthFlows) take(server, state string) *oauthFlow {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f := fl.byState[state]
	if f == nil || f.server != server {
		return nil
	}
	delete(fl.byState, state)
	return f
}

func (fl *oauthFlows) finish(f *oauthFlow, err error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f.err = err
	close(f.done)
	if fl.byServer[f.server] != f {
		return // replaced or cancelled: its outcome is nobody's status
	}
	delete(fl.byServer, f.server)
	delete(fl.byState, f.state)
	if err != nil {
		fl.failed[f.server] = err.Error()
	}
}

// pending reports the server's flow waiting for its redirect, and the
// last failure.
func (fl *oauthFlows) status(server string) (authURL, failure string) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f := fl.byServer[server]; f != nil {
		authURL = f.authURL
	}
	return authURL, fl.failed[server]
}

func (fl *oauthFlows) cancel(server string) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f := fl.byServer[server]; f != nil {
		delete(fl.byState, f.state)
		delete(fl.byServer, server)
		f.cancel()
	}
	delete(fl.failed, server)
}

// remoteView returns a remote server's view, or a clear error for a stdio one.
func (m *Manager) remoteView(ctx context.Context, name string) (ServerView, error) {
	v, err := m.Server(ctx, name)
	if err != nil {
		return v, err
	}
	if v.Transport != TransportHTTP && v.Transport != TransportSSE {
		return v, kernel.Errorf(kernel.KindInvalid, "oauth_unsupported_transport",
			"mcp server %s uses the %s transport; OAuth is only for http and sse servers", name, v.Transport)
	}
	return v, ctx.Err()
}

// StartAuth starts an authorization-code + PKCE flow for a remote server
// and returns the URL to open in a browser. redirectURL is fangd's
// callback route as the browser reaches it. The flow waits up to
// OAuthFlowTimeout for the redirect; a new StartAuth replaces it.
func (m *Manager) StartAuth(ctx context.Context, name, redirectURL string) (string, error) {
	v, err := m.remoteView(ctx, name)
	if err != nil {
		return "", err
	}
	client := m.env.oauthClient()
	req, resp, err := probeUnauthorized(ctx, client, v.URL)
	if err != nil {
		return "", kernel.Errorf(kernel.KindInvalid, "oauth_discovery_failed", "mcp server %s: %v", name, err)
	}
	rec, err := loadOAuth(m.env.vault, name)
	if err != nil {
		return "", err
	}
	flowCtx, cancel := context.WithTimeout(context.Background(), OAuthFlowTimeout)
	f := &oauthFlow{server: name, urls: make(chan string, 1), results: make(chan callbackResult, 1), done: make(chan struct{}), cancel: cancel}
	var issued *oauthRecord
	cfg := &auth.AuthorizationCodeHandlerConfig{
		RedirectURL:              redirectURL,
		Client:                   client,
		RequestRefreshToken:      true,
		AuthorizationCodeFetcher: f.fetch(&m.oauth),
		NewTokenSource: func(ctx context.Context, c *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			issued = &oauthRecord{ClientID: c.ClientID, ClientSecret: c.ClientSecret, AuthURL: c.Endpoint.AuthURL,
				TokenURL: c.Endpoint.TokenURL, AuthStyle: int(c.Endpoint.AuthStyle), RedirectURL: c.RedirectURL,
				Scopes: c.Scopes, Token: tok, AuthorizedAt: time.Now().UTC()}
			return oauth2.StaticTokenSource(tok), nil
		},
	}
	if rec != nil && rec.ClientID != "" && rec.RedirectURL == redirectURL {
		// Registered before for this redirect: reuse it rather than
		// registering a new client with the server on every sign-in.
		pre := &oauthex.ClientCredentials{ClientID: rec.ClientID}
		if rec.ClientSecret != "" {
			pre.ClientSecretAuth = &oauthex.ClientSecretAuth{ClientSecret: rec.ClientSecret}
		}
		cfg.PreregisteredClient = pre
	} else {
		cfg.DynamicClientRegistrationConfig = &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirectURL}, ClientName: "fangd", TokenEndpointAuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		}}
	}
	h, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		cancel()
		return "", kernel.Invalid("mcp server %s: %v", name, err)
	}
	m.oauth.begin(f)
	go func() {
		defer cancel()
		err := h.Authorize(flowCtx, req, resp)
		if err == nil && issued == nil {
			err = errors.New("the authorization server issued no token")
		}
		if err == nil {
			err = saveOAuth(m.env.vault, name, issued)
		}
		m.oauth.finish(f, err)
		m.afterAuth(name, err)
	}()
	select {
	case u := <-f.urls:
		return u, nil
	case <-f.done:
		return "", kernel.Errorf(kernel.KindInvalid, "oauth_discovery_failed", "mcp server %s: %v", name, f.err)
	case <-ctx.Done():
		m.oauth.cancel(name)
		return "", ctx.Err()
	}
}

// afterAuth audits a finished flow and, on success, reconnects the server
// with its new token.
func (m *Manager) afterAuth(name string, err error) {
	outcome, detail := "ok", "server "+name
	if err != nil {
		outcome, detail = "error", detail+": "+err.Error()
	}
	m.env.record(audit.Event{EventType: "mcp_oauth_authorized", Outcome: outcome, Actor: "mcp", Details: detail})
	if err == nil {
		// Nobody waits for this reconnect: the callback has answered.
		if _, rerr := m.Reconnect(context.Background(), name); rerr != nil {
			m.env.log.Warn().Err(rerr).Str("mcp_server", name).Msg("reconnect after authorization")
		}
	}
}

// CompleteAuth finishes the flow named by the redirect's state: the
// code goes to the SDK, which checks the state and exchanges it. It
// returns when the tokens are stored (or the exchange failed).
func (m *Manager) CompleteAuth(ctx context.Context, name string, p CallbackParams) error {
	f := m.oauth.take(name, p.State)
	if f == nil {
		return kernel.Errorf(kernel.KindInvalid, "oauth_state_unknown",
			"no authorization of mcp server %s is waiting for this state (it expired, was replaced, or was already used)", name)
	}
	r := callbackResult{res: &auth.AuthorizationResult{Code: p.Code, State: p.State, Iss: p.Iss}}
	if p.Error != "" {
		r = callbackResult{err: fmt.Errorf("the authorization server refused: %s %s", p.Error, p.ErrorDescription)}
	} else if p.Code == "" {
		r = callbackResult{err: errors.New("the redirect carried no code")}
	}
	f.results <- r
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return kernel.Errorf(kernel.KindUpstream, "oauth_failed", "authorization of mcp server %s failed: %v", name, f.err)
	}
	return nil
}

// AuthStatus reports a server's authorization state, measured: a flow
// waiting for its redirect, the last failure, the stored token, or what
// the connection saw.
func (m *Manager) AuthStatus(ctx context.Context, name string) (AuthStatus, error) {
	v, err := m.Server(ctx, name)
	if err != nil {
		return AuthStatus{}, err
	}
	if v.Transport != TransportHTTP && v.Transport != TransportSSE {
		return AuthStatus{State: AuthNotRequired}, ctx.Err()
	}
	if u, failure := m.oauth.status(name); u != "" {
		return AuthStatus{State: AuthPending, AuthURL: u}, nil
	} else if failure != "" {
		return AuthStatus{State: AuthError, Message: failure}, nil
	}
	rec, err := loadOAuth(m.env.vault, name)
	if err != nil {
		return AuthStatus{}, err
	}
	refused := v.LastErrorCode == codeAuthRequired
	switch {
	case rec != nil:
		st := AuthStatus{State: AuthAuthorized, Refreshable: rec.Token.RefreshToken != "", Scopes: rec.Scopes}
		at := rec.AuthorizedAt
		st.AuthorizedAt = &at
		if !rec.Token.Expiry.IsZero() {
			exp := rec.Token.Expiry.UTC()
			st.ExpiresAt = &exp
		}
		if refused || (!st.Refreshable && !rec.Token.Expiry.IsZero() && time.Now().After(rec.Token.Expiry)) {
			st.State, st.Message = AuthExpired, "the server no longer accepts the stored token; start a new authorization"
		}
		return st, nil
	case refused:
		return AuthStatus{State: AuthNeedsAuth, Message: v.LastError}, nil
	case v.Connected:
		return AuthStatus{State: AuthNotRequired}, nil
	}
	return AuthStatus{State: AuthUnknown}, nil
}

// RevokeAuth forgets a server's tokens and client registration, cancels
// a pending flow and reconnects the server without credentials.
func (m *Manager) RevokeAuth(ctx context.Context, name string) (AuthStatus, error) {
	if _, err := m.remoteView(ctx, name); err != nil {
		return AuthStatus{}, err
	}
	m.oauth.cancel(name)
	had, err := m.env.vault.Has(oauthKey(name))
	if err != nil {
		return AuthStatus{}, err
	}
	if had {
		if err := m.env.vault.Delete(oauthKey(name)); err != nil {
			return AuthStatus{}, err
		}
	}
	m.env.record(audit.Event{EventType: "mcp_oauth_revoked", Outcome: "ok", Actor: "mcp",
		Details: fmt.Sprintf("server %s (stored tokens: %t)", name, had)})
	if _, err := m.Reconnect(ctx, name); err != nil {
		m.env.log.Warn().Err(err).Str("mcp_server", name).Msg("reconnect after revoke")
	}
	return m.AuthStatus(ctx, name)
}

// oauthClient is the HTTP client of discovery, registration, the code
// exchange and refreshes: through the network policy, no redirects.
func (e *env) oauthClient() *http.Client {
	return newRemoteClient(nil, e.opts.Policy, 30*time.Second, nil).Client
}

// probeUnauthorized sends an unauthenticated initialize to the server to
// collect its 401 challenge (which names its protected-resource
// metadata and scopes). A server that does not answer 401 still gets a
// flow: the SDK then looks for the metadata at the well-known URLs.
func probeUnauthorized(ctx context.Context, c *http.Client, serverURL string) (*http.Request, *http.Response, error) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fangd","version":"oauth-probe"}}}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serverURL, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return req, resp, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return req, &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil))}, nil
}

// storedTokens is a connection's token source: the stored token,
// refreshed through the network policy when it expires, each refreshed
// token saved back to the vault so a restart keeps it.
type storedTokens struct {
	vault  secretStore
	server string
	rec    *oauthRecord
	mu     sync.Mutex
	src    oauth2.TokenSource
}

// tokensFor returns the server's token source, or nil when it has no
// stored authorization.
func (e *env) tokensFor(server string) (*storedTokens, error) {
	rec, err := loadOAuth(e.vault, server)
	if err != nil || rec == nil {
		return nil, err
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.oauthClient())
	return &storedTokens{vault: e.vault, server: server, rec: rec, src: rec.config().TokenSource(ctx, rec.Token)}, nil
}

// Token returns a valid access token; a refresh the server refuses is
// permanent (only a new authorization helps), a network failure is not.
func (s *storedTokens) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, err := s.src.Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%w: the authorization server refused to refresh the token (%s)", errAuthRequired, re.ErrorCode)
		}
		return nil, err
	}
	if tok.AccessToken != s.rec.Token.AccessToken {
		next := *s.rec
		next.Token = tok
		if err := saveOAuth(s.vault, s.server, &next); err != nil {
			return nil, fmt.Errorf("saving the refreshed token: %w", err)
		}
		s.rec = &next
	}
	return tok, nil
}
