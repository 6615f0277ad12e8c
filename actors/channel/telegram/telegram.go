// Package telegram is the Telegram adapter: a hand-written client for the
// Bot API (https://core.telegram.org/bots/api) over JSON. Requests go to
// {api_url}/bot{token}/{method}, so a local Bot API server works as well
// as api.telegram.org. Inbound messages come from getUpdates long polling,
// or, when webhook_url is set, from setWebhook callbacks verified by the
// X-Telegram-Bot-Api-Secret-Token header.
package telegram

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// MaxMessageLength is sendMessage's text limit (1-4096 characters after
// entity parsing, counted in UTF-16 code units).
const MaxMessageLength = 4096

// minPoll is the shortest a polling round may take.
const minPoll = 250 * time.Millisecond

// Adapter talks to one bot.
type Adapter struct {
	base    string // {api_url}/bot{token}/
	token   string
	timeout int // long-poll seconds
	hookURL string
	secret  string
	client  *botClient
}

// New builds the adapter from its configuration (no I/O).
func New(cfg *channel.Config) (channel.Adapter, error) {
	token := cfg.Secret("bot_token")
	if strings.ContainsAny(token, "/?# ") {
		return nil, &channel.FieldError{Field: "bot_token", Msg: "is not a bot token (expected 123456:ABC...)"}
	}
	api := strings.TrimRight(cfg.Text("api_url"), "/")
	if _, err := channel.HTTPURL(api); err != nil {
		return nil, &channel.FieldError{Field: "api_url", Msg: err.Error()}
	}
	a := &Adapter{base: api + "/bot" + token + "/", token: token, timeout: cfg.Int("poll_interval_secs"),
		hookURL: cfg.Text("webhook_url"), secret: cfg.Secret("webhook_secret"), client: client}
	if cfg.Net != nil {
		a.client = newBotClient(cfg.DialContext())
	}
	if a.timeout <= 0 || a.timeout > 50 {
		if cfg.Values["poll_interval_secs"] != "" {
			return nil, &channel.FieldError{Field: "poll_interval_secs", Msg: "must be between 1 and 50"}
		}
		a.timeout = 30
	}
	if a.hookURL != "" {
		if _, err := channel.HTTPURL(a.hookURL); err != nil || !strings.HasPrefix(a.hookURL, "https://") && !isLoopbackURL(a.hookURL) {
			return nil, &channel.FieldError{Field: "webhook_url", Msg: "must be an https URL that reaches /channels/" + cfg.Name + "/webhook"}
		}
		if a.secret == "" {
			return nil, &channel.FieldError{Field: "webhook_secret", Msg: "is required in webhook mode (Telegram sends it in X-Telegram-Bot-Api-Secret-Token)"}
		}
	}
	if a.secret != "" && !validSecretToken(a.secret) {
		return nil, &channel.FieldError{Field: "webhook_secret", Msg: "must be 1-256 characters of A-Z, a-z, 0-9, _ and -"}
	}
	return a, nil
}

func isLoopbackURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

func validSecretToken(s string) bool {
	if len(s) > 256 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Capabilities: Telegram's documented limits. Bots should send at most one
// message per second to a chat (short bursts are tolerated) and about 30 per
// second overall; a 429 carries retry_after, which the runtime honours.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: MaxMessageLength, LengthInUTF16: true, Threads: true, Edits: true,
		Buttons: true, Markdown: "markdownv2",
		Pace: channel.Pace{PerSecond: 30, Burst: 30, ChatInterval: time.Second, ChatBurst: 3}}
}

// --- wire types (the subset fangd uses) ---

type response struct {
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result"`
	ErrorCode   int             `json:"error_code"`
	Description string          `json:"description"`
	Parameters  *struct {
		RetryAfter int `json:"retry_after"`
	} `json:"parameters"`
}

// User is a Telegram user or bot.
type User struct {
	ID        int64  `json:"id"`
	IsBot     bool   `json:"is_bot"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name,omitempty"`
	Username  string `json:"username,omitempty"`
}

// Chat is a Telegram chat.
type Chat struct {
	ID       int64  `json:"id"`
	Type     string `json:"type"` // private, group, supergroup, channel
	Title    string `json:"title,omitempty"`
	Username string `json:"username,omitempty"`
}

// Message is a Telegram message.
type Message struct {
	MessageID       int64  `json:"message_id"`
	MessageThreadID int64  `json:"message_thread_id,omitempty"`
	IsTopicMessage  bool   `json:"is_topic_message,omitempty"`
	From            *User  `json:"from,omitempty"`
	Chat            Chat   `json:"chat"`
	Date            int64  `json:"date"`
	Text            string `json:"text,omitempty"`
	Caption         string `json:"caption,omitempty"`
}

// Update is one incoming update.
type Update struct {
	UpdateID int64    `json:"update_id"`
	Message  *Message `json:"message,omitempty"`
}

