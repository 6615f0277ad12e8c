// Package gotify is the Gotify channel adapter. Gotify is a push server:
// applications publish messages (POST /message with an application token)
// and clients read them (the /stream websocket with a client token). fangd
// reads the stream with its client token, treats messages from the user's
// other applications as inbound, and answers through its own application,
// whose own messages it recognises by application id and skips.
//
// After every (re)connect the adapter also reads GET /message and delivers
// what arrived since the last message it handed on (kept as a cursor), so
// an outage or a restart loses nothing the server kept.
package gotify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// Stream timing: Gotify pings every 45 s by default (server.stream.pingperiodseconds).
const readTimeout = 120 * time.Second

// Adapter is one Gotify application/client pair.
type Adapter struct {
	server      string
	appToken    string
	clientToken string
	http        *http.Client
	dial        func(ctx context.Context, network, addr string) (net.Conn, error) // the network policy's, if any

	mu     sync.Mutex
	ownApp int64
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	server, err := cfg.BaseURL("server_url", "https://gotify.example.com")
	if err != nil {
		return nil, err
	}
	return &Adapter{server: server, appToken: cfg.Secret("app_token"), clientToken: cfg.Secret("client_token"),
		http: cfg.HTTPClient(30 * time.Second), dial: cfg.DialContext()}, nil
}

// Capabilities are Gotify's: no length limit worth the name (LibreFang
// uses 65535), markdown when the message says so in its extras.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 65535, Markdown: "markdown"}
}

type application struct {
	ID    int64  `json:"id"`
	Token string `json:"token"`
	Name  string `json:"name"`
}

// Probe checks the client token (GET /current/user) and finds fangd's own
// application among the user's (GET /application), so its messages can be
// told apart on the stream.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	var u struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := a.call(ctx, http.MethodGet, "/current/user", a.clientToken, nil, &u); err != nil {
		return channel.Identity{}, err
	}
	var apps []application
	if err := a.call(ctx, http.MethodGet, "/application", a.clientToken, nil, &apps); err != nil {
		return channel.Identity{}, err
	}
	for _, app := range apps {
		if app.Token == a.appToken {
			a.mu.Lock()
			a.ownApp = app.ID
			a.mu.Unlock()
			return channel.Identity{ID: strconv.FormatInt(u.ID, 10), Name: u.Name, DisplayName: app.Name}, nil
		}
	}
	// Replies published with a token of another user's application would
	// never show up on this client's stream: that is a configuration error.
	return channel.Identity{}, channel.Permanent(errors.New("gotify: app_token is not an application of the client token's user " + strconv.Quote(u.Name)))
}

// message is a Gotify message.
type message struct {
	ID       int64  `json:"id"`
	AppID    int64  `json:"appid"`
	Message  string `json:"message"`
	Title    string `json:"title"`
	Priority int    `json:"priority"`
	Date     string `json:"date"`
}

// Send publishes a message from fangd's application.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	body := map[string]any{"title": "fangd", "message": msg.Text, "priority": 5,
		"extras": map[string]any{"client::display": map[string]string{"contentType": "text/markdown"}}}
	var m message
	if err := a.call(ctx, http.MethodPost, "/message", a.appToken, body, &m); err != nil {
		return "", err
	}
	return strconv.FormatInt(m.ID, 10), nil
}

