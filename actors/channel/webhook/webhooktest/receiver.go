// Package webhooktest is the other end of fangd's generic webhook channel:
// a local receiver for outbound callbacks that checks their
// X-Webhook-Signature (sha256=<hex HMAC-SHA256 of the body>) and answers 401
// when it does not verify, and a sender that signs inbound messages the same
// way. The wire format is LibreFang's webhook adapter's.
package webhooktest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Callback is the JSON body fangd POSTs to the callback URL.
type Callback struct {
	Event         string `json:"event,omitempty"`
	SenderID      string `json:"sender_id"`
	SenderName    string `json:"sender_name"`
	RecipientID   string `json:"recipient_id"`
	RecipientName string `json:"recipient_name"`
	Message       string `json:"message"`
	ThreadID      string `json:"thread_id,omitempty"`
	Timestamp     string `json:"timestamp"`
}

// Receiver is the callback endpoint fake.
type Receiver struct {
	*httptest.Server
	Secret string

	channeltest.Recorder[Callback]

	rejected int
}

// NewReceiver starts a receiver that accepts callbacks signed with secret.
func NewReceiver(secret string) *Receiver {
	r := &Receiver{Secret: secret}
	r.Server = httptest.NewServer(r.Gate(channeltest.Gate{
		Route:  func(*http.Request) string { return CallbackRoute },
		Limits: func(*http.Request) bool { return true },
		Down:   func(w http.ResponseWriter) { http.Error(w, "Service Unavailable", http.StatusServiceUnavailable) },
		Limited: func(w http.ResponseWriter, secs int) {
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		},
	}, http.HandlerFunc(r.serve)))
	return r
}

// CallbackRoute is the one route the receiver counts (Requests): every
// request is a callback, accepted or not, whatever its method or path.
const CallbackRoute = "callback"

// Rejected is the number of callbacks refused for a bad signature.
func (r *Receiver) Rejected() int {
	r.Lock()
	defer r.Unlock()
	return r.rejected
}

// Got lists accepted callbacks.
func (r *Receiver) Got() []Callback {
	return r.Sent()
}

// Wait waits for an accepted callback matching match.
func (r *Receiver) Wait(ctx context.Context, match func(Callback) bool) (Callback, error) {
	return r.WaitSent(ctx, match)
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.Lock()
	defer func() {
		r.Changed()
		r.Unlock()
	}()
	if req.Method != http.MethodPost {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if !Verify(r.Secret, body, req.Header.Get("X-Webhook-Signature")) {
		r.rejected++
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	var c Callback
	if err := json.Unmarshal(body, &c); err != nil {
		http.Error(w, "Invalid JSON", http.StatusBadRequest)
		return
	}
	r.Record(c)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "ok")
}

// Sign returns the X-Webhook-Signature value for body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks sig against body in constant time.
func Verify(secret string, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

// Inbound is the JSON body a system POSTs to fangd's webhook channel.
type Inbound struct {
	SenderID   string         `json:"sender_id"`
	SenderName string         `json:"sender_name,omitempty"`
	Message    string         `json:"message"`
	ThreadID   string         `json:"thread_id,omitempty"`
	IsGroup    bool           `json:"is_group,omitempty"`
	Metadata   map[string]any `json:"metadata,omitempty"`
}

// Send POSTs in to endpoint signed with secret and returns the status.
func Send(endpoint, secret string, in Inbound) (int, error) {
	body, _ := json.Marshal(in)
	return Post(endpoint, body, Sign(secret, body))
}

// Post POSTs body with signature ("" = no header).
func Post(endpoint string, body []byte, signature string) (int, error) {
	return channeltest.Post(endpoint, body, channeltest.Header("X-Webhook-Signature", signature))
}