// call invokes method with params and decodes the result into out. No
// call takes longer than the long poll plus 15 s, as the platform holds a
// getUpdates open for timeout seconds.
func (a *Adapter) call(ctx context.Context, method string, params any, out any) error {
	return a.callWith(ctx, method, params, out, inline)
}

// callWith is call with the steps that need stack (encoding, writing,
// parsing, decoding) run by heavy; see botClient.post.
func (a *Adapter) callWith(ctx context.Context, method string, params any, out any, heavy func(func())) (err error) {
	var body []byte
	if heavy(func() { body, err = json.Marshal(params) }); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(a.timeout+15) * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	res, err := a.client.post(ctx, a.base+method, body, deadline, heavy)
	heavy(func() {
		if err != nil {
			err = a.scrub(fmt.Errorf("%s: %w", method, err))
			return
		}
		err = a.decode(method, res, out)
	})
	return err
}

func (a *Adapter) decode(method string, res *reply, out any) error {
	var r response
	if err := json.Unmarshal(res.body, &r); err != nil {
		if res.status >= 500 || res.status == 429 {
			return channel.HTTPStatusError(res.status, fmt.Sprintf("HTTP %d from the Bot API", res.status), res.retryAfterHint())
		}
		return fmt.Errorf("%s: HTTP %d with a body that is not Bot API JSON", method, res.status)
	}
	if !r.OK {
		return a.classify(method, res, &r)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			return fmt.Errorf("%s: unexpected result: %w", method, err)
		}
	}
	return nil
}

// classify maps a Bot API error to the runtime's classes.
func (a *Adapter) classify(method string, res *reply, r *response) error {
	code := r.ErrorCode
	if code == 0 {
		code = res.status
	}
	desc := r.Description
	if desc == "" {
		desc = http.StatusText(code)
	}
	err := &channel.StatusError{Status: code, Description: desc}
	switch {
	case code == http.StatusUnauthorized:
		return channel.Permanent(err)
	case code == http.StatusNotFound && (method == "getMe" || method == "getUpdates"):
		// The Bot API answers 404 for a token that is not a token at all.
		return channel.Permanent(&channel.StatusError{Status: code, Description: "Not Found (the bot token is invalid)"})
	case code == http.StatusTooManyRequests:
		wait := res.retryAfterHint()
		if r.Parameters != nil && r.Parameters.RetryAfter > 0 {
			wait = time.Duration(r.Parameters.RetryAfter) * time.Second
		}
		return channel.RetryAfter(err, wait)
	case code == http.StatusConflict:
		// Another getUpdates poller (outside this daemon) or an active
		// webhook: transient, but do not hammer.
		return channel.RetryAfter(err, 5*time.Second)
	case code >= 500:
		return err
	case method == "sendMessage":
		// 400 chat not found, 403 blocked by the user: this message can
		// never be delivered, the bot itself is fine.
		return channel.Rejected(err)
	case code == http.StatusForbidden:
		return channel.Permanent(err)
	}
	return err
}

func (r *reply) retryAfterHint() time.Duration { return httpretry.Parse(r.retryAfter, time.Now()) }

// scrub removes the token from transport errors (net/http puts the URL,
// which contains it, in every error).
func (a *Adapter) scrub(err error) error {
	if a.token == "" {
		return err
	}
	return &scrubbed{msg: strings.ReplaceAll(err.Error(), a.token, "<token>"), err: err}
}

// scrubbed is an error whose text has the token masked. It unwraps to the
// original so that the runtime can still tell a network failure's cause
// (transport/neterr reads the error's fields, never its URL).
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// Probe is getMe.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	var me User
	if err := a.call(ctx, "getMe", struct{}{}, &me); err != nil {
		return channel.Identity{}, err
	}
	name := me.Username
	if name != "" {
		name = "@" + name
	}
	return channel.Identity{ID: strconv.FormatInt(me.ID, 10), Name: name, DisplayName: me.FirstName}, nil
}

