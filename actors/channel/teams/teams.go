// Package teams is the Microsoft Teams channel adapter, written against the
// Bot Framework REST protocol (no SDK): Teams POSTs activities to
// /channels/<name>/webhook with a JWT from the Bot Connector service, which
// the adapter verifies against the Bot Framework's published OpenID keys;
// replies go to the conversation's serviceUrl (/v3/conversations/...) with
// an access token from the Microsoft identity platform (client
// credentials of the bot's app registration).
package teams

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/jwtkeys"
	"github.com/fangd/fangd/transport/httpretry"
)

// Constants of the Bot Framework protocol.
const (
	// Scope of the bot's access token for the Bot Connector.
	connectorScope = "https://api.botframework.com/.default"
	// Issuer of the tokens the Bot Connector sends to bots.
	connectorIssuer = "https://api.botframework.com"
	// DefaultServiceURL is where Teams' Bot Connector lives; used for a
	// conversation no activity has named a serviceUrl for yet.
	DefaultServiceURL = "https://smba.trafficmanager.net/teams/"
)

// MaxTextRunes keeps an activity under Teams' ~28 KB message size even
// with four-byte characters.
const MaxTextRunes = 7000

// Adapter is one bot registration.
type Adapter struct {
	appID     string
	creds     clientcredentials.Config
	openidURL string
	http      *http.Client
	keys      *jwtkeys.Keys

	mu       sync.Mutex
	tok      *oauth2.Token
	host     channel.Host
	services map[string]string // conversation id -> serviceUrl
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	for _, k := range []string{"auth_url", "openid_url"} {
		_, err := channel.HTTPURL(cfg.Text(k))
		if err != nil {
			return nil, &channel.FieldError{Field: k, Msg: "must be an http(s) URL"}
		}
	}
	appID := strings.TrimSpace(cfg.Text("app_id"))
	hc := cfg.HTTPClient(30 * time.Second)
	return &Adapter{
		appID: appID,
		creds: clientcredentials.Config{ClientID: appID, ClientSecret: cfg.Secret("app_password"),
			TokenURL: cfg.Text("auth_url"), Scopes: []string{connectorScope}, AuthStyle: oauth2.AuthStyleInParams},
		openidURL: cfg.Text("openid_url"),
		http:      hc,
		keys:      jwtkeys.New("teams", "the Bot Framework signing keys"),
		services:  map[string]string{},
	}, nil
}

// Capabilities of Teams: threads (replies to an activity), markdown, and
// the Bot Framework's per-conversation limits (7 messages/s, 60 per 30 s).
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{
		MaxMessageLength: MaxTextRunes,
		Threads:          true,
		Edits:            true,
		Markdown:         "markdown",
		Pace:             channel.Pace{PerSecond: 30, Burst: 50, ChatInterval: 500 * time.Millisecond, ChatBurst: 7},
	}
}

// token returns a cached access token, fetching one when needed. fresh
// forces a new one; fetched reports whether this call fetched it.
func (a *Adapter) token(ctx context.Context, fresh bool) (tok string, fetched bool, err error) {
	a.mu.Lock()
	t := a.tok
	a.mu.Unlock()
	if !fresh && t.Valid() {
		return t.AccessToken, false, nil
	}
	t, err = a.creds.Token(context.WithValue(ctx, oauth2.HTTPClient, a.http))
	if err != nil {
		return "", true, classifyToken(err)
	}
	a.mu.Lock()
	a.tok = t
	a.mu.Unlock()
	return t.AccessToken, true, nil
}

// classifyToken maps the identity platform's OAuth errors: a wrong app id
// or secret (invalid_client, unauthorized_client...) needs a new
// configuration; 429 and 5xx are transient.
func classifyToken(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("teams: token endpoint: %w", err)
	}
	desc := re.ErrorDescription
	if i := strings.Index(desc, "\r\n"); i > 0 {
		desc = desc[:i] // AADSTS messages carry trace ids after the first line
	}
	msg := fmt.Errorf("teams: token endpoint refused the app credentials: %s %s", re.ErrorCode, desc)
	switch re.ErrorCode {
	case "invalid_client", "unauthorized_client", "invalid_request", "invalid_scope", "unsupported_grant_type", "invalid_grant":
		return channel.Permanent(msg)
	}
	if re.Response != nil {
		if re.Response.StatusCode == http.StatusTooManyRequests {
			return channel.RetryAfter(msg, retryAfter(re.Response.Header))
		}
		if re.Response.StatusCode == http.StatusUnauthorized || re.Response.StatusCode == http.StatusBadRequest {
			return channel.Permanent(msg)
		}
	}
	return msg
}

// Probe gets a fresh access token: that checks the app id and password
// with the identity platform (Teams has no "who am I" for bots).
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	if _, _, err := a.token(ctx, true); err != nil {
		return channel.Identity{}, err
	}
	return channel.Identity{ID: a.appID, Name: a.appID, DisplayName: "Bot Framework app"}, nil
}

// Run checks the credentials, loads the Bot Framework signing keys (before
// any activity can be accepted), reports connected and then keeps the keys
// fresh until ctx ends.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	id, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	if err := a.loadKeys(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	a.host = host
	a.mu.Unlock()
	host.Connected(id)
	return a.keys.Keep(ctx, keyRefresh, a.loadKeys, func(err error) {
		host.Log().Warn().Err(err).Msg("teams: could not refresh Bot Framework signing keys; keeping the old ones")
	})
}

