// Package googlechat is the Google Chat channel adapter (registry name
// google_chat). Chat POSTs interaction events to /channels/<name>/webhook
// with a bearer token signed by Google, which the adapter verifies against
// Google's published keys for the configured audience; replies are created
// with the Chat REST API (spaces.messages.create) as the app's service
// account, or through a space's incoming webhook when one is configured
// for that space.
package googlechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	xjwt "golang.org/x/oauth2/jwt"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/jwtkeys"
	"github.com/fangd/fangd/transport/httpretry"
)

// ChatScope is the scope a Chat app calls the API with.
const ChatScope = "https://www.googleapis.com/auth/chat.bot"

// Verification constants from developers.google.com/workspace/chat/verify-requests-from-chat.
const (
	chatIssuer      = "chat@system.gserviceaccount.com"
	projectCertsURL = "https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com"
	idTokenCertsURL = "https://www.googleapis.com/oauth2/v3/certs"
)

// MaxTextRunes is Chat's limit on a message's text.
const MaxTextRunes = 4096

var (
	spaceName = regexp.MustCompile(`^spaces/[A-Za-z0-9_-]+$`)
	digits    = regexp.MustCompile(`^[0-9]+$`)
)

// Adapter is one Chat app.
type Adapter struct {
	jwt       *xjwt.Config
	api       string
	audience  string
	byNumber  bool // audience is a project number (else an endpoint URL)
	certsURL  string
	legacy    string // verification token of old-style apps
	hookURL   string
	hookSpace string
	http      *http.Client
	keys      *jwtkeys.Keys

	mu  sync.Mutex
	tok *oauth2.Token
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	jc, err := google.JWTConfigFromJSON([]byte(cfg.Secret("service_account")), ChatScope)
	if err != nil {
		return nil, &channel.FieldError{Field: "service_account", Msg: "must be the JSON key file of the app's service account"}
	}
	// The key file names its token endpoint; token_url overrides it only
	// when set explicitly.
	if v := cfg.Values["token_url"]; v != "" {
		jc.TokenURL = v
	}
	if _, err := channel.HTTPURL(jc.TokenURL); err != nil {
		return nil, &channel.FieldError{Field: "token_url", Msg: err.Error()}
	}
	a := &Adapter{jwt: jc, api: strings.TrimRight(cfg.Text("api_url"), "/"), audience: cfg.Text("audience"),
		legacy: cfg.Secret("verification_token"), http: cfg.HTTPClient(30 * time.Second),
		keys: jwtkeys.New("google_chat", "Google's signing keys")}
	if _, err := channel.HTTPURL(a.api); err != nil {
		return nil, &channel.FieldError{Field: "api_url", Msg: err.Error()}
	}
	if a.audience == "" && a.legacy == "" {
		return nil, &channel.FieldError{Field: "audience", Msg: "is required to verify requests from Google Chat: the Cloud project number (or the endpoint URL, if the app is set up with that audience)"}
	}
	if a.audience != "" {
		a.byNumber = digits.MatchString(a.audience)
		if !a.byNumber {
			if _, err := channel.HTTPURL(a.audience); err != nil {
				return nil, &channel.FieldError{Field: "audience", Msg: "must be a project number or the app's https endpoint URL"}
			}
		}
		a.certsURL = cfg.Text("certs_url")
		switch {
		case a.certsURL != "":
			if _, err := channel.HTTPURL(a.certsURL); err != nil {
				return nil, &channel.FieldError{Field: "certs_url", Msg: err.Error()}
			}
		case a.byNumber:
			a.certsURL = projectCertsURL
		default:
			a.certsURL = idTokenCertsURL
		}
	}
	if hook := cfg.Secret("incoming_webhook_url"); hook != "" {
		u, err := channel.HTTPURL(hook)
		if err != nil || u.Query().Get("key") == "" {
			return nil, &channel.FieldError{Field: "incoming_webhook_url", Msg: "must be a space's incoming webhook URL (…/v1/spaces/…/messages?key=…&token=…)"}
		}
		i := strings.Index(u.Path, "spaces/")
		if i < 0 {
			return nil, &channel.FieldError{Field: "incoming_webhook_url", Msg: "does not name a space"}
		}
		a.hookURL, a.hookSpace = hook, strings.TrimSuffix(u.Path[i:], "/messages")
	}
	return a, nil
}

// Capabilities of Google Chat: threads, its own markdown-like text format
// (*bold*, _italic_, ~strike~, `code`), and the API's write quota of 60
// messages a minute per space (1 per second sustained).
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{
		MaxMessageLength: MaxTextRunes,
		Threads:          true,
		Edits:            true,
		Markdown:         "mrkdwn",
		Pace:             channel.Pace{PerSecond: 10, Burst: 20, ChatInterval: time.Second, ChatBurst: 5},
	}
}

