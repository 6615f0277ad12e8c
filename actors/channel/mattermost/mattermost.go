// Package mattermost is the Mattermost channel adapter: REST API v4 for
// identity and posting, the v4 websocket for "posted" events. It is
// hand-written against the documented API (no Mattermost client library):
// the surface is four endpoints and one event type.
package mattermost

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// MaxPostRunes is the server's limit on a post's message (16383 runes).
const MaxPostRunes = 16383

// Adapter is one Mattermost bot account.
type Adapter struct {
	server string // base URL without trailing slash
	token  string
	http   *http.Client
	dial   func(ctx context.Context, network, addr string) (net.Conn, error) // the network policy's, if any

	mu     sync.Mutex
	selfID string // the bot's user id, learned from /users/me
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	server, err := cfg.BaseURL("server_url", "https://mattermost.example.com")
	if err != nil {
		return nil, err
	}
	return &Adapter{server: server, token: cfg.Secret("token"), http: cfg.HTTPClient(30 * time.Second), dial: cfg.DialContext()}, nil
}

// Capabilities are Mattermost's.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{
		MaxMessageLength: MaxPostRunes,
		Threads:          true,
		Edits:            true,
		Markdown:         "markdown",
		// The server's default rate limit is 10 requests/s with a burst of
		// 100 per user (RateLimitSettings); stay under it.
		Pace: channel.Pace{PerSecond: 8, Burst: 20},
	}
}

// user is the part of a Mattermost user object the adapter reads.
type user struct {
	ID        string `json:"id"`
	Username  string `json:"username"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	Nickname  string `json:"nickname"`
}

// Probe asks GET /api/v4/users/me who the token belongs to.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	var u user
	if err := a.call(ctx, http.MethodGet, "/api/v4/users/me", nil, &u); err != nil {
		return channel.Identity{}, err
	}
	a.mu.Lock()
	a.selfID = u.ID
	a.mu.Unlock()
	display := strings.TrimSpace(u.FirstName + " " + u.LastName)
	if display == "" {
		display = u.Nickname
	}
	return channel.Identity{ID: u.ID, Name: u.Username, DisplayName: display}, nil
}

// post is the part of model.Post the adapter sends and reads.
type post struct {
	ID        string `json:"id,omitempty"`
	ChannelID string `json:"channel_id"`
	UserID    string `json:"user_id,omitempty"`
	RootID    string `json:"root_id,omitempty"`
	Message   string `json:"message"`
	Type      string `json:"type,omitempty"`

	PendingPostID string `json:"pending_post_id,omitempty"`
}

// Send creates a post. A reply goes into the thread of the message it
// answers: Mattermost threads hang off the root post, so the root is the
// inbound message's own root when it was already in a thread, else the
// message itself.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	root := msg.ThreadID
	if root == "" {
		root = msg.ReplyTo
	}
	p := post{ChannelID: msg.ChatID, RootID: root, Message: msg.Text}
	if msg.Key != "" {
		// The server remembers pending_post_id for 30 s and answers a
		// repeat with the post already created, so a retry after a lost
		// response does not post twice. The bot's id keeps keys of
		// different bots on one server apart.
		p.PendingPostID = a.self() + ":" + msg.Key
	}
	var created post
	err := a.call(ctx, http.MethodPost, "/api/v4/posts", p, &created)
	if err != nil {
		return "", err
	}
	return created.ID, nil
}

// appError is Mattermost's error body (model.AppError).
type appError struct {
	ID         string `json:"id"`
	Message    string `json:"message"`
	StatusCode int    `json:"status_code"`
}

// call does one authenticated REST request and classifies failures:
// 401 means the token is bad (permanent); 403/404/400 refuse this request
// only (a channel the bot may not post in); 429 carries the limiter's
// reset time; 5xx and network errors are transient.
func (a *Adapter) call(ctx context.Context, method, path string, in, out any) error {
	return channel.CallJSON(ctx, a.http, channel.Call{Method: method, URL: a.server + path, In: in, Out: out, Limit: 1 << 20,
		Header: http.Header{"Authorization": {"Bearer " + a.token}, "Accept": {"application/json"}},
		What:   "mattermost: " + method + " " + path, Refused: classify})
}

func classify(resp *http.Response, data []byte) error {
	var ae appError
	desc := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &ae) == nil && ae.Message != "" {
		desc = ae.Message
	}
	err := &channel.StatusError{Status: resp.StatusCode, Description: fmt.Sprintf("mattermost: %s (HTTP %d)", channel.Clip(desc, 300), resp.StatusCode)}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized:
		return channel.Permanent(err)
	case s == http.StatusTooManyRequests:
		return channel.RetryAfter(err, retryAfter(resp.Header))
	case s >= 400 && s < 500:
		return channel.Rejected(err)
	}
	return err
}

// retryAfter reads the wait a 429 asks for: Mattermost's limiter sets
// X-Ratelimit-Reset (seconds until the bucket refills) and Retry-After.
func retryAfter(h http.Header) time.Duration {
	return httpretry.After(h, time.Now(), "X-Ratelimit-Reset")
}

func (a *Adapter) self() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.selfID
}
