package http

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/webhook"
)

// FuzzHookSignature: the Standard Webhooks headers of POST /hooks/* come
// from anyone. Verifying them must not panic; a signature fangd's own
// webhook Signer made with the same secret must verify; the same headers
// over a different body must not.
func FuzzHookSignature(f *testing.F) {
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", "1700000000", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"text":"hi"}`))
	f.Add("plain-secret", "id", "not-a-number", "v1,", []byte(""))
	f.Add("s", "a\nb", "99999999999999999999", "v1,AAAA v2,BBBB v1", []byte("x"))
	f.Add("whsec_", "", "", ",,,", []byte(nil))
	f.Fuzz(func(t *testing.T, secret, id, ts, sig string, body []byte) {
		wh, err := hookVerifier(secret)
		if err != nil || secret == "" {
			return
		}
		hdr := http.Header{}
		hdr.Set("webhook-id", id)
		hdr.Set("webhook-timestamp", ts)
		hdr.Set("webhook-signature", sig)
		_ = wh.Verify(body, hdr) // fuzzed headers: any answer, no panic

		signer, err := webhook.NewSigner(secret)
		if err != nil || signer == nil || strings.ContainsAny(id, "\r\n") {
			return
		}
		now := time.Now()
		standard, _, err := signer.Sign(id, now, body)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		hdr.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		hdr.Set("webhook-signature", standard)
		if err := wh.Verify(body, hdr); err != nil {
			if id == "" {
				return // webhook-id is required
			}
			t.Fatalf("fangd's own signature does not verify (secret %q id %q): %v", secret, id, err)
		}
		if err := wh.Verify(append(append([]byte{}, body...), '!'), hdr); err == nil {
			t.Fatal("the signature verified over another body")
		}
	})
}
