// Package webhook is the generic webhook channel: any system that can sign
// an HTTP request talks to an agent through it. Inbound messages are POSTed
// to /channels/<name>/webhook with X-Webhook-Signature: sha256=<hex
// HMAC-SHA256 of the body, keyed with the shared secret>; replies are
// POSTed to the configured callback URL signed the same way. The body
// shapes are LibreFang's webhook adapter's.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/httpretry"
)

// SignatureHeader carries the body's HMAC in both directions.
const SignatureHeader = "X-Webhook-Signature"

// Adapter is one webhook integration.
type Adapter struct {
	secret   []byte
	callback string
	http     *http.Client
}

// New builds an adapter from a validated configuration; it does no I/O.
func New(cfg *channel.Config) (channel.Adapter, error) {
	secret := cfg.Secret("secret")
	if len(secret) < 16 {
		return nil, &channel.FieldError{Field: "secret", Msg: "must be at least 16 characters (it is the only thing that authenticates inbound messages)"}
	}
	cb := cfg.Text("callback_url")
	if cb != "" {
		_, err := channel.HTTPURL(cb)
		if err != nil {
			return nil, &channel.FieldError{Field: "callback_url", Msg: "must be an http(s) URL"}
		}
	}
	return &Adapter{secret: []byte(secret), callback: cb,
		// Redirects are not followed: a receiver that moves must be
		// reconfigured, and a signed body must not land somewhere else.
		http: noRedirects(cfg.HTTPClient(30 * time.Second))}, nil
}

// Capabilities of a generic webhook: whatever the receiver accepts.
func (a *Adapter) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 65535, Threads: true, Markdown: "none"}
}

// Callback is the JSON body POSTed to the callback URL.
type Callback struct {
	Event         string `json:"event,omitempty"` // "ping" for Probe, absent for messages
	SenderID      string `json:"sender_id"`
	SenderName    string `json:"sender_name"`
	RecipientID   string `json:"recipient_id"`
	RecipientName string `json:"recipient_name"`
	Message       string `json:"message"`
	ThreadID      string `json:"thread_id,omitempty"`
	ReplyTo       string `json:"reply_to,omitempty"`
	Timestamp     string `json:"timestamp"`
}

// Probe POSTs a signed {"event":"ping"} to the callback URL: a receiver
// that refuses the signature (401/403) means the secret is wrong. With no
// callback URL the channel is inbound-only and there is nothing to ask.
func (a *Adapter) Probe(ctx context.Context) (channel.Identity, error) {
	if a.callback == "" {
		return channel.Identity{ID: "webhook", Name: "webhook", DisplayName: "inbound only (no callback_url)"}, nil
	}
	host := a.callback
	if u, err := url.Parse(a.callback); err == nil {
		host = u.Host
	}
	_, err := a.post(ctx, Callback{Event: "ping", SenderID: "fangd", SenderName: "fangd"})
	var se *channel.StatusError
	if errors.As(err, &se) && !channel.IsPermanent(err) && se.Status >= 400 && se.Status < 500 && se.Status != http.StatusTooManyRequests {
		// The receiver verified the signature and then disliked the ping
		// (it only expects messages): it is reachable and authenticating.
		err = nil
	}
	if err != nil {
		return channel.Identity{}, err
	}
	return channel.Identity{ID: "webhook", Name: host, DisplayName: "callback " + host}, nil
}

// Run has no connection to hold: inbound arrives through Webhook. It
// checks the callback once, reports the channel connected and waits.
func (a *Adapter) Run(ctx context.Context, host channel.Host) error {
	return channel.RunPushed(ctx, host, a.Probe)
}

// Send POSTs a reply to the callback URL.
func (a *Adapter) Send(ctx context.Context, msg channel.Outbound) (string, error) {
	if a.callback == "" {
		return "", channel.Rejected(errors.New("webhook: no callback_url configured; replies cannot be delivered"))
	}
	return a.post(ctx, Callback{SenderID: "fangd", SenderName: "fangd", RecipientID: msg.ChatID,
		Message: msg.Text, ThreadID: msg.ThreadID, ReplyTo: msg.ReplyTo})
}

// post signs and sends one callback; a JSON answer with "id" names the
// delivered message.
func (a *Adapter) post(ctx context.Context, cb Callback) (string, error) {
	cb.Timestamp = time.Now().UTC().Format(time.RFC3339)
	body, err := json.Marshal(cb)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.callback, bytes.NewReader(body))
	if err != nil {
		return "", channel.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(a.secret, body))
	req.Header.Set("User-Agent", "fangd-webhook")
	resp, data, err := channel.Do(a.http, req, 64<<10)
	if err != nil {
		return "", fmt.Errorf("webhook: callback: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		var ack struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &ack)
		return ack.ID, nil
	}
	desc := strings.TrimSpace(string(data))
	desc = channel.Clip(desc, 200)
	wait := httpretry.After(resp.Header, time.Now())
	if resp.StatusCode/100 == 3 {
		return "", channel.Permanent(fmt.Errorf("webhook: callback answered a redirect (HTTP %d); configure the final URL", resp.StatusCode))
	}
	return "", channel.HTTPStatusError(resp.StatusCode, fmt.Sprintf("webhook: callback answered HTTP %d: %s", resp.StatusCode, desc), wait)
}

// Inbound is the JSON body of an inbound message.
type Inbound struct {
	SenderID   string         `json:"sender_id"`
	SenderName string         `json:"sender_name"`
	Message    string         `json:"message"`
	MessageID  string         `json:"message_id"`
	ThreadID   string         `json:"thread_id"`
	IsGroup    bool           `json:"is_group"`
	Metadata   map[string]any `json:"metadata"`
}

// Webhook verifies the signature and turns the body into one message.
func (a *Adapter) Webhook(ctx context.Context, req *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	if req.Method != http.MethodPost {
		return &channel.WebhookResponse{Status: http.StatusMethodNotAllowed, ContentType: "application/json",
			Body: []byte(`{"error":"POST a signed JSON message"}`)}, nil, nil
	}
	if !Verify(a.secret, req.Body, req.Header.Get(SignatureHeader)) {
		return nil, nil, fmt.Errorf("webhook: %s missing or wrong: %w", SignatureHeader, channel.ErrBadSignature)
	}
	var in Inbound
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return nil, nil, fmt.Errorf("webhook: body is not a JSON message: %w", err)
	}
	if strings.TrimSpace(in.Message) == "" {
		return nil, nil, errors.New("webhook: message is empty")
	}
	if in.SenderID == "" {
		in.SenderID = "webhook-user"
	}
	if in.SenderName == "" {
		in.SenderName = in.SenderID
	}
	if in.MessageID == "" {
		in.MessageID = "wh-" + randomHex(8)
	}
	return nil, []channel.Inbound{{ChatID: in.SenderID, UserID: in.SenderID, UserName: in.SenderName, Text: in.Message,
		MessageID: in.MessageID, ThreadID: in.ThreadID, Direct: !in.IsGroup, At: time.Now()}}, nil
}

// Sign returns the X-Webhook-Signature value of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature in constant time.
func Verify(secret, body []byte, sig string) bool {
	return sig != "" && hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// noRedirects makes c return a 3xx as the answer instead of following it.
func noRedirects(c *http.Client) *http.Client {
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}
