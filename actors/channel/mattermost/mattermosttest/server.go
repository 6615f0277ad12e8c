// Package mattermosttest is an in-process Mattermost server for tests: the
// parts of REST API v4 and the websocket event stream that fangd's adapter
// uses, with the same paths, auth headers, payload shapes and error bodies as
// a real server, plus switches for outages and rate limiting.
package mattermosttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// MaxPostRunes is the server's post length limit (model.PostMessageMaxRunesV2).
const MaxPostRunes = 16383

// User is a Mattermost user as GET /api/v4/users/{id} returns it (subset).
type User struct {
	ID        string `json:"id"`
	Username  string `json:"username"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	Nickname  string `json:"nickname"`
	Email     string `json:"email"`
	IsBot     bool   `json:"is_bot"`
	CreateAt  int64  `json:"create_at"`
	UpdateAt  int64  `json:"update_at"`
	DeleteAt  int64  `json:"delete_at"`
	Roles     string `json:"roles"`
	Locale    string `json:"locale"`
}

// Post is a Mattermost post (model.Post, subset).
type Post struct {
	ID            string         `json:"id"`
	CreateAt      int64          `json:"create_at"`
	UpdateAt      int64          `json:"update_at"`
	EditAt        int64          `json:"edit_at"`
	DeleteAt      int64          `json:"delete_at"`
	IsPinned      bool           `json:"is_pinned"`
	UserID        string         `json:"user_id"`
	ChannelID     string         `json:"channel_id"`
	RootID        string         `json:"root_id"`
	OriginalID    string         `json:"original_id"`
	Message       string         `json:"message"`
	Type          string         `json:"type"`
	Props         map[string]any `json:"props"`
	Hashtags      string         `json:"hashtags"`
	PendingPostID string         `json:"pending_post_id"`
}

// Channel is a channel the fake knows; Type is "O" (open), "P" (private),
// "D" (direct) or "G" (group).
type Channel struct {
	ID          string
	Name        string
	DisplayName string
	Type        string
	TeamID      string
}

// Server is the fake. Create it with New and Close it when done.
type Server struct {
	*httptest.Server

	channeltest.FakeState

	users    map[string]User   // by id
	tokens   map[string]string // token -> user id
	channels map[string]Channel
	posts    []Post
	conns    map[*wsConn]struct{}
	pending  map[string]pendingPost // pending_post_id -> post, for 30 s
}

type pendingPost struct {
	post Post
	at   time.Time
}

type wsConn struct {
	c      *websocket.Conn
	userID string
	wmu    sync.Mutex
	seq    int64
}

// Bot is the user the default bot token belongs to.
var Bot = User{ID: "bot0000000000000000000000a", Username: "fangbot", IsBot: true, Roles: "system_user"}

// Alice is an ordinary user the tests post as.
var Alice = User{ID: "alice00000000000000000000a", Username: "alice", FirstName: "Alice", Roles: "system_user"}

// BotToken is the personal access token of Bot.
const BotToken = "mm-bot-token-0123456789abcdef"

// TownSquare is a public channel both users are in.
var TownSquare = Channel{ID: "townsquare0000000000000000", Name: "town-square", DisplayName: "Town Square", Type: "O", TeamID: "team00000000000000000000000"}

// New starts a fake with Bot (token BotToken), Alice and TownSquare.
func New() *Server {
	s := &Server{
		users:    map[string]User{Bot.ID: Bot, Alice.ID: Alice},
		tokens:   map[string]string{BotToken: Bot.ID},
		channels: map[string]Channel{TownSquare.ID: TownSquare},
		conns:    map[*wsConn]struct{}{},
		pending:  map[string]pendingPost{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v4/system/ping", s.ping)
	mux.HandleFunc("GET /api/v4/users/me", s.authed(s.me))
	mux.HandleFunc("POST /api/v4/posts", s.authed(s.createPost))
	mux.HandleFunc("GET /api/v4/websocket", s.websocket)
	mux.HandleFunc("GET /api/v4/users/{user}/channels", s.authed(s.userChannels))
	mux.HandleFunc("POST /api/v4/users/ids", s.authed(s.usersByIDs))
	mux.HandleFunc("GET /api/v4/channels/{channel}/posts", s.authed(s.channelPosts))
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Limits: func(*http.Request) bool { return true },
		Limited: func(w http.ResponseWriter, wait int) {
			// Mattermost's rate limiter (throttled) answers in plain text
			// with these headers; Reset is seconds until the bucket refills.
			w.Header().Set("X-Ratelimit-Limit", "10")
			w.Header().Set("X-Ratelimit-Remaining", "0")
			w.Header().Set("X-Ratelimit-Reset", strconv.Itoa(wait))
			w.Header().Set("Retry-After", strconv.Itoa(wait))
			http.Error(w, "limit exceeded", http.StatusTooManyRequests)
		},
	}, mux))
	return s
}

// Close drops websocket connections and stops the server.
func (s *Server) Close() {
	s.dropConns()
	s.Server.Close()
}

// SetDown makes the server unreachable in effect: every request answers 503
// and open websockets are closed, until SetDown(false).
func (s *Server) SetDown(down bool) {
	s.FakeState.SetDown(down)
	if down {
		s.dropConns()
	}
}

// Connections is the number of authenticated websocket connections.
func (s *Server) Connections() int {
	s.Lock()
	defer s.Unlock()
	return s.connections()
}

func (s *Server) connections() int {
	n := 0
	for c := range s.conns {
		if c.userID != "" {
			n++
		}
	}
	return n
}

// AddChannel registers a channel.
func (s *Server) AddChannel(c Channel) {
	s.Lock()
	s.channels[c.ID] = c
	s.Unlock()
}

// AddToken registers a further personal access token for user.
func (s *Server) AddToken(token string, u User) {
	s.Lock()
	s.users[u.ID] = u
	s.tokens[token] = u.ID
	s.Unlock()
}

// Say creates a post by user in channel (as if typed in a client) and
// broadcasts the "posted" event to connected websockets. rootID makes it a
// thread reply.
func (s *Server) Say(u User, channelID, message, rootID string) Post {
	p := s.addPost(u.ID, channelID, message, rootID)
	return p
}

// Posts returns a copy of every post in channelID ("" = all channels).
func (s *Server) Posts(channelID string) []Post {
	return channeltest.Select(&s.FakeState, func() []Post { return s.posts }, func(p Post) bool { return channelID == "" || p.ChannelID == channelID })
}

// WaitPost waits until a post matching match exists and returns it.
func (s *Server) WaitPost(ctx context.Context, match func(Post) bool) (Post, error) {
	return channeltest.WaitMatch(ctx, &s.FakeState, "mattermosttest: no matching post", func() []Post { return s.posts }, match)
}

// WaitConnected waits until n websockets are authenticated.
func (s *Server) WaitConnected(ctx context.Context, n int) error {
	return s.Wait(ctx, fmt.Sprintf("mattermosttest: %d websockets not connected", n), func() bool { return s.connections() >= n })
}

// AppError is Mattermost's error body (model.AppError).
type AppError struct {
	ID            string `json:"id"`
	Message       string `json:"message"`
	DetailedError string `json:"detailed_error"`
	RequestID     string `json:"request_id"`
	StatusCode    int    `json:"status_code"`
}

func writeAppError(w http.ResponseWriter, status int, id, msg string) {
	channeltest.WriteJSON(w, status, AppError{ID: id, Message: msg, RequestID: newID(), StatusCode: status})
}

// userFor resolves the session token from "Authorization: Bearer <token>"
// (or the older "Token <token>"), or "" if absent/invalid.
func (s *Server) userFor(r *http.Request) string {
	h := r.Header.Get("Authorization")
	var tok string
	switch {
	case strings.HasPrefix(h, "Bearer "):
		tok = strings.TrimPrefix(h, "Bearer ")
	case strings.HasPrefix(strings.ToLower(h), "token "):
		tok = h[len("token "):]
	}
	s.Lock()
	defer s.Unlock()
	return s.tokens[tok]
}

// authed serves h to a request with a valid session, naming its user;
// any other request gets Mattermost's 401.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, uid string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		uid := s.userFor(r)
		if uid == "" {
			writeAppError(w, http.StatusUnauthorized, "api.context.session_expired.app_error",
				"Invalid or expired session, please login again.")
			return
		}
		h(w, r, uid)
	}
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	channeltest.WriteJSON(w, http.StatusOK, map[string]string{"status": "OK"})
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, uid string) {
	s.Lock()
	u := s.users[uid]
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, u)
}

func (s *Server) createPost(w http.ResponseWriter, r *http.Request, uid string) {
	var in struct {
		ChannelID string         `json:"channel_id"`
		Message   string         `json:"message"`
		RootID    string         `json:"root_id"`
		Props     map[string]any `json:"props"`
		Pending   string         `json:"pending_post_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeAppError(w, http.StatusBadRequest, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
		return
	}
	s.Lock()
	_, known := s.channels[in.ChannelID]
	s.Unlock()
	if !known {
		writeAppError(w, http.StatusForbidden, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
		return
	}
	if n := len([]rune(in.Message)); n > MaxPostRunes {
		writeAppError(w, http.StatusBadRequest, "model.post.is_valid.message_length.app_error",
			fmt.Sprintf("Message length is longer than the maximum allowed (%d).", MaxPostRunes))
		return
	}
	if strings.TrimSpace(in.Message) == "" {
		writeAppError(w, http.StatusBadRequest, "api.post.create_post.message_empty.app_error", "Post message must not be empty.")
		return
	}
	// Like the server's deduplicateCreatePost: a repeat of a pending post
	// id within 30 s gets the post created the first time.
	if in.Pending != "" {
		s.Lock()
		prev, seen := s.pending[in.Pending]
		s.Unlock()
		if seen && time.Since(prev.at) < 30*time.Second {
			channeltest.WriteJSON(w, http.StatusCreated, prev.post)
			return
		}
	}
	p := s.addPost(uid, in.ChannelID, in.Message, in.RootID)
	if in.Pending != "" {
		p.PendingPostID = in.Pending
		s.Lock()
		s.pending[in.Pending] = pendingPost{post: p, at: time.Now()}
		s.Unlock()
	}
	channeltest.WriteJSON(w, http.StatusCreated, p)
}

