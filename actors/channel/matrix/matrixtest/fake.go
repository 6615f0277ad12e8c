// Package matrixtest is a local fake of the Matrix client-server API (v3)
// for tests: whoami, /sync long polling with next_batch tokens, invites and
// joins, and idempotent PUT .../send/{type}/{txnId}; errors use the spec's
// {"errcode", "error"} bodies (M_UNKNOWN_TOKEN 401, M_LIMIT_EXCEEDED 429
// with retry_after_ms).
package matrixtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel/channeltest"
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

	channeltest.Recorder[Sent]

	events  []roomEvent // the timeline, in order; batch token = index
	invites []string
	joined  map[string]bool
	txns    map[string]string
	nextID  int
}

type roomEvent struct {
	room string
	raw  map[string]any
}

// New starts a homeserver where token logs in as @bot:fake.test. In an
// outage every request answers 502; a rate-limited send answers
// M_LIMIT_EXCEEDED with retry_after_ms.
func New(token string) *Server {
	s := &Server{Token: token, UserID: "@bot:fake.test", joined: map[string]bool{}, txns: map[string]string{}}
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Route:  func(r *http.Request) string { name, _ := endpoint(r); return name },
		Limits: func(r *http.Request) bool { name, _ := endpoint(r); return name == "send" },
		Down:   func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) },
		Limited: func(w http.ResponseWriter, secs int) {
			channeltest.WriteJSON(w, http.StatusTooManyRequests, map[string]any{"errcode": "M_LIMIT_EXCEEDED",
				"error": "Too Many Requests", "retry_after_ms": secs * 1000})
		},
	}, http.HandlerFunc(s.serve)))
	return s
}

// endpoint names a request ("whoami", "sync", "send", "join", "other")
// and gives its path below /_matrix/client/v3.
func endpoint(r *http.Request) (name, path string) {
	path = strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3")
	switch {
	case path == "/account/whoami":
		return "whoami", path
	case path == "/sync":
		return "sync", path
	case strings.HasPrefix(path, "/rooms/") && strings.Contains(path, "/send/"):
		return "send", path
	case strings.HasPrefix(path, "/join/"):
		return "join", path
	case strings.HasPrefix(path, "/rooms/") && strings.HasSuffix(path, "/join"):
		// POST /rooms/{roomId}/join is the same as /join/{roomIdOrAlias}.
		return "join", "/join/" + strings.TrimSuffix(strings.TrimPrefix(path, "/rooms/"), "/join")
	}
	return "other", path
}

// Invite invites the bot to room.
func (s *Server) Invite(room string) {
	s.Lock()
	s.invites = append(s.invites, room)
	s.Changed()
	s.Unlock()
}

// Joined reports whether the bot joined room.
func (s *Server) Joined(room string) bool {
	s.Lock()
	defer s.Unlock()
	return s.joined[room]
}

// WaitJoined waits until the bot has joined room.
func (s *Server) WaitJoined(ctx context.Context, room string) error {
	return s.Wait(ctx, "matrixtest: not joined to "+room, func() bool { return s.joined[room] })
}

// Say posts a text message from sender in room.
func (s *Server) Say(room, sender, body string) string {
	s.Lock()
	defer s.Unlock()
	s.nextID++
	evID := fmt.Sprintf("$ev%d", s.nextID)
	s.events = append(s.events, roomEvent{room: room, raw: map[string]any{"type": "m.room.message", "event_id": evID,
		"sender": sender, "origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": body}}})
	s.Changed()
	return evID
}

// Calls counts requests to an endpoint name ("whoami", "sync", "send").
func (s *Server) Calls(name string) int { return s.Requests(name) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	name, path := endpoint(r)
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		channeltest.WriteJSON(w, http.StatusUnauthorized, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": false})
		return
	}
	switch name {
	case "whoami":
		channeltest.WriteJSON(w, 200, map[string]any{"user_id": s.UserID, "device_id": "FANGD"})
	case "sync":
		s.sync(w, r)
	case "join":
		room := strings.TrimPrefix(path, "/join/")
		s.Lock()
		s.joined[room] = true
		var left []string
		for _, x := range s.invites {
			if x != room {
				left = append(left, x)
			}
		}
		s.invites = left
		s.Changed()
		s.Unlock()
		channeltest.WriteJSON(w, 200, map[string]any{"room_id": room})
	case "send":
		// /rooms/{roomId}/send/{eventType}/{txnId}
		parts := strings.Split(strings.TrimPrefix(path, "/rooms/"), "/")
		if r.Method != http.MethodPut || len(parts) != 4 {
			channeltest.WriteJSON(w, 400, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "bad send path"})
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
		s.Lock()
		defer s.Unlock()
		if !s.joined[room] {
			channeltest.WriteJSON(w, 403, map[string]any{"errcode": "M_FORBIDDEN", "error": "User not in room"})
			return
		}
		if ev, dup := s.txns[txn]; dup {
			channeltest.WriteJSON(w, 200, map[string]any{"event_id": ev})
			return
		}
		s.nextID++
		ev := fmt.Sprintf("$sent%d", s.nextID)
		s.txns[txn] = ev
		sent := Sent{RoomID: room, TxnID: txn, Body: content.Body}
		if content.RelatesTo != nil && content.RelatesTo.InReplyTo != nil {
			sent.InReplyTo = content.RelatesTo.InReplyTo.EventID
		}
		s.Record(sent)
		s.events = append(s.events, roomEvent{room: room, raw: map[string]any{"type": "m.room.message", "event_id": ev,
			"sender": s.UserID, "origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": content.Body}}})
		channeltest.WriteJSON(w, 200, map[string]any{"event_id": ev})
	default:
		channeltest.WriteJSON(w, 404, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
	}
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Query().Get("since"), "b"))
	timeout, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(timeout)*time.Millisecond)
	defer cancel()
	var down bool
	var join, invite map[string]any
	var next string
	// Long poll: answer as soon as there is something for the bot (or
	// an outage begins), or empty at the timeout.
	_ = s.Wait(ctx, "sync", func() bool {
		if down = s.Down(); down {
			return true
		}
		join, invite = map[string]any{}, map[string]any{}
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
		for _, room := range s.invites {
			invite[room] = map[string]any{"invite_state": map[string]any{"events": []any{}}}
		}
		next = "b" + strconv.Itoa(len(s.events))
		return len(join) > 0 || len(invite) > 0
	})
	switch {
	case r.Context().Err() != nil:
	case down:
		w.WriteHeader(http.StatusBadGateway)
	default:
		channeltest.WriteJSON(w, 200, map[string]any{"next_batch": next, "rooms": map[string]any{"join": join, "invite": invite}})
	}
}
