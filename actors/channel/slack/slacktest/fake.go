// Package slacktest is a local fake of Slack for tests: Web API methods
// under /api/ (auth.test, apps.connections.open, chat.postMessage; bearer
// tokens; {"ok": false, "error": "invalid_auth"} failures; 429 with
// Retry-After) and a Socket Mode websocket that sends hello, events_api
// envelopes (which the client must acknowledge) and WebSocket pings.
package slacktest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Sent is a chat.postMessage call.
type Sent struct{ Channel, Text, ThreadTS string }

// Server is the fake.
type Server struct {
	*httptest.Server
	BotToken, AppToken string
	BotUserID          string

	channeltest.Recorder[Sent]

	acks   map[string]bool
	nextID int
}

// New starts a fake workspace. In an outage the Web API answers 503 and
// Socket Mode refuses to connect; a rate-limited chat.postMessage answers
// 429 with Retry-After, as Slack's tier limits do.
func New(botToken, appToken string) *Server {
	s := &Server{BotToken: botToken, AppToken: appToken, BotUserID: "UBOT", acks: map[string]bool{}}
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Route:  func(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, "/api/") },
		Limits: func(r *http.Request) bool { return r.URL.Path == "/api/chat.postMessage" },
		Limited: func(w http.ResponseWriter, secs int) {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			channeltest.WriteJSON(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error": "ratelimited"})
		},
	}, http.HandlerFunc(s.serve)))
	return s
}

// APIURL is the api_url to configure.
func (s *Server) APIURL() string { return s.URL + "/api/" }

// Calls counts Web API calls by method name.
func (s *Server) Calls(method string) int { return s.Requests(method) }

// Acked reports whether an envelope was acknowledged.
func (s *Server) Acked(envelopeID string) bool {
	s.Lock()
	defer s.Unlock()
	return s.acks[envelopeID]
}

// Connected is the number of live Socket Mode connections.
func (s *Server) Connected() int {
	s.Lock()
	defer s.Unlock()
	return s.Sockets()
}

// WaitConnected waits until n Socket Mode connections are live.
func (s *Server) WaitConnected(ctx context.Context, n int) error { return s.WaitSockets(ctx, n) }

// Event builds an event_callback payload for an inner event.
func (s *Server) Event(inner map[string]any) map[string]any {
	s.Lock()
	s.nextID++
	id := s.nextID
	s.Unlock()
	return map[string]any{"token": "verif", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
		"event_id": fmt.Sprintf("Ev%d", id), "event_time": time.Now().Unix(), "event": inner}
}

// DM is a message.im event from user.
func (s *Server) DM(channel, user, text string) map[string]any {
	return s.Event(map[string]any{"type": "message", "channel": channel, "user": user, "text": text,
		"ts": fmt.Sprintf("%d.000100", time.Now().UnixNano()), "channel_type": "im"})
}

// Mention is an app_mention event in a channel.
func (s *Server) Mention(channel, user, text string) map[string]any {
	return s.Event(map[string]any{"type": "app_mention", "channel": channel, "user": user,
		"text": "<@" + s.BotUserID + "> " + text, "ts": fmt.Sprintf("%d.000200", time.Now().UnixNano())})
}

// Push sends payload over Socket Mode as an events_api envelope and
// returns the envelope id.
func (s *Server) Push(payload map[string]any) string {
	s.Lock()
	s.nextID++
	env := fmt.Sprintf("env-%d", s.nextID)
	s.Unlock()
	raw, _ := json.Marshal(map[string]any{"envelope_id": env, "type": "events_api", "accepts_response_payload": false,
		"retry_attempt": 0, "retry_reason": "", "payload": payload})
	s.Broadcast(raw)
	return env
}

func reply(w http.ResponseWriter, v map[string]any) { channeltest.WriteJSON(w, http.StatusOK, v) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/socket" {
		s.socket(w, r)
		return
	}
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	r.ParseForm()
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if auth == "" {
		auth = r.Form.Get("token")
	}
	switch method {
	case "apps.connections.open":
		if auth != s.AppToken {
			reply(w, map[string]any{"ok": false, "error": "invalid_auth"})
			return
		}
		reply(w, map[string]any{"ok": true, "url": "ws" + strings.TrimPrefix(s.URL, "http") + "/socket"})
		return
	}
	if auth != s.BotToken {
		reply(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	switch method {
	case "auth.test":
		reply(w, map[string]any{"ok": true, "url": "https://fake.slack.test/", "team": "Fake Team", "user": "fangdbot",
			"team_id": "T1", "user_id": s.BotUserID, "bot_id": "B1"})
	case "chat.postMessage":
		ch, text := r.Form.Get("channel"), r.Form.Get("text")
		if ch == "CGONE" {
			reply(w, map[string]any{"ok": false, "error": "channel_not_found"})
			return
		}
		s.Lock()
		s.Record(Sent{Channel: ch, Text: text, ThreadTS: r.Form.Get("thread_ts")})
		s.nextID++
		ts := fmt.Sprintf("%d.%06d", time.Now().Unix(), s.nextID)
		s.Unlock()
		reply(w, map[string]any{"ok": true, "channel": ch, "ts": ts, "message": map[string]any{"text": text, "ts": ts}})
	default:
		reply(w, map[string]any{"ok": false, "error": "unknown_method"})
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) socket(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c.WriteJSON(map[string]any{"type": "hello", "num_connections": 1, "connection_info": map[string]any{"app_id": "A1"},
		"debug_info": map[string]any{"host": "fake", "approximate_connection_time": 3600}})
	defer s.Attach(c)()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // Slack pings the client; socketmode treats silence as death
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.Write(c, func(c *websocket.Conn) error {
					return c.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second))
				})
			}
		}
	}()
	channeltest.ReadJSON(c, func(ack envelopeAck, err error) bool {
		if err == nil && ack.EnvelopeID != "" {
			s.Lock()
			s.acks[ack.EnvelopeID] = true
			s.Changed()
			s.Unlock()
		}
		return true
	})
}

// envelopeAck is the client's acknowledgement of an envelope.
type envelopeAck struct {
	EnvelopeID string `json:"envelope_id"`
}