// userChannels is GET /api/v4/users/{user_id}/channels: every channel of
// every team the user is in (in the fake, everyone is in every channel).
func (s *Server) userChannels(w http.ResponseWriter, r *http.Request, uid string) {
	if u := r.PathValue("user"); u != "me" && u != uid {
		writeAppError(w, http.StatusForbidden, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
		return
	}
	s.Lock()
	out := []map[string]any{}
	for _, c := range s.channels {
		var last int64
		for _, p := range s.posts {
			if p.ChannelID == c.ID {
				last = max(last, p.CreateAt)
			}
		}
		out = append(out, map[string]any{"id": c.ID, "team_id": c.TeamID, "type": c.Type, "display_name": c.DisplayName,
			"name": c.Name, "last_post_at": last, "delete_at": 0})
	}
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, out)
}

// usersByIDs is POST /api/v4/users/ids with a JSON array of ids.
func (s *Server) usersByIDs(w http.ResponseWriter, r *http.Request, _ string) {
	var ids []string
	if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
		writeAppError(w, http.StatusBadRequest, "api.context.invalid_body_param.app_error", "Invalid or missing user_ids in request body.")
		return
	}
	s.Lock()
	out := []User{}
	for _, id := range ids {
		if u, ok := s.users[id]; ok {
			out = append(out, u)
		}
	}
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, out)
}

