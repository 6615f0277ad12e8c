// Package gotifytest is an in-process Gotify server for tests: POST /message
// with an application token, GET /current/user and GET /application with a
// client token, the /stream websocket, /health, Gotify's token transports
// (X-Gotify-Key header, ?token=, Authorization: Bearer) and its error body
// {"error","errorCode","errorDescription"}, plus outage and rate-limit
// switches (the latter stands for a reverse proxy in front of Gotify).
package gotifytest

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

// Message is a Gotify message.
type Message struct {
	ID       int64          `json:"id"`
	AppID    int64          `json:"appid"`
	Message  string         `json:"message"`
	Title    string         `json:"title"`
	Priority int            `json:"priority"`
	Extras   map[string]any `json:"extras,omitempty"`
	Date     string         `json:"date"`
}

// Application is a Gotify application (a sender).
type Application struct {
	ID              int64  `json:"id"`
	Token           string `json:"token"`
	Name            string `json:"name"`
	Description     string `json:"description"`
	Internal        bool   `json:"internal"`
	Image           string `json:"image"`
	DefaultPriority int    `json:"defaultPriority"`
}

// Tokens the fake knows.
const (
	BotAppToken    = "AbotAppToken00" // fangd's application (replies)
	PhoneAppToken  = "AphoneToken000" // another sender (the user)
	BotClientToken = "CbotClient0000" // fangd's client (stream)
)

// Server is the fake.
type Server struct {
	*httptest.Server

	channeltest.FakeState

	apps     []Application
	clients  map[string]string // client token -> user name
	messages []Message
	nextID   int64
}

// New starts a server with two applications ("fangd" = BotAppToken,
// "phone" = PhoneAppToken) and one client (BotClientToken of user "admin").
func New() *Server {
	s := &Server{
		apps: []Application{
			{ID: 1, Token: BotAppToken, Name: "fangd", Image: "static/defaultapp.png"},
			{ID: 2, Token: PhoneAppToken, Name: "phone", Image: "static/defaultapp.png"},
		},
		clients: map[string]string{BotClientToken: "admin"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		channeltest.WriteJSON(w, http.StatusOK, map[string]string{"health": "green", "database": "green"})
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		channeltest.WriteJSON(w, http.StatusOK, map[string]string{"version": "2.6.1", "commit": "fake", "buildDate": "2024-01-01"})
	})
	mux.HandleFunc("GET /current/user", s.currentUser)
	mux.HandleFunc("GET /application", s.applications)
	mux.HandleFunc("POST /message", s.createMessage)
	mux.HandleFunc("GET /message", s.listMessages)
	mux.HandleFunc("GET /stream", s.stream)
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Limits: func(r *http.Request) bool { return r.Method == http.MethodPost },
		Limited: func(w http.ResponseWriter, secs int) {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			gotifyError(w, http.StatusTooManyRequests, "too many requests")
		},
	}, mux))
	return s
}

// Close drops websockets and stops the server.
func (s *Server) Close() {
	s.DropSockets()
	s.Server.Close()
}

// Streams is the number of open /stream websockets.
func (s *Server) Streams() int {
	s.Lock()
	defer s.Unlock()
	return s.Sockets()
}

// Push sends a message from the application with appToken, as `curl
// -F message=...` from a phone script would.
func (s *Server) Push(appToken, title, message string) (Message, error) {
	app, ok := s.app(appToken)
	if !ok {
		return Message{}, fmt.Errorf("gotifytest: unknown app token")
	}
	return s.add(app.ID, title, message, 0), nil
}

// Messages lists messages from appID (0 = all).
func (s *Server) Messages(appID int64) []Message {
	return channeltest.Select(&s.FakeState, func() []Message { return s.messages }, func(m Message) bool { return appID == 0 || m.AppID == appID })
}

// WaitMessage waits for a message matching match.
func (s *Server) WaitMessage(ctx context.Context, match func(Message) bool) (Message, error) {
	return channeltest.WaitMatch(ctx, &s.FakeState, "gotifytest: no matching message", func() []Message { return s.messages }, match)
}