// token returns a cached access token for the service account, fetching
// one when needed (fresh forces it).
func (a *Adapter) token(ctx context.Context, fresh bool) (string, bool, error) {
	a.mu.Lock()
	t := a.tok
	a.mu.Unlock()
	if !fresh && t.Valid() {
		return t.AccessToken, false, nil
	}
	t, err := a.jwt.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, a.http)).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			code, desc := re.ErrorCode, re.ErrorDescription
			if code == "" { // x/oauth2/jwt leaves the OAuth error body unparsed
				var body struct {
					Error       string `json:"error"`
					Description string `json:"error_description"`
				}
				if json.Unmarshal(re.Body, &body) == nil {
					code, desc = body.Error, body.Description
				}
			}
			msg := fmt.Errorf("google_chat: token endpoint refused the service account: %s %s", code, desc)
			switch {
			case re.Response != nil && re.Response.StatusCode == http.StatusTooManyRequests:
				return "", true, channel.RetryAfter(msg, retryAfter(re.Response.Header))
			case re.Response != nil && re.Response.StatusCode >= 500:
				return "", true, msg
			}
			return "", true, channel.Permanent(msg) // invalid_grant (unknown/revoked key), invalid_scope...
		}
		return "", true, fmt.Errorf("google_chat: token endpoint: %w", err)
	}
	a.mu.Lock()
	a.tok = t
	a.mu.Unlock()
	return t.AccessToken, true, nil
}

// Probe gets a fresh token and lists one space: that proves the key, the
// enabled Chat API and the app configuration.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	tok, _, err := a.token(ctx, true)
	if err != nil {
		return channel.Identity{}, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.api+"/spaces?pageSize=1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, data, err := channel.Do(a.http, req, 1<<20)
	if err != nil {
		return channel.Identity{}, fmt.Errorf("google_chat: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp, data)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return channel.Identity{}, channel.Permanent(err) // API not enabled, app not configured
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			return channel.Identity{}, channel.RetryAfter(err, retryAfter(resp.Header))
		}
		return channel.Identity{}, err
	}
	return channel.Identity{ID: a.jwt.Email, Name: a.jwt.Email, DisplayName: "Google Chat app"}, nil
}

// Run checks the service account, loads Google's keys for the bearer
// tokens (before any event can be accepted), reports connected and keeps
// the keys fresh until ctx ends.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	id, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	if a.audience != "" {
		if err := a.loadKeys(ctx); err != nil {
			return err
		}
	}
	host.Connected(id)
	return a.keys.Keep(ctx, keyRefresh, func(ctx context.Context) error {
		if a.audience == "" {
			return nil
		}
		return a.loadKeys(ctx)
	}, func(err error) {
		host.Log().Warn().Err(err).Msg("google_chat: could not refresh Google's signing keys; keeping the old ones")
	})
}

// message is the Chat message resource (the parts used here).
type message struct {
	Name   string `json:"name,omitempty"`
	Text   string `json:"text,omitempty"`
	Thread *struct {
		Name string `json:"name,omitempty"`
	} `json:"thread,omitempty"`
}

// Send creates a message in the space, in the thread of the message it
// answers (or a new thread if that one is gone).
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	if !spaceName.MatchString(msg.ChatID) {
		return "", channel.Rejected(fmt.Errorf("google_chat: %q is not a space name (spaces/…)", msg.ChatID))
	}
	body := map[string]any{"text": msg.Text}
	if msg.ThreadID != "" {
		body["thread"] = map[string]string{"name": msg.ThreadID}
	}
	b, _ := json.Marshal(body)
	viaHook := a.hookURL != "" && msg.ChatID == a.hookSpace
	var u, tok string
	fetched := false
	if viaHook {
		u = a.hookURL + "&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
	} else {
		var err error
		if tok, fetched, err = a.token(ctx, false); err != nil {
			return "", err
		}
		u = a.api + "/" + msg.ChatID + "/messages?messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return "", channel.Rejected(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, data, err := channel.Do(a.http, req, 1<<20)
	if err != nil {
		return "", fmt.Errorf("google_chat: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		var m message
		_ = json.Unmarshal(data, &m)
		return m.Name, nil
	}
	// A 403 is the app not in the space, a 404 no such space, a 400 bad text.
	var drop func()
	if !viaHook {
		drop = a.dropToken
	}
	return "", channel.BearerSendError(statusError(resp, data), resp.StatusCode, retryAfter(resp.Header), fetched, drop)
}

// dropToken forgets the cached access token.
func (a *Adapter) dropToken() {
	a.mu.Lock()
	a.tok = nil
	a.mu.Unlock()
}

// statusError reads Google's {"error":{"code","message","status"}} body.
func statusError(resp *http.Response, data []byte) *channel.StatusError {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	desc := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		desc = e.Error.Status + ": " + e.Error.Message
	}
	return &channel.StatusError{Status: resp.StatusCode, Description: fmt.Sprintf("google_chat: %s (HTTP %d)", channel.Clip(desc, 300), resp.StatusCode)}
}

func retryAfter(h http.Header) time.Duration { return httpretry.After(h, time.Now()) }