// channelPosts is GET /api/v4/channels/{id}/posts?since=<ms>: posts created
// or changed since the time, as a PostList ({order, posts}).
func (s *Server) channelPosts(w http.ResponseWriter, r *http.Request, _ string) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	ch := r.PathValue("channel")
	s.Lock()
	order := []string{}
	posts := map[string]Post{}
	for i := len(s.posts) - 1; i >= 0; i-- {
		p := s.posts[i]
		if p.ChannelID == ch && p.UpdateAt > since {
			order = append(order, p.ID)
			posts[p.ID] = p
		}
	}
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"order": order, "posts": posts, "next_post_id": "", "prev_post_id": ""})
}

func (s *Server) addPost(uid, channelID, message, rootID string) Post {
	now := time.Now().UnixMilli()
	p := Post{ID: newID(), CreateAt: now, UpdateAt: now, UserID: uid, ChannelID: channelID,
		RootID: rootID, Message: message, Props: map[string]any{}}
	s.Lock()
	s.posts = append(s.posts, p)
	ch := s.channels[channelID]
	sender := s.users[uid]
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		if c.userID != "" {
			conns = append(conns, c)
		}
	}
	s.Changed()
	s.Unlock()

	// The real server JSON-encodes the post a second time inside data.post.
	postJSON, _ := json.Marshal(p)
	for _, c := range conns {
		c.send(map[string]any{
			"event": "posted",
			"data": map[string]any{
				"channel_display_name": ch.DisplayName,
				"channel_name":         ch.Name,
				"channel_type":         ch.Type,
				"post":                 string(postJSON),
				"sender_name":          "@" + sender.Username,
				"set_online":           true,
				"team_id":              ch.TeamID,
			},
			"broadcast": map[string]any{"omit_users": nil, "user_id": "", "channel_id": channelID, "team_id": ""},
		})
	}
	return p
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	uid := s.userFor(r) // header auth at upgrade is optional
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	wc := &wsConn{c: c}
	s.Lock()
	s.conns[wc] = struct{}{}
	s.Unlock()
	defer func() {
		s.Lock()
		delete(s.conns, wc)
		s.Changed()
		s.Unlock()
		_ = c.Close()
	}()
	if uid != "" {
		s.authenticate(wc, uid)
	}
	channeltest.ReadJSON(c, func(req wsRequest, err error) bool {
		if err != nil {
			return true
		}
		switch req.Action {
		case "authentication_challenge":
			tok, _ := req.Data["token"].(string)
			s.Lock()
			id := s.tokens[tok]
			s.Unlock()
			if id == "" {
				wc.write(map[string]any{"status": "FAIL", "seq_reply": req.Seq, "error": AppError{
					ID: "api.web_socket_router.not_authenticated.app_error", Message: "Invalid or expired session, please login again.", StatusCode: 401}})
				return true
			}
			wc.write(map[string]any{"status": "OK", "seq_reply": req.Seq})
			if wc.userID == "" {
				s.authenticate(wc, id)
			}
		default:
			if wc.userID == "" {
				wc.write(map[string]any{"status": "FAIL", "seq_reply": req.Seq, "error": AppError{
					ID: "api.web_socket_router.not_authenticated.app_error", Message: "Invalid or expired session, please login again.", StatusCode: 401}})
				return true
			}
			wc.write(map[string]any{"status": "OK", "seq_reply": req.Seq})
		}
		return true
	})
}

// wsRequest is a request the client sends on the websocket.
type wsRequest struct {
	Seq    int64          `json:"seq"`
	Action string         `json:"action"`
	Data   map[string]any `json:"data"`
}

func (s *Server) authenticate(wc *wsConn, uid string) {
	s.Lock()
	wc.userID = uid
	s.Changed()
	s.Unlock()
	wc.send(map[string]any{"event": "hello", "data": map[string]any{"server_version": "9.11.0.fangd-fake", "connection_id": newID()},
		"broadcast": map[string]any{"user_id": uid}})
}

// send writes an event with the connection's next sequence number.
func (c *wsConn) send(ev map[string]any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ev["seq"] = c.seq
	c.seq++
	_ = c.c.WriteJSON(ev)
}

func (c *wsConn) write(v any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.c.WriteJSON(v)
}

func (s *Server) dropConns() {
	s.Lock()
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.Unlock()
	for _, c := range conns {
		_ = c.c.Close()
	}
}

// newID makes a 26-character Mattermost-style id.
func newID() string { return channeltest.RandomFrom("abcdefghijklmnopqrstuvwxyz0123456789", 26) }