// WaitStreams waits until n websockets are open.
func (s *Server) WaitStreams(ctx context.Context, n int) error { return s.WaitSockets(ctx, n) }

func gotifyError(w http.ResponseWriter, status int, desc string) {
	channeltest.WriteJSON(w, status, map[string]any{"error": http.StatusText(status), "errorCode": status, "errorDescription": desc})
}

// token extracts a token the ways Gotify accepts one.
func token(r *http.Request) string {
	if t := r.Header.Get("X-Gotify-Key"); t != "" {
		return t
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimPrefix(h, "Bearer ")
	}
	return ""
}

const unauthorized = "you need to provide a valid access token or user credentials to access this api"

func (s *Server) app(tok string) (Application, bool) {
	s.Lock()
	defer s.Unlock()
	for _, a := range s.apps {
		if a.Token == tok {
			return a, true
		}
	}
	return Application{}, false
}

func (s *Server) client(w http.ResponseWriter, r *http.Request) bool {
	s.Lock()
	_, ok := s.clients[token(r)]
	s.Unlock()
	if !ok {
		gotifyError(w, http.StatusUnauthorized, unauthorized)
	}
	return ok
}

func (s *Server) currentUser(w http.ResponseWriter, r *http.Request) {
	if !s.client(w, r) {
		return
	}
	s.Lock()
	name := s.clients[token(r)]
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"id": 1, "name": name, "admin": true})
}

func (s *Server) applications(w http.ResponseWriter, r *http.Request) {
	if !s.client(w, r) {
		return
	}
	s.Lock()
	apps := append([]Application(nil), s.apps...)
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, apps)
}

func (s *Server) createMessage(w http.ResponseWriter, r *http.Request) {
	app, ok := s.app(token(r))
	if !ok {
		gotifyError(w, http.StatusUnauthorized, unauthorized)
		return
	}
	var in struct {
		Title    string         `json:"title"`
		Message  string         `json:"message"`
		Priority *int           `json:"priority"`
		Extras   map[string]any `json:"extras"`
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in) != nil {
			gotifyError(w, http.StatusBadRequest, "invalid JSON")
			return
		}
	} else {
		_ = r.ParseForm()
		in.Title, in.Message = r.PostForm.Get("title"), r.PostForm.Get("message")
		if p, err := strconv.Atoi(r.PostForm.Get("priority")); err == nil {
			in.Priority = &p
		}
	}
	if in.Message == "" {
		gotifyError(w, http.StatusBadRequest, "Field 'message' is required")
		return
	}
	prio := app.DefaultPriority
	if in.Priority != nil {
		prio = *in.Priority
	}
	title := in.Title
	if title == "" {
		title = app.Name
	}
	m := s.add(app.ID, title, in.Message, prio)
	channeltest.WriteJSON(w, http.StatusOK, m)
}

func (s *Server) add(appID int64, title, message string, prio int) Message {
	s.Lock()
	s.nextID++
	m := Message{ID: s.nextID, AppID: appID, Title: title, Message: message, Priority: prio,
		Date: time.Now().UTC().Format(time.RFC3339Nano)}
	s.messages = append(s.messages, m)
	s.Changed()
	s.Unlock()
	raw, _ := json.Marshal(m)
	s.Broadcast(raw)
	return m
}

// listMessages is GET /message: newest first, limit (default 100, max
// 200), since = only messages with a smaller id (paging backwards).
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) {
	if !s.client(w, r) {
		return
	}
	limit, since := 100, int64(0)
	if v, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && v >= 1 && v <= 200 {
		limit = v
	}
	if v, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64); err == nil && v > 0 {
		since = v
	}
	s.Lock()
	out := []Message{}
	for i := len(s.messages) - 1; i >= 0 && len(out) < limit; i-- {
		if since == 0 || s.messages[i].ID < since {
			out = append(out, s.messages[i])
		}
	}
	s.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"paging": map[string]any{"size": len(out), "since": since, "limit": limit}, "messages": out})
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !s.client(w, r) {
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer s.Attach(c)()
	for { // the stream is server-to-client; read only to notice close
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}
