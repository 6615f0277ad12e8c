// Package telegramtest is a local fake of the Telegram Bot API for tests:
// the same paths (/bot<token>/<method>), JSON envelope ({"ok", "result"} or
// {"ok": false, "error_code", "description", "parameters"}), 401 for a bad
// token, 429 with retry_after, getUpdates long polling with offset
// confirmation, and setWebhook/deleteWebhook (getUpdates is 409 while a
// webhook is set, as on Telegram).
package telegramtest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel/channeltest"
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

	channeltest.Recorder[Sent]

	updates   []json.RawMessage
	ids       []int64
	nextID    int64
	nextMsg   int64
	hookURL   string
	hookToken string
}

// New starts a fake for a bot with token. In an outage every call answers
// Telegram's front end's 502 page; a rate-limited sendMessage answers 429
// with parameters.retry_after.
func New(token string) *Server {
	s := &Server{Token: token, BotID: 777, Username: "fangd_test_bot", nextID: 1000, nextMsg: 1}
	s.Server = httptest.NewServer(s.Gate(channeltest.Gate{
		Route:  func(r *http.Request) string { _, method, _ := split(r); return method },
		Limits: func(r *http.Request) bool { _, method, _ := split(r); return method == "sendMessage" },
		Down: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
		},
		Limited: func(w http.ResponseWriter, secs int) {
			channeltest.WriteJSON(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error_code": 429,
				"description": "Too Many Requests: retry after " + strconv.Itoa(secs), "parameters": map[string]any{"retry_after": secs}})
		},
	}, http.HandlerFunc(s.serve)))
	return s
}

// split takes /bot<token>/<method> apart.
func split(r *http.Request) (token, method string, ok bool) {
	rest, found := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, found2 := strings.Cut(rest, "/")
	return token, method, found && found2
}

// URL is the api_url to configure.
func (s *Server) URL() string { return s.Server.URL }

// UserMessage queues a text message from user (id, username) in chat and
// returns its update id.
func (s *Server) UserMessage(chatID, userID int64, username, text string) int64 {
	s.Lock()
	defer s.Unlock()
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
	s.Changed()
	return s.nextID
}

// Update returns an update as Telegram would POST it to a webhook.
func (s *Server) Update(chatID, userID int64, username, text string) []byte {
	id := s.UserMessage(chatID, userID, username, text)
	s.Lock()
	defer s.Unlock()
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

// Pending is how many updates are not yet confirmed by an offset.
func (s *Server) Pending() int {
	s.Lock()
	defer s.Unlock()
	return len(s.updates)
}

// Calls is how many times method was called (any token).
func (s *Server) Calls(method string) int { return s.Requests(method) }

// RateLimit answers the next n sendMessage calls with 429 retry_after 1.
func (s *Server) RateLimit(n int) { s.RateLimitNext(n, 1) }

// Webhook is the registered webhook URL and secret token.
func (s *Server) Webhook() (string, string) {
	s.Lock()
	defer s.Unlock()
	return s.hookURL, s.hookToken
}

func fail(w http.ResponseWriter, code int, desc string) {
	channeltest.WriteJSON(w, code, map[string]any{"ok": false, "error_code": code, "description": desc})
}

func ok(w http.ResponseWriter, result any) {
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "result": result})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	token, method, found := split(r)
	if !found {
		fail(w, http.StatusNotFound, "Not Found")
		return
	}
	var params map[string]any
	if r.Body != nil {
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		_ = dec.Decode(&params)
	}
	if token != s.Token && !(s.AnyToken && strings.Contains(token, ":")) {
		fail(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	switch method {
	case "getMe":
		ok(w, map[string]any{"id": s.BotID, "is_bot": true, "first_name": "fangd test", "username": s.Username})
	case "getUpdates":
		s.getUpdates(w, r, params)
	case "sendMessage":
		s.sendMessage(w, params)
	case "setWebhook":
		s.Lock()
		s.hookURL, _ = params["url"].(string)
		s.hookToken, _ = params["secret_token"].(string)
		s.Changed()
		s.Unlock()
		ok(w, true)
	case "deleteWebhook":
		s.Lock()
		s.hookURL, s.hookToken = "", ""
		s.Changed()
		s.Unlock()
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
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(timeout)*time.Second)
	defer cancel()
	var hooked, down bool
	var out []json.RawMessage
	// Long poll: answer as soon as there are updates (or a webhook is set,
	// or an outage begins), or empty at the timeout.
	_ = s.Wait(ctx, "getUpdates", func() bool {
		hooked, down = s.hookURL != "", s.Down()
		// An offset confirms every update below it.
		for len(s.ids) > 0 && offset > 0 && s.ids[0] < offset {
			s.ids, s.updates = s.ids[1:], s.updates[1:]
		}
		out = append([]json.RawMessage(nil), s.updates...)
		return hooked || down || len(out) > 0
	})
	switch {
	case r.Context().Err() != nil:
	case hooked:
		fail(w, http.StatusConflict, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
	case down:
		w.WriteHeader(http.StatusBadGateway)
	case len(out) == 0:
		ok(w, []any{})
	default:
		ok(w, out)
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
	s.Lock()
	s.nextMsg++
	m := Sent{ChatID: chat, Text: text, ReplyTo: replyTo, ThreadID: num(params["message_thread_id"]), MessageID: s.nextMsg}
	s.Record(m)
	s.Unlock()
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
