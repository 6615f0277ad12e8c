// Package ntfy is the ntfy channel adapter: it subscribes to the topic's
// JSON message stream (GET /<topic>/json) and publishes replies to the same
// topic (POST /<topic>). Replies carry the tag "fangd-reply" so the adapter
// does not answer itself when they come back on the stream, and the id of
// the last message handed to the agent is kept as a cursor, so a reconnect
// or a restart resumes with since=<id> and loses nothing the server still
// caches.
package ntfy

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// ReplyTag marks messages fangd published.
const ReplyTag = "fangd-reply"

// maxBytes is ntfy's default message size limit (message-size-limit);
// longer bodies would be turned into attachments.
const maxBytes = 4096

// idleTimeout: ntfy sends a keepalive event every 45 s by default; a stream
// silent for this long is dead.
const idleTimeout = 100 * time.Second

var topicPattern = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)

// Adapter is one ntfy topic.
type Adapter struct {
	server string
	topic  string
	auth   string // Authorization header value, "" for anonymous
	http   *http.Client
	stream *http.Client
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	server, err := cfg.BaseURL("server_url", "https://ntfy.sh")
	if err != nil {
		return nil, err
	}
	topic := cfg.Text("topic")
	if !topicPattern.MatchString(topic) {
		return nil, &channel.FieldError{Field: "topic", Msg: "must be 1-64 letters, digits, '-' or '_'"}
	}
	a := &Adapter{server: server, topic: topic, http: cfg.HTTPClient(30 * time.Second), stream: cfg.HTTPClient(0)}
	if tok := cfg.Secret("token"); tok != "" {
		// An access token (tk_...) is a bearer token; "user:password" is
		// basic auth, which ntfy also accepts.
		if user, pass, ok := strings.Cut(tok, ":"); ok && !strings.HasPrefix(tok, "tk_") {
			a.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		} else {
			a.auth = "Bearer " + tok
		}
	}
	return a, nil
}

// Capabilities are ntfy's.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{
		MaxMessageLength: maxBytes,
		Markdown:         "markdown",
		// ntfy.sh's visitor request limit: a burst of 60, then one request
		// every 5 s (self-hosted servers default to the same).
		Pace: channel.Pace{PerSecond: 0.2, Burst: 60},
	}
}

// Probe asks /v1/account who the token is (anonymous: /v1/health).
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	if a.auth == "" {
		var h struct {
			Healthy bool `json:"healthy"`
		}
		if err := a.call(ctx, http.MethodGet, "/v1/health", nil, nil, &h); err != nil {
			return channel.Identity{}, err
		}
		if !h.Healthy {
			return channel.Identity{}, errors.New("ntfy: server reports unhealthy")
		}
		return channel.Identity{ID: "*", Name: "anonymous", DisplayName: a.topic}, nil
	}
	var acct struct {
		Username string `json:"username"`
	}
	if err := a.call(ctx, http.MethodGet, "/v1/account", nil, nil, &acct); err != nil {
		return channel.Identity{}, err
	}
	return channel.Identity{ID: acct.Username, Name: acct.Username, DisplayName: a.topic}, nil
}

// message is an ntfy message or stream event.
type message struct {
	ID      string   `json:"id"`
	Time    int64    `json:"time"`
	Event   string   `json:"event"`
	Topic   string   `json:"topic"`
	Message string   `json:"message"`
	Title   string   `json:"title"`
	Tags    []string `json:"tags"`
}

// Send publishes to the chat's topic (the configured one when ChatID is
// empty). A text over ntfy's 4096-byte limit goes out as several messages.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	topic := msg.ChatID
	if topic == "" {
		topic = a.topic
	}
	if !topicPattern.MatchString(topic) {
		return "", channel.Rejected(fmt.Errorf("ntfy: invalid topic %q", topic))
	}
	var last string
	for _, part := range channel.SplitBytes(msg.Text, maxBytes, '\n') {
		var m message
		hdr := http.Header{"X-Tags": {ReplyTag}, "X-Title": {"fangd"}, "X-Markdown": {"yes"},
			"Content-Type": {"text/plain; charset=utf-8"}}
		if err := a.call(ctx, http.MethodPost, "/"+topic, hdr, strings.NewReader(part), &m); err != nil {
			return "", err
		}
		last = m.ID
	}
	return last, nil
}