// Run opens the stream, catches up from the cursor, then delivers stream
// messages until ctx ends or the socket fails.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	if err := a.startCursor(ctx, host); err != nil {
		return err
	}
	wsURL := "ws" + strings.TrimPrefix(a.server, "http") + "/stream"
	dialer := websocket.Dialer{HandshakeTimeout: 20 * time.Second, Proxy: http.ProxyFromEnvironment}
	if a.dial != nil {
		dialer.Proxy, dialer.NetDialContext = nil, a.dial
	}
	conn, resp, err := dialer.DialContext(ctx, wsURL, http.Header{"X-Gotify-Key": {a.clientToken}})
	if err != nil {
		if resp != nil {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return classify(resp, data)
		}
		return fmt.Errorf("gotify: stream: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
	conn.SetPingHandler(func(data string) error {
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		host.Alive()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	host.Connected(me)

	// The socket is open, so nothing new can slip between the catch-up
	// read and the stream; duplicates are dropped by id.
	cursor, err := a.catchUp(ctx, host)
	if err != nil {
		return err
	}
	return channel.ReadFrames(ctx, conn, readTimeout, "gotify: stream", func(data []byte) error {
		var m message
		if json.Unmarshal(data, &m) != nil || m.ID <= cursor {
			host.Alive()
			return nil
		}
		if err := a.handle(ctx, host, m); err != nil {
			return err
		}
		cursor = m.ID
		return nil
	})
}

// startCursor returns the saved cursor. On the very first start there is
// none: the newest message id is recorded instead, before the stream opens,
// so history is not replayed to the agent but nothing sent from then on is
// missed.
func (a *Adapter) startCursor(ctx context.Context, host channel.Host) error {
	saved, err := host.Cursor("last_id")
	if err != nil || saved != "" {
		return err
	}
	var page struct {
		Messages []message `json:"messages"`
	}
	if err := a.call(ctx, http.MethodGet, "/message?limit=1", a.clientToken, nil, &page); err != nil {
		return err
	}
	var newest int64
	for _, m := range page.Messages {
		newest = max(newest, m.ID)
	}
	return host.SaveCursor("last_id", strconv.FormatInt(newest, 10))
}

// catchUp delivers messages newer than the saved cursor (the newest 100 at
// most) and returns the cursor.
func (a *Adapter) catchUp(ctx context.Context, host channel.Host) (int64, error) {
	saved, err := host.Cursor("last_id")
	if err != nil {
		return 0, err
	}
	cursor, _ := strconv.ParseInt(saved, 10, 64)
	var page struct {
		Messages []message `json:"messages"`
	}
	if err := a.call(ctx, http.MethodGet, "/message?limit=100", a.clientToken, nil, &page); err != nil {
		return 0, err
	}
	sort.Slice(page.Messages, func(i, j int) bool { return page.Messages[i].ID < page.Messages[j].ID })
	for _, m := range page.Messages {
		if m.ID <= cursor {
			continue
		}
		if err := a.handle(ctx, host, m); err != nil {
			return 0, err
		}
		cursor = m.ID
	}
	return cursor, nil
}

// handle delivers one message (unless it is fangd's own) and advances the
// cursor.
func (a *Adapter) handle(ctx context.Context, host channel.Host, m message) error {
	a.mu.Lock()
	own := m.AppID == a.ownApp
	a.mu.Unlock()
	// A message and the cursor past it are stored in one write.
	cur := channel.Cursor{Key: "last_id", Value: strconv.FormatInt(m.ID, 10)}
	if own || strings.TrimSpace(m.Message) == "" {
		host.Alive()
		return host.SaveCursor(cur.Key, cur.Value)
	}
	app := strconv.FormatInt(m.AppID, 10)
	name := m.Title
	if name == "" {
		name = "app-" + app
	}
	at, err := time.Parse(time.RFC3339Nano, m.Date)
	if err != nil {
		at = time.Now()
	}
	in := channel.Inbound{ChatID: app, UserID: app, UserName: name, Text: m.Message,
		MessageID: strconv.FormatInt(m.ID, 10), Direct: true, At: at}
	if err := host.DeliverAndSave(ctx, cur, in); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("gotify: deliver: %w", err)
	}
	return nil
}

// call does one request with a token in X-Gotify-Key (never in the URL,
// where proxies would log it).
func (a *Adapter) call(ctx context.Context, method, path, token string, in, out any) error {
	return channel.CallJSON(ctx, a.http, channel.Call{Method: method, URL: a.server + path, In: in, Out: out, Limit: 4 << 20,
		Header: http.Header{"X-Gotify-Key": {token}, "Accept": {"application/json"}},
		What:   "gotify: " + method + " " + path, Refused: classify})
}

// classify maps Gotify's {"error","errorCode","errorDescription"} answers.
func classify(resp *http.Response, data []byte) error {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"errorDescription"`
	}
	desc := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && (e.Description != "" || e.Error != "") {
		desc = strings.TrimSpace(e.Error + ": " + e.Description)
	}
	return channel.HTTPStatusError(resp.StatusCode, fmt.Sprintf("gotify: %s (HTTP %d)", channel.Clip(desc, 300), resp.StatusCode),
		httpretry.After(resp.Header, time.Now()))
}