// Run authenticates, then long-polls getUpdates (or, in webhook mode,
// registers the webhook and waits while callbacks arrive).
//
// This goroutine is parked in a long poll for the bot's whole life, and
// a daemon may run a thousand bots: everything that needs stack (HTTP,
// JSON, delivering to the runtime, the store) runs through offStack, so
// that what stays parked is a goroutine of minimal size.
func (a *Adapter) Run(ctx context.Context, h channel.Host) error {
	var id channel.Identity
	var offset int64
	var err error
	if offStack(func() { id, offset, err = a.start(ctx, h) }); err != nil || a.hookURL != "" {
		if err == nil {
			<-ctx.Done()
		}
		return err
	}
	for {
		var updates []Update
		params := map[string]any{"offset": offset, "timeout": a.timeout, "allowed_updates": []string{"message"}}
		began := time.Now()
		if err := a.callWith(ctx, "getUpdates", params, &updates, offStack); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(updates) == 0 {
			offStack(h.Alive)
			// A server that ignores "timeout" (some local Bot API
			// emulators) answers at once; do not spin on it.
			if wait := minPoll - time.Since(began); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			continue
		}
		if offStack(func() { offset, err = a.deliver(ctx, h, updates, id.ID) }); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// start checks the token (getMe), then sets or deletes the webhook, reports
// the link up and reads the stored update offset.
func (a *Adapter) start(ctx context.Context, h channel.Host) (id channel.Identity, offset int64, err error) {
	if id, err = a.Probe(ctx); err != nil {
		return id, 0, err
	}
	if a.hookURL != "" {
		params := map[string]any{"url": a.hookURL, "secret_token": a.secret, "allowed_updates": []string{"message"}}
		if err := a.call(ctx, "setWebhook", params, nil); err != nil {
			return id, 0, err
		}
		h.Connected(id)
		return id, 0, nil
	}
	// getUpdates is refused while a webhook is set.
	if err := a.call(ctx, "deleteWebhook", map[string]any{"drop_pending_updates": false}, nil); err != nil {
		return id, 0, err
	}
	h.Connected(id)
	s, err := h.Cursor("offset")
	if err != nil {
		return id, 0, err
	}
	if s != "" {
		offset, _ = strconv.ParseInt(s, 10, 64)
	}
	return id, offset, nil
}

// deliver hands updates to the runtime and returns the offset that
// confirms them.
func (a *Adapter) deliver(ctx context.Context, h channel.Host, updates []Update, selfID string) (int64, error) {
	// The messages and the offset past them are stored together; only
	// then are the updates ours, and the next getUpdates with the higher
	// offset confirms them on Telegram's side.
	next := updates[len(updates)-1].UpdateID + 1
	cur := channel.Cursor{Key: "offset", Value: strconv.FormatInt(next, 10)}
	if err := h.DeliverAndSave(ctx, cur, a.inbound(updates, selfID)...); err != nil {
		return updates[0].UpdateID, err
	}
	return next, nil
}

// inbound turns updates into messages, skipping bots (ourselves included)
// and updates without text.
func (a *Adapter) inbound(updates []Update, selfID string) []channel.Inbound {
	var out []channel.Inbound
	for _, u := range updates {
		m := u.Message
		if m == nil || m.From == nil || m.From.IsBot || strconv.FormatInt(m.From.ID, 10) == selfID {
			continue
		}
		text := m.Text
		if text == "" {
			text = m.Caption
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		in := channel.Inbound{ChatID: strconv.FormatInt(m.Chat.ID, 10), UserID: strconv.FormatInt(m.From.ID, 10),
			UserName: m.From.Username, Text: text, MessageID: strconv.FormatInt(m.MessageID, 10),
			Direct: m.Chat.Type == "private", At: time.Unix(m.Date, 0)}
		if m.IsTopicMessage && m.MessageThreadID != 0 {
			in.ThreadID = strconv.FormatInt(m.MessageThreadID, 10)
		}
		out = append(out, in)
	}
	return out
}

// Send is sendMessage, as a reply to the message it answers when there is
// one. Text goes out plain (no parse_mode): an agent's Markdown is not
// escaped for MarkdownV2, and a parse error would lose the reply.
func (a *Adapter) Send(ctx context.Context, m channel.Outbound) (string, error) {
	params := map[string]any{"chat_id": chatID(m.ChatID), "text": m.Text}
	if m.ReplyTo != "" {
		if id, err := strconv.ParseInt(m.ReplyTo, 10, 64); err == nil {
			params["reply_parameters"] = map[string]any{"message_id": id, "allow_sending_without_reply": true}
		}
	}
	if m.ThreadID != "" {
		if id, err := strconv.ParseInt(m.ThreadID, 10, 64); err == nil {
			params["message_thread_id"] = id
		}
	}
	var sent Message
	if err := a.call(ctx, "sendMessage", params, &sent); err != nil {
		return "", err
	}
	return strconv.FormatInt(sent.MessageID, 10), nil
}

// chatID sends numeric ids as numbers and @channelusernames as strings.
func chatID(s string) any {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	return s
}

// Webhook takes an Update from Telegram after checking the secret token.
func (a *Adapter) Webhook(_ context.Context, r *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if a.secret == "" {
		return nil, nil, fmt.Errorf("%w: this channel has no webhook_secret, so it cannot check callbacks", channel.ErrBadSignature)
	}
	got := r.Header.Get("X-Telegram-Bot-Api-Secret-Token")
	if subtle.ConstantTimeCompare([]byte(got), []byte(a.secret)) != 1 {
		return nil, nil, fmt.Errorf("%w: X-Telegram-Bot-Api-Secret-Token does not match", channel.ErrBadSignature)
	}
	if r.Method != http.MethodPost {
		return &channel.WebhookResponse{Status: http.StatusMethodNotAllowed}, nil, nil
	}
	var u Update
	if err := json.Unmarshal(r.Body, &u); err != nil {
		return nil, nil, fmt.Errorf("not a Telegram update: %w", err)
	}
	return nil, a.inbound([]Update{u}, ""), nil
}