// Send posts a message activity to the conversation, as a reply to the
// activity it answers when there is one.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	svc := a.serviceURL(msg.ChatID)
	u := strings.TrimRight(svc, "/") + "/v3/conversations/" + url.PathEscape(msg.ChatID) + "/activities"
	if msg.ReplyTo != "" {
		u += "/" + url.PathEscape(msg.ReplyTo)
	}
	body, _ := json.Marshal(map[string]any{"type": "message", "text": msg.Text, "textFormat": "markdown",
		"replyToId": msg.ReplyTo, "from": map[string]string{"id": "28:" + a.appID}})
	tok, fetched, err := a.token(ctx, false)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", channel.Rejected(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, data, err := channel.Do(a.http, req, 64<<10)
	if err != nil {
		return "", fmt.Errorf("teams: connector: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		var r struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &r)
		return r.ID, nil
	}
	desc := connectorError(data)
	serr := &channel.StatusError{Status: resp.StatusCode, Description: fmt.Sprintf("teams: connector: %s (HTTP %d)", desc, resp.StatusCode)}
	// A 403 is the bot blocked by the user, a 404 an unknown conversation, a
	// 413 a message too big.
	return "", channel.BearerSendError(serr, resp.StatusCode, retryAfter(resp.Header), fetched, a.dropToken)
}

// dropToken forgets the cached access token.
func (a *Adapter) dropToken() {
	a.mu.Lock()
	a.tok = nil
	a.mu.Unlock()
}

func connectorError(data []byte) string {
	var e struct {
		Message string `json:"message"`
		Error   struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil {
		if e.Error.Message != "" {
			return e.Error.Code + ": " + e.Error.Message
		}
		if e.Message != "" {
			return e.Message
		}
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// serviceURL is where conversation conv's Bot Connector lives: learned from
// its activities (kept as a cursor so it survives restarts), else Teams'
// global endpoint.
func (a *Adapter) serviceURL(conv string) string {
	a.mu.Lock()
	svc, host := a.services[conv], a.host
	a.mu.Unlock()
	if svc != "" {
		return svc
	}
	if host != nil {
		if v, err := host.Cursor(serviceKey(conv)); err == nil && v != "" {
			a.mu.Lock()
			a.services[conv] = v
			a.mu.Unlock()
			return v
		}
	}
	return DefaultServiceURL
}

func serviceKey(conv string) string { return "service_url:" + conv }

func retryAfter(h http.Header) time.Duration { return httpretry.After(h, time.Now()) }

// activity is the part of a Bot Framework activity the adapter reads.
type activity struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	Timestamp  string `json:"timestamp"`
	ServiceURL string `json:"serviceUrl"`
	ChannelID  string `json:"channelId"`
	From       struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"from"`
	Conversation struct {
		ID               string `json:"id"`
		IsGroup          bool   `json:"isGroup"`
		ConversationType string `json:"conversationType"`
		TenantID         string `json:"tenantId"`
	} `json:"conversation"`
	Text        string `json:"text"`
	ReplyToID   string `json:"replyToId"`
	ChannelData struct {
		Tenant struct {
			ID string `json:"id"`
		} `json:"tenant"`
	} `json:"channelData"`
}

// mentionTag is how Teams writes an @mention in the text.
var mentionTag = regexp.MustCompile(`<at>[^<]*</at>`)

// Webhook verifies the Bot Connector's token and turns a message activity
// into an inbound message. Other activity types (conversationUpdate,
// typing, invoke...) are acknowledged and ignored.
func (a *Adapter) Webhook(ctx context.Context, req *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if req.Method != http.MethodPost {
		return &channel.WebhookResponse{Status: http.StatusMethodNotAllowed}, nil, nil
	}
	claims, err := a.verify(req.Header.Get("Authorization"))
	if err != nil {
		return nil, nil, err
	}
	var act activity
	if err := json.Unmarshal(req.Body, &act); err != nil {
		return nil, nil, fmt.Errorf("teams: activity is not JSON: %w", err)
	}
	// The token names the service the activity came from; an activity that
	// claims another serviceUrl could make us send replies (with our access
	// token) elsewhere.
	if strings.TrimRight(claims.ServiceURL, "/") != strings.TrimRight(act.ServiceURL, "/") || act.ServiceURL == "" {
		return nil, nil, fmt.Errorf("teams: activity serviceUrl does not match the token's: %w", channel.ErrBadSignature)
	}
	if act.Type != "message" || act.Conversation.ID == "" {
		return nil, nil, nil
	}
	text := strings.TrimSpace(mentionTag.ReplaceAllString(act.Text, ""))
	if text == "" || act.From.ID == "28:"+a.appID || act.From.ID == a.appID {
		return nil, nil, nil
	}
	a.rememberService(act.Conversation.ID, act.ServiceURL)
	tenant := act.Conversation.TenantID
	if tenant == "" {
		tenant = act.ChannelData.Tenant.ID
	}
	at, err := time.Parse(time.RFC3339Nano, act.Timestamp)
	if err != nil {
		at = time.Now()
	}
	name := act.From.Name
	if name == "" {
		name = act.From.ID
	}
	return nil, []channel.Inbound{{ChatID: act.Conversation.ID, Space: tenant, UserID: act.From.ID, UserName: name,
		Text: text, MessageID: act.ID, Direct: act.Conversation.ConversationType == "personal" || !act.Conversation.IsGroup && act.Conversation.ConversationType == "",
		At: at}}, nil
}

// rememberService records a conversation's serviceUrl, durably when it is
// new or changed (rare: once per conversation).
func (a *Adapter) rememberService(conv, svc string) {
	a.mu.Lock()
	old, host := a.services[conv], a.host
	a.services[conv] = svc
	a.mu.Unlock()
	if old != svc && host != nil {
		if err := host.SaveCursor(serviceKey(conv), svc); err != nil {
			host.Log().Warn().Err(err).Msg("teams: could not store the conversation's serviceUrl")
		}
	}
}
