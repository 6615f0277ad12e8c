// Package matrixtest is a local fake of the Matrix client-server API (v3)
// for tests: whoami, /sync long polling with next_batch tokens, invites and
// joins, and idempotent PUT .../send/{type}/{txnId}; errors use the spec's
// {"errcode", "error"} bodies (M_UNKNOWN_TOKEN 401, M_LIMIT_EXCEEDED 429
// with retry_after_ms).
package matrixtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sent is a message the bot sent.
type Sent struct {
	RoomID, TxnID, Body, InReplyTo string
}

// Server is the fake homeserver.
type Server struct {
	*httptest.Server
	Token  string
	UserID string

	mu      sync.Mutex
	changed chan struct{}
	events  []roomEvent // the timeline, in order; batch token = index
	invites []string
	joined  map[string]bool
	sent    []Sent
	txns    map[string]string
	down    bool
	calls   map[string]int
	nextID  int
}

type roomEvent struct {
	room string
	raw  map[string]any
}

// New starts a homeserver where token logs in as @bot:fake.test.
func New(token string) *Server {
	s := &Server{Token: token, UserID: "@bot:fake.test", changed: make(chan struct{}), joined: map[string]bool{},
		txns: map[string]string{}, calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *Server) notify() { close(s.changed); s.changed = make(chan struct{}) }

// Invite invites the bot to room.
func (s *Server) Invite(room string) {
	s.mu.Lock()
	s.invites = append(s.invites, room)
	s.notify()
	s.mu.Unlock()
}

// Joined reports whether the bot joined room.
func (s *Server) Joined(room string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.joined[room]
}

// Say posts a text message from sender in room.
func (s *Server) Say(room, sender, body string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	evID := fmt.Sprintf("$ev%d", s.nextID)
	s.events = append(s.events, roomEvent{room: room, raw: map[string]any{"type": "m.room.message", "event_id": evID,
		"sender": sender, "origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": body}}})
	s.notify()
	return evID
}

// Sent returns what the bot sent.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Calls counts requests to an endpoint name ("whoami", "sync", "send").
func (s *Server) Calls(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[name]
}

// SetDown makes every request fail with 502.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.notify()
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3")
	name := "other"
	switch {
	case path == "/account/whoami":
		name = "whoami"
	case path == "/sync":
		name = "sync"
	case strings.HasPrefix(path, "/rooms/") && strings.Contains(path, "/send/"):
		name = "send"
	case strings.HasPrefix(path, "/join/"):
		name = "join"
	case strings.HasPrefix(path, "/rooms/") && strings.HasSuffix(path, "/join"):
		// POST /rooms/{roomId}/join is the same as /join/{roomIdOrAlias}.
		name, path = "join", "/join/"+strings.TrimSuffix(strings.TrimPrefix(path, "/rooms/"), "/join")
	}
	s.mu.Lock()
	s.calls[name]++
	down := s.down
	s.mu.Unlock()
	if down {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": false})
		return
	}
	switch name {
	case "whoami":
		writeJSON(w, 200, map[string]any{"user_id": s.UserID, "device_id": "FANGD"})
	case "sync":
		s.sync(w, r)
	case "join":
		room := strings.TrimPrefix(path, "/join/")
		s.mu.Lock()
		s.joined[room] = true
		var left []string
		for _, x := range s.invites {
			if x != room {
				left = append(left, x)
			}
		}
		s.invites = left
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"room_id": room})
	case "send":
		// /rooms/{roomId}/send/{eventType}/{txnId}
		parts := strings.Split(strings.TrimPrefix(path, "/rooms/"), "/")
		if r.Method != http.MethodPut || len(parts) != 4 {
			writeJSON(w, 400, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "bad send path"})
			return
		}
		room, txn := parts[0], parts[3]
		var content struct {
			Body      string `json:"body"`
			RelatesTo *struct {
				InReplyTo *struct {
					EventID string `json:"event_id"`
				} `json:"m.in_reply_to"`
			} `json:"m.relates_to"`
		}
		json.NewDecoder(r.Body).Decode(&content)
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.joined[room] {
			writeJSON(w, 403, map[string]any{"errcode": "M_FORBIDDEN", "error": "User not in room"})
			return
		}
		if ev, dup := s.txns[txn]; dup {
			writeJSON(w, 200, map[string]any{"event_id": ev})
			return
		}
		s.nextID++
		ev := fmt.Sprintf("$sent%d", s.nextID)
		s.txns[txn] = ev
		sent := Sent{RoomID: room, TxnID: txn, Body: content.Body}
		if content.RelatesTo != nil && content.RelatesTo.InReplyTo != nil {
			sent.InReplyTo = content.RelatesTo.InReplyTo.EventID
		}
		s.sent = append(s.sent, sent)
		s.events = append(s.events, roomEvent{room: room, raw: map[string]any{"type": "m.room.message", "event_id": ev,
			"sender": s.UserID, "origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": content.Body}}})
		writeJSON(w, 200, map[string]any{"event_id": ev})
	default:
		writeJSON(w, 404, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
	}
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Query().Get("since"), "b"))
	timeout, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	deadline := time.Now().Add(time.Duration(timeout) * time.Millisecond)
	for {
		s.mu.Lock()
		if s.down {
			s.mu.Unlock()
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		join := map[string]any{}
		for _, e := range s.events[min(since, len(s.events)):] {
			if !s.joined[e.room] {
				continue
			}
			room, _ := join[e.room].(map[string]any)
			if room == nil {
				room = map[string]any{"timeline": map[string]any{"events": []any{}}}
				join[e.room] = room
			}
			tl := room["timeline"].(map[string]any)
			tl["events"] = append(tl["events"].([]any), e.raw)
		}
		invite := map[string]any{}
		for _, room := range s.invites {
			invite[room] = map[string]any{"invite_state": map[string]any{"events": []any{}}}
		}
		next := "b" + strconv.Itoa(len(s.events))
		changed := s.changed
		s.mu.Unlock()
		if len(join) > 0 || len(invite) > 0 || time.Now().After(deadline) {
			writeJSON(w, 200, map[string]any{"next_batch": next, "rooms": map[string]any{"join": join, "invite": invite}})
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
		case <-r.Context().Done():
			return
		}
	}
}