// Run subscribes to the topic's JSON stream and delivers every message
// that is not one of fangd's own replies.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	me, err := a.Probe(ctx)
	if err != nil {
		return err
	}
	since, err := host.Cursor("since")
	if err != nil {
		return err
	}
	path := "/" + a.topic + "/json"
	if since != "" {
		path += "?since=" + url.QueryEscape(since)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, a.server+path, nil)
	if err != nil {
		return channel.Permanent(err)
	}
	a.authorize(req)
	resp, err := a.stream.Do(req)
	if err != nil {
		return fmt.Errorf("ntfy: subscribe: %w", channel.NetCause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return classify(resp, data)
	}
	host.Connected(me)

	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 16<<10)
	for {
		line, err := readLine(r, 256<<10)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if sctx.Err() != nil {
				return errors.New("ntfy: stream silent for too long (no keepalive)")
			}
			return fmt.Errorf("ntfy: stream: %w", err)
		}
		idle.Reset(idleTimeout)
		var m message
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if m.Event != "message" {
			host.Alive() // open, keepalive, poll_request
			continue
		}
		// A message and the cursor past it are stored in one write.
		cur := channel.Cursor{Key: "since", Value: m.ID}
		if slices.Contains(m.Tags, ReplyTag) || strings.TrimSpace(m.Message) == "" {
			host.Alive()
			if err := host.SaveCursor(cur.Key, cur.Value); err != nil {
				return err
			}
		} else {
			sender := m.Title
			if sender == "" {
				sender = "ntfy"
			}
			in := channel.Inbound{ChatID: m.Topic, UserID: sender, UserName: sender, Text: m.Message,
				MessageID: m.ID, At: time.Unix(m.Time, 0)}
			if in.ChatID == "" {
				in.ChatID = a.topic
			}
			if err := host.DeliverAndSave(ctx, cur, in); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("ntfy: deliver: %w", err)
			}
		}
	}
}

// readLine reads one newline-terminated line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		buf = append(buf, chunk...)
		if len(buf) > max {
			return nil, errors.New("line too long")
		}
		if !isPrefix {
			return buf, nil
		}
	}
}

func (a *Adapter) authorize(req *http.Request) {
	if a.auth != "" {
		req.Header.Set("Authorization", a.auth)
	}
}

// call does one request and classifies failures by ntfy's error codes.
func (a *Adapter) call(ctx context.Context, method, path string, hdr http.Header, body io.Reader, out any) error {
	if a.auth != "" {
		hdr = hdr.Clone()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("Authorization", a.auth)
	}
	return channel.CallJSON(ctx, a.http, channel.Call{Method: method, URL: a.server + path, Header: hdr, Body: body, Out: out,
		Limit: 1 << 20, What: "ntfy: " + method + " " + path, Refused: classify})
}

// classify maps ntfy's {"code","http","error"} answers: 401 (bad token) and
// 403 (no access to the topic) need a new configuration; 429 is its rate
// limiter; 413 and other 4xx refuse this message only.
func classify(resp *http.Response, data []byte) error {
	var e struct {
		Code  int    `json:"code"`
		Error string `json:"error"`
	}
	desc := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		desc = fmt.Sprintf("%s (code %d)", e.Error, e.Code)
	}
	return channel.HTTPStatusError(resp.StatusCode, fmt.Sprintf("ntfy: %s (HTTP %d)", channel.Clip(desc, 300), resp.StatusCode), retryAfter(resp.Header))
}

func retryAfter(h http.Header) time.Duration { return httpretry.After(h, time.Now()) }
