// Package discordtest is a local fake of Discord for tests: the REST API
// under /api/v9 (and /api/v10) (GET /gateway, GET /users/@me, POST
// /channels/{id}/messages; "Bot <token>" auth, 401 and 429 bodies as
// Discord sends them) and a gateway websocket speaking the v10 JSON
// protocol (HELLO, IDENTIFY, READY, heartbeats, MESSAGE_CREATE dispatches,
// close code 4004 for a bad token).
package discordtest

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

// Sent is a message the bot posted.
type Sent struct {
	ChannelID, Content, ReplyTo string
}

// Server is the fake.
type Server struct {
	*httptest.Server
	Token string
	BotID string

	channeltest.Recorder[Sent]

	seq    int
	nextID int
}

// New starts a fake Discord where token is the bot's token. In an outage
// REST and the gateway answer 502; a rate-limited message post answers
// Discord's 429 body with retry_after.
func New(token string) *Server {
	s := &Server{Token: token, BotID: "900"}
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Route: func(r *http.Request) string { return r.Method + " " + apiPath(r) },
		Limits: func(r *http.Request) bool {
			return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages")
		},
		Down: func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) },
		Limited: func(w http.ResponseWriter, secs int) {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			channeltest.WriteJSON(w, http.StatusTooManyRequests, map[string]any{"message": "You are being rate limited.", "retry_after": float64(secs), "global": false})
		},
	}, http.HandlerFunc(s.serve)))
	return s
}

// apiPath is the REST path without its API version: discordgo speaks v9;
// v10 has the same shapes for what is faked.
func apiPath(r *http.Request) string {
	return strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api/v10"), "/api/v9")
}

// APIURL is the api_url to configure.
func (s *Server) APIURL() string { return s.URL + "/api/v9" }

// Calls counts REST calls by "METHOD path" and gateway identifies as
// "IDENTIFY".
func (s *Server) Calls(key string) int { return s.Requests(key) }

// Connected is how many gateway sessions are identified now (an outage,
// SetDown, drops them).
func (s *Server) Connected() int {
	s.Lock()
	defer s.Unlock()
	return s.Sockets()
}

// WaitConnected waits until n gateway sessions are identified.
func (s *Server) WaitConnected(ctx context.Context, n int) error { return s.WaitSockets(ctx, n) }

// UserMessage dispatches MESSAGE_CREATE from a user. guildID "" is a DM;
// mention adds the bot to the mentions.
func (s *Server) UserMessage(channelID, guildID, userID, content string, mention bool) string {
	s.Lock()
	s.nextID++
	id := fmt.Sprintf("%d", 5000+s.nextID)
	mentions := []any{}
	if mention {
		mentions = append(mentions, map[string]any{"id": s.BotID, "username": "fangdbot", "bot": true})
		content = "<@" + s.BotID + "> " + content
	}
	d := map[string]any{"id": id, "channel_id": channelID, "content": content, "timestamp": time.Now().Format(time.RFC3339),
		"author": map[string]any{"id": userID, "username": "user" + userID}, "mentions": mentions, "type": 0}
	if guildID != "" {
		d["guild_id"] = guildID
	}
	s.Unlock()
	s.dispatch("MESSAGE_CREATE", d)
	return id
}

func (s *Server) dispatch(t string, d any) {
	s.Lock()
	s.seq++
	payload, _ := json.Marshal(map[string]any{"op": 0, "t": t, "s": s.seq, "d": d})
	s.Unlock()
	s.Broadcast(payload)
}

func apiError(w http.ResponseWriter, status, code int, msg string) {
	channeltest.WriteJSON(w, status, map[string]any{"message": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, v any) { channeltest.WriteJSON(w, http.StatusOK, v) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if strings.TrimSuffix(r.URL.Path, "/") == "/gateway-ws" {
		s.gateway(w, r)
		return
	}
	path := apiPath(r)
	if path == "/gateway" || path == "/gateway/bot" {
		writeJSON(w, map[string]any{"url": "ws" + strings.TrimPrefix(s.URL, "http") + "/gateway-ws", "shards": 1})
		return
	}
	if r.Header.Get("Authorization") != "Bot "+s.Token {
		apiError(w, http.StatusUnauthorized, 0, "401: Unauthorized")
		return
	}
	switch {
	case r.Method == "GET" && path == "/users/@me":
		writeJSON(w, map[string]any{"id": s.BotID, "username": "fangdbot", "bot": true, "discriminator": "0"})
	case r.Method == "POST" && strings.HasPrefix(path, "/channels/") && strings.HasSuffix(path, "/messages"):
		ch := strings.TrimSuffix(strings.TrimPrefix(path, "/channels/"), "/messages")
		var body struct {
			Content          string `json:"content"`
			MessageReference *struct {
				MessageID string `json:"message_id"`
			} `json:"message_reference"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		if ch == "404" {
			apiError(w, http.StatusNotFound, 10003, "Unknown Channel")
			return
		}
		if len([]rune(body.Content)) > 2000 {
			apiError(w, http.StatusBadRequest, 50035, "Invalid Form Body")
			return
		}
		s.Lock()
		s.nextID++
		id := fmt.Sprintf("%d", 9000+s.nextID)
		m := Sent{ChannelID: ch, Content: body.Content}
		if body.MessageReference != nil {
			m.ReplyTo = body.MessageReference.MessageID
		}
		s.Record(m)
		s.Unlock()
		writeJSON(w, map[string]any{"id": id, "channel_id": ch, "content": body.Content, "timestamp": time.Now().Format(time.RFC3339),
			"author": map[string]any{"id": s.BotID, "username": "fangdbot", "bot": true}})
	default:
		apiError(w, http.StatusNotFound, 0, "404: Not Found")
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) gateway(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	// Writes share the session's lock with dispatches once it is attached.
	write := func(v any) { s.Write(c, func(c *websocket.Conn) error { return c.WriteJSON(v) }) }
	write(map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": 41250}})
	identified := false
	detach := func() {}
	defer func() { detach() }()
	channeltest.ReadJSON(c, func(p gatewayFrame, err error) bool {
		if err != nil {
			return false
		}
		switch p.Op {
		case 1: // heartbeat
			write(map[string]any{"op": 11})
		case 2: // identify
			var id struct {
				Token string `json:"token"`
			}
			json.Unmarshal(p.D, &id)
			s.Count("IDENTIFY")
			if id.Token != "Bot "+s.Token || identified {
				s.Write(c, func(c *websocket.Conn) error {
					return c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4004, "Authentication failed."))
				})
				return false
			}
			identified = true
			s.Lock()
			s.seq++
			seq := s.seq
			s.Unlock()
			write(map[string]any{"op": 0, "t": "READY", "s": seq, "d": map[string]any{"v": 10, "session_id": "sess",
				"resume_gateway_url": "ws" + strings.TrimPrefix(s.URL, "http") + "/gateway-ws",
				"user":               map[string]any{"id": s.BotID, "username": "fangdbot", "bot": true}, "guilds": []any{},
				"private_channels": []any{}}})
			detach = s.Attach(c)
		}
		return true
	})
}

// gatewayFrame is a gateway payload the client sends.
type gatewayFrame struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
}
