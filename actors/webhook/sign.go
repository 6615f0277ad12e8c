package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fangd/fangd/transport/httpretry"
	"github.com/fangd/fangd/transport/neterr"
)

// signingKey is the HMAC key for the Standard Webhooks signature: a
// "whsec_<base64>" secret is decoded as the standard says; any other
// secret (LibreFang's style) is used as its UTF-8 bytes.
func signingKey(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(key) < 16 {
			return nil, errors.New(`a "whsec_" secret must be followed by base64 of at least 16 bytes`)
		}
		return key, nil
	}
	return []byte(secret), nil
}

// Signer computes both signatures for one endpoint.
type Signer struct {
	wh     *standardwebhooks.Webhook
	legacy []byte // the secret's UTF-8 bytes, LibreFang's X-Webhook-Signature key
}

// NewSigner prepares signatures for secret ("" = unsigned).
func NewSigner(secret string) (*Signer, error) {
	if secret == "" {
		return nil, nil
	}
	key, err := signingKey(secret)
	if err != nil {
		return nil, err
	}
	wh, err := standardwebhooks.NewWebhookRaw(key)
	if err != nil {
		return nil, err
	}
	return &Signer{wh: wh, legacy: []byte(secret)}, nil
}

// Sign returns the webhook-signature value ("v1,<base64>") over
// id.timestamp.body and the X-Webhook-Signature value ("sha256=<hex>")
// over the body.
func (s *Signer) Sign(msgID string, ts time.Time, body []byte) (standard, legacy string, err error) {
	standard, err = s.wh.Sign(msgID, ts, body)
	if err != nil {
		return "", "", err
	}
	mac := hmac.New(sha256.New, s.legacy)
	mac.Write(body)
	return standard, "sha256=" + hex.EncodeToString(mac.Sum(nil)), nil
}

// Wipe forgets the keys.
func (s *Signer) Wipe() {
	if s != nil {
		clear(s.legacy)
	}
}

// result is the outcome of one HTTP attempt.
type result struct {
	status     int
	latency    time.Duration
	retryAfter time.Duration // 0 when absent
	err        error
}

// outcome classifies a result for the retry logic.
type outcome int

const (
	delivered outcome = iota
	retry
	gone // 410: disable the endpoint
)

func classify(r result) outcome {
	switch {
	case r.status >= 200 && r.status < 300:
		return delivered
	case r.status == http.StatusGone:
		return gone
	}
	return retry // transport errors, 3xx (never followed), 4xx, 5xx
}

// post sends one signed request.
func post(ctx context.Context, client *http.Client, url, msgID string, body []byte, signer *Signer, headers map[string]string, userAgent string) result {
	ts := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v) // a Web Push message sets its own Content-Type
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header["webhook-id"] = []string{msgID}
	req.Header["webhook-timestamp"] = []string{strconv.FormatInt(ts.Unix(), 10)}
	if signer != nil {
		std, legacy, err := signer.Sign(msgID, ts, body)
		if err != nil {
			return result{err: err}
		}
		req.Header["webhook-signature"] = []string{std}
		req.Header.Set("X-Webhook-Signature", legacy)
	}
	resp, err := client.Do(req)
	lat := time.Since(ts)
	if err != nil {
		return result{latency: lat, err: describe(err)}
	}
	// Read a little so that the connection can be reused; receivers
	// should answer with nothing much.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r := result{status: resp.StatusCode, latency: lat}
	r.retryAfter = httpretry.ParseUpTo(resp.Header.Get("Retry-After"), time.Now(), maxRetryAfter)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		r.err = fmt.Errorf("receiver answered %d (redirects are not followed)", resp.StatusCode)
	} else if resp.StatusCode >= 400 {
		r.err = fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return r
}

// maxRetryAfter caps how long a receiver may push a retry out: the outbox
// counts attempts against a schedule of hours, so a receiver's honest "come
// back in an hour" is kept rather than capped at httpretry.MaxWait.
const maxRetryAfter = 24 * time.Hour

// describe turns a transport error into a domain error with
// transport/neterr's code and a message without the URL (whose query may
// hold a token). It keeps no cause: its text is what attempts record.
func describe(err error) error {
	e := *neterr.Classify(err, "")
	e.Err = nil
	return &e
}
