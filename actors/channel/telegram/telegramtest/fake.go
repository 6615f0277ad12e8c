// Package telegramtest is a local fake of the Telegram Bot API for tests:
// the same paths (/bot<token>/<method>), JSON envelope ({"ok", "result"} or
// {"ok": false, "error_code", "description", "parameters"}), 401 for a bad
// token, 429 with retry_after, getUpdates long polling with offset
// confirmation, and setWebhook/deleteWebhook (getUpdates is 409 while a
// webhook is set, as on Telegram).
package telegramtest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Sent is one message the bot sent.
type Sent struct {
	ChatID    string
	Text      string
	ReplyTo   int64
	ThreadID  int64
	MessageID int64
}

// Server is the fake.
type Server struct {
	*httptest.Server
	Token    string
	BotID    int64
	Username string
	// AnyToken accepts every well-formed token ("<id>:<secret>"), so one
	// fake can host many bots (the bench's thousand channels).
	AnyToken bool
	// OnSent, when set before the first message, is called with every
	// message the bot sends as it arrives (the bench times replies with it).
	OnSent func(Sent)

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever updates/down change
	updates   []json.RawMessage
	ids       []int64
	nextID    int64
	nextMsg   int64
	sent      []Sent
	calls     map[string]int
	down      bool
	limit     int // answer this many next calls with 429
	hookURL   string
	hookToken string
}

// New starts a fake for a bot with token.
func New(token string) *Server {
	s := &Server{Token: token, BotID: 777, Username: "fangd_test_bot", changed: make(chan struct{}),
		nextID: 1000, nextMsg: 1, calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the api_url to configure.
func (s *Server) URL() string { return s.Server.URL }

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// UserMessage queues a text message from user (id, username) in chat and
// returns its update id.
func (s *Server) UserMessage(chatID, userID int64, username, text string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	s.nextMsg++
	chatType := "private"
	if chatID < 0 {
		chatType = "supergroup"
	}
	u := map[string]any{"update_id": s.nextID, "message": map[string]any{
		"message_id": s.nextMsg, "date": time.Now().Unix(), "text": text,
		"from": map[string]any{"id": userID, "is_bot": false, "first_name": username, "username": username},
		"chat": map[string]any{"id": chatID, "type": chatType}}}
	raw, _ := json.Marshal(u)
	s.updates = append(s.updates, raw)
	s.ids = append(s.ids, s.nextID)
	s.notify()
	return s.nextID
}

// Update returns an update as Telegram would POST it to a webhook.
func (s *Server) Update(chatID, userID int64, username, text string) []byte {
	id := s.UserMessage(chatID, userID, username, text)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.ids {
		if x == id {
			raw := s.updates[i]
			s.updates = append(s.updates[:i], s.updates[i+1:]...)
			s.ids = append(s.ids[:i], s.ids[i+1:]...)
			return raw
		}
	}
	return nil
}

// Sent returns what the bot sent so far.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Pending is how many updates are not yet confirmed by an offset.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.updates)
}

// Calls is how many times method was called (any token).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// SetDown makes every call fail with 502 (as Telegram's front end does
// during an outage) until SetDown(false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.notify()
	s.mu.Unlock()
}

// RateLimit answers the next n calls with 429 retry_after 1.
func (s *Server) RateLimit(n int) {
	s.mu.Lock()
	s.limit = n
	s.mu.Unlock()
}

// Webhook is the registered webhook URL and secret token.
func (s *Server) Webhook() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hookURL, s.hookToken
}

func reply(w http.ResponseWriter, status int, v map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, desc string) {
	reply(w, code, map[string]any{"ok": false, "error_code": code, "description": desc})
}

func ok(w http.ResponseWriter, result any) {
	reply(w, http.StatusOK, map[string]any{"ok": true, "result": result})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rest, found := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, found2 := strings.Cut(rest, "/")
	if !found || !found2 {
		fail(w, http.StatusNotFound, "Not Found")
		return
	}
	var params map[string]any
	if r.Body != nil {
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		_ = dec.Decode(&params)
	}
	s.mu.Lock()
	s.calls[method]++
	if s.down {
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
		return
	}
	if token != s.Token && !(s.AnyToken && strings.Contains(token, ":")) {
		s.mu.Unlock()
		fail(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if s.limit > 0 {
		s.limit--
		s.mu.Unlock()
		reply(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error_code": 429,
			"description": "Too Many Requests: retry after 1", "parameters": map[string]any{"retry_after": 1}})
		return
	}
	s.mu.Unlock()
	switch method {
	case "getMe":
		ok(w, map[string]any{"id": s.BotID, "is_bot": true, "first_name": "fangd test", "username": s.Username})
	case "getUpdates":
		s.getUpdates(w, r, params)
	case "sendMessage":
		s.sendMessage(w, params)
	case "setWebhook":
		s.mu.Lock()
		s.hookURL, _ = params["url"].(string)
		s.hookToken, _ = params["secret_token"].(string)
		s.mu.Unlock()
		ok(w, true)
	case "deleteWebhook":
		s.mu.Lock()
		s.hookURL, s.hookToken = "", ""
		s.mu.Unlock()
		ok(w, true)
	default:
		fail(w, http.StatusNotFound, "Not Found: method not found")
	}
}

func num(v any) int64 {
	if n, ok := v.(json.Number); ok {
		i, _ := n.Int64()
		return i
	}
	return 0
}

func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request, params map[string]any) {
	offset, timeout := num(params["offset"]), num(params["timeout"])
	deadline := time.Now().Add(time.Duration(timeout) * time.Second)
	for {
		s.mu.Lock()
		if s.hookURL != "" {
			s.mu.Unlock()
			fail(w, http.StatusConflict, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
			return
		}
		if s.down {
			s.mu.Unlock()
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		// An offset confirms every update below it.
		for len(s.ids) > 0 && offset > 0 && s.ids[0] < offset {
			s.ids, s.updates = s.ids[1:], s.updates[1:]
		}
		if len(s.updates) > 0 {
			out := append([]json.RawMessage(nil), s.updates...)
			s.mu.Unlock()
			ok(w, out)
			return
		}
		changed := s.changed
		s.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			ok(w, []any{})
			return
		}
		select {
		case <-changed:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) sendMessage(w http.ResponseWriter, params map[string]any) {
	var chat string
	switch c := params["chat_id"].(type) {
	case json.Number:
		chat = c.String()
	case string:
		chat = c
	}
	text, _ := params["text"].(string)
	if chat == "" || chat == "404" {
		fail(w, http.StatusBadRequest, "Bad Request: chat not found")
		return
	}
	if text == "" {
		fail(w, http.StatusBadRequest, "Bad Request: message text is empty")
		return
	}
	if n := len([]rune(text)); n > 4096 {
		fail(w, http.StatusBadRequest, "Bad Request: message is too long")
		return
	}
	var replyTo int64
	if rp, ok := params["reply_parameters"].(map[string]any); ok {
		replyTo = num(rp["message_id"])
	}
	s.mu.Lock()
	s.nextMsg++
	m := Sent{ChatID: chat, Text: text, ReplyTo: replyTo, ThreadID: num(params["message_thread_id"]), MessageID: s.nextMsg}
	s.sent = append(s.sent, m)
	s.mu.Unlock()
	if s.OnSent != nil {
		s.OnSent(m)
	}
	var chatIDValue any = chat
	if n, err := json.Number(chat).Int64(); err == nil {
		chatIDValue = n
	}
	ok(w, map[string]any{"message_id": m.MessageID, "date": time.Now().Unix(), "text": text,
		"chat": map[string]any{"id": chatIDValue, "type": "private"}})
}
