// Package webhooktest is the other end of fangd's generic webhook channel:
// a local receiver for outbound callbacks that checks their
// X-Webhook-Signature (sha256=<hex HMAC-SHA256 of the body>) and answers 401
// when it does not verify, and a sender that signs inbound messages the same
// way. The wire format is LibreFang's webhook adapter's.
package webhooktest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
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

	mu        sync.Mutex
	got       []Callback
	down      bool
	limitNext int
	limitWait int
	requests  int
	rejected  int
	notify    chan struct{}
}

// NewReceiver starts a receiver that accepts callbacks signed with secret.
func NewReceiver(secret string) *Receiver {
	r := &Receiver{Secret: secret, notify: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

// SetDown makes the receiver answer 503 until SetDown(false).
func (r *Receiver) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

// RateLimitNext makes the next n callbacks answer 429 with Retry-After: secs.
func (r *Receiver) RateLimitNext(n, secs int) {
	r.mu.Lock()
	r.limitNext, r.limitWait = n, secs
	r.mu.Unlock()
}

// Requests is the number of callbacks received (accepted or not).
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Rejected is the number of callbacks refused for a bad signature.
func (r *Receiver) Rejected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected
}

// Got lists accepted callbacks.
func (r *Receiver) Got() []Callback {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Callback(nil), r.got...)
}

// Wait waits for an accepted callback matching match.
func (r *Receiver) Wait(ctx context.Context, match func(Callback) bool) (Callback, error) {
	for {
		r.mu.Lock()
		for _, c := range r.got {
			if match(c) {
				r.mu.Unlock()
				return c, nil
			}
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Callback{}, fmt.Errorf("webhooktest: no matching callback: %w", ctx.Err())
		}
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	defer func() {
		close(r.notify)
		r.notify = make(chan struct{})
		r.mu.Unlock()
	}()
	r.requests++
	if r.down {
		http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
		return
	}
	if r.limitNext > 0 {
		r.limitNext--
		w.Header().Set("Retry-After", strconv.Itoa(r.limitWait))
		http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		return
	}
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
	r.got = append(r.got, c)
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
	req, _ := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("X-Webhook-Signature", signature)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
