// Package ntfytest is an in-process ntfy server for tests: publishing
// (POST/PUT /<topic>, JSON publish to /), the JSON message stream
// (GET /<topic>/json with since= and keepalive events), /v1/account and
// /v1/health, ntfy's access tokens and its JSON error bodies (40101, 40301,
// 42901...), plus switches for outages and rate limiting.
package ntfytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// MaxMessageBytes is ntfy's default message size limit; longer bodies
// would become attachments, which the fake (like a server without an
// attachment cache) rejects.
const MaxMessageBytes = 4096

// Message is an ntfy message/event as the JSON stream carries it.
type Message struct {
	ID       string   `json:"id"`
	Time     int64    `json:"time"`
	Expires  int64    `json:"expires,omitempty"`
	Event    string   `json:"event"`
	Topic    string   `json:"topic"`
	Message  string   `json:"message,omitempty"`
	Title    string   `json:"title,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	Priority int      `json:"priority,omitempty"`
	// Actions are the message's action buttons, as published.
	Actions []Action `json:"actions,omitempty"`
}

// Action is an ntfy action button (docs.ntfy.sh/publish/#action-buttons).
type Action struct {
	Action  string            `json:"action"`
	Label   string            `json:"label"`
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	Clear   bool              `json:"clear,omitempty"`
}

// Server is the fake.
type Server struct {
	*httptest.Server

	// Keepalive is the interval of keepalive events on open streams.
	Keepalive time.Duration

	channeltest.FakeState

	tokens    map[string]string // token -> username
	protected bool              // anonymous access denied
	messages  []Message
	subs      map[chan Message]string // chan -> topic
	streams   map[*http.Request]context.CancelFunc
}

// BotToken is an access token of user "fangbot".
const BotToken = "tk_fangbot0000000000000000000000"

var topicRE = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)

// New starts a server where BotToken is valid and anonymous access is
// denied (as on a server with auth-default-access: deny-all).
func New() *Server {
	s := &Server{Keepalive: 45 * time.Second, tokens: map[string]string{BotToken: "fangbot"}, protected: true,
		subs: map[chan Message]string{}, streams: map[*http.Request]context.CancelFunc{},
	}
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{}, http.HandlerFunc(s.route)))
	return s
}

// Close ends open streams and stops the server.
func (s *Server) Close() {
	s.Lock()
	for _, c := range s.streams {
		c()
	}
	s.Unlock()
	s.Server.Close()
}

// AllowAnonymous lets requests without a token read and write.
func (s *Server) AllowAnonymous() {
	s.Lock()
	s.protected = false
	s.Unlock()
}

// SetDown makes every request answer 503 and ends open streams, until
// SetDown(false).
func (s *Server) SetDown(down bool) {
	s.FakeState.SetDown(down)
	s.Lock()
	var cancels []context.CancelFunc
	if down {
		for _, c := range s.streams {
			cancels = append(cancels, c)
		}
	}
	s.Unlock()
	for _, c := range cancels {
		c()
	}
}

// Subscribers is the number of open streams on topic.
func (s *Server) Subscribers(topic string) int {
	s.Lock()
	defer s.Unlock()
	return s.subscribers(topic)
}

func (s *Server) subscribers(topic string) int {
	n := 0
	for _, t := range s.subs {
		if t == topic {
			n++
		}
	}
	return n
}

// Publish publishes as another client (a phone) would.
func (s *Server) Publish(topic, title, message string) Message {
	return s.publish(Message{Topic: topic, Title: title, Message: message})
}

// Messages lists messages on topic.
func (s *Server) Messages(topic string) []Message {
	return channeltest.Select(&s.FakeState, func() []Message { return s.messages }, func(m Message) bool { return m.Topic == topic })
}

// WaitMessage waits for a message matching match.
func (s *Server) WaitMessage(ctx context.Context, match func(Message) bool) (Message, error) {
	return channeltest.WaitMatch(ctx, &s.FakeState, "ntfytest: no matching message", func() []Message { return s.messages }, match)
}

// WaitSubscribers waits until topic has n open streams.
func (s *Server) WaitSubscribers(ctx context.Context, topic string, n int) error {
	return s.Wait(ctx, fmt.Sprintf("ntfytest: %d subscribers on %s not reached", n, topic), func() bool { return s.subscribers(topic) >= n })
}

// ntfyError writes ntfy's error body: {"code","http","error","link"}.
func ntfyError(w http.ResponseWriter, status, code int, msg, link string) {
	body := map[string]any{"code": code, "http": status, "error": msg}
	if link != "" {
		body["link"] = link
	}
	channeltest.WriteJSON(w, status, body)
}

// user authenticates the request: ok=false means a token was presented but
// is invalid (401); user "" means anonymous.
func (s *Server) user(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok := ""
	switch {
	case strings.HasPrefix(h, "Bearer "):
		tok = strings.TrimPrefix(h, "Bearer ")
	case h == "":
		tok = r.URL.Query().Get("auth") // ntfy also takes ?auth=
		if tok == "" {
			return "", true
		}
	default:
		return "", false
	}
	s.Lock()
	defer s.Unlock()
	u, ok := s.tokens[tok]
	return u, ok
}

func (s *Server) allow(w http.ResponseWriter, r *http.Request) bool {
	u, ok := s.user(r)
	if !ok {
		ntfyError(w, http.StatusUnauthorized, 40101, "unauthorized", "https://ntfy.sh/docs/publish/#authentication")
		return false
	}
	s.Lock()
	protected := s.protected
	s.Unlock()
	if u == "" && protected {
		ntfyError(w, http.StatusForbidden, 40301, "forbidden", "https://ntfy.sh/docs/publish/#authentication")
		return false
	}
	return true
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	path := strings.Trim(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodGet && path == "v1/health":
		channeltest.WriteJSON(w, http.StatusOK, map[string]bool{"healthy": true})
	case r.Method == http.MethodGet && path == "v1/account":
		u, ok := s.user(r)
		if !ok {
			ntfyError(w, http.StatusUnauthorized, 40101, "unauthorized", "https://ntfy.sh/docs/publish/#authentication")
			return
		}
		if u == "" {
			u = "*"
		}
		channeltest.WriteJSON(w, http.StatusOK, map[string]any{"username": u, "role": "user", "sync_topic": "st_" + randomID()})
	case r.Method == http.MethodPost && path == "":
		s.publishJSON(w, r)
	case (r.Method == http.MethodPost || r.Method == http.MethodPut) && topicRE.MatchString(path):
		s.publishBody(w, r, path)
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/json") && topicRE.MatchString(strings.TrimSuffix(path, "/json")):
		s.subscribe(w, r, strings.TrimSuffix(path, "/json"))
	default:
		ntfyError(w, http.StatusNotFound, 40401, "page not found", "")
	}
}

func (s *Server) limited(w http.ResponseWriter) bool {
	l, _ := s.TakeLimit()
	if l {
		ntfyError(w, http.StatusTooManyRequests, 42901, "limit reached: too many requests", "https://ntfy.sh/docs/publish/#limitations")
	}
	return l
}

func (s *Server) publishBody(w http.ResponseWriter, r *http.Request, topic string) {
	if !s.allow(w, r) || s.limited(w) {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxMessageBytes+1))
	if len(body) > MaxMessageBytes {
		ntfyError(w, http.StatusRequestEntityTooLarge, 41301, "too large for attachment", "")
		return
	}
	m := Message{Topic: topic, Message: string(body), Title: header(r, "X-Title", "Title", "t"),
		Tags: splitTags(header(r, "X-Tags", "Tags", "ta"))}
	if p, err := strconv.Atoi(header(r, "X-Priority", "Priority", "p")); err == nil {
		m.Priority = p
	}
	channeltest.WriteJSON(w, http.StatusOK, s.publish(m))
}

func (s *Server) publishJSON(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, r) || s.limited(w) {
		return
	}
	var in Message // publish sets what is the server's: id, time, expiry, event
	if json.NewDecoder(r.Body).Decode(&in) != nil || !topicRE.MatchString(in.Topic) {
		ntfyError(w, http.StatusBadRequest, 40017, "invalid request: request body must be message JSON", "")
		return
	}
	if len(in.Message) > MaxMessageBytes {
		ntfyError(w, http.StatusRequestEntityTooLarge, 41301, "too large for attachment", "")
		return
	}
	channeltest.WriteJSON(w, http.StatusOK, s.publish(in))
}

func header(r *http.Request, names ...string) string {
	for _, n := range names {
		if v := r.Header.Get(n); v != "" {
			return v
		}
	}
	return ""
}

func splitTags(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func (s *Server) publish(m Message) Message {
	m.ID = randomID()
	m.Time = time.Now().Unix()
	m.Expires = m.Time + 12*3600
	m.Event = "message"
	s.Lock()
	s.messages = append(s.messages, m)
	var subs []chan Message
	for ch, t := range s.subs {
		if t == m.Topic {
			subs = append(subs, ch)
		}
	}
	s.Changed()
	s.Unlock()
	for _, ch := range subs {
		select {
		case ch <- m:
		default: // slow subscriber: ntfy drops too
		}
	}
	return m
}

func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, topic string) {
	if !s.allow(w, r) {
		return
	}
	flusher, _ := w.(http.Flusher)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ch := make(chan Message, 64)

	// Collect the backlog asked for with since= and register in one step so
	// no message falls between them.
	since := r.URL.Query().Get("since")
	s.Lock()
	var backlog []Message
	if since != "" {
		backlog = s.backlog(topic, since)
	}
	s.subs[ch] = topic
	s.streams[r] = cancel
	s.Changed()
	s.Unlock()
	defer func() {
		s.Lock()
		delete(s.subs, ch)
		delete(s.streams, r)
		s.Changed()
		s.Unlock()
	}()

	w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	_ = enc.Encode(Message{ID: randomID(), Time: time.Now().Unix(), Event: "open", Topic: topic})
	for _, m := range backlog {
		_ = enc.Encode(m)
	}
	if r.URL.Query().Get("poll") == "1" {
		return
	}
	if flusher != nil {
		flusher.Flush()
	}
	s.Lock()
	ka := s.Keepalive
	s.Unlock()
	tick := time.NewTicker(ka)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-ch:
			if enc.Encode(m) != nil {
				return
			}
		case <-tick.C:
			if enc.Encode(Message{ID: randomID(), Time: time.Now().Unix(), Event: "keepalive", Topic: topic}) != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// backlog returns cached messages after since ("all", a unix time or a
// message id); call with s.mu held.
func (s *Server) backlog(topic, since string) []Message {
	var out []Message
	after := since == "all"
	ts, isTime := int64(0), false
	if n, err := strconv.ParseInt(since, 10, 64); err == nil {
		ts, isTime = n, true
	}
	for _, m := range s.messages {
		if m.Topic != topic {
			continue
		}
		switch {
		case isTime:
			if m.Time >= ts {
				out = append(out, m)
			}
		case after:
			out = append(out, m)
		case m.ID == since:
			after = true
		}
	}
	return out
}

// randomID makes a 12-character ntfy message id.
func randomID() string {
	return channeltest.RandomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 12)
}
