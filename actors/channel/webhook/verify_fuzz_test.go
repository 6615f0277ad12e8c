package webhook

import "testing"

// FuzzVerify: X-Webhook-Signature is whatever the caller sends. Verify must
// not panic, must accept Sign's own value and nothing else.
func FuzzVerify(f *testing.F) {
	f.Add([]byte("secret"), []byte(`{"message":"hi"}`), "sha256=00")
	f.Add([]byte(""), []byte(""), "")
	f.Add([]byte("k"), []byte("b"), "SHA256=ABCDEF")
	f.Fuzz(func(t *testing.T, secret, body []byte, sig string) {
		want := Sign(secret, body)
		if got := Verify(secret, body, sig); got != (sig == want) {
			t.Fatalf("Verify(%q) = %v, Sign gives %q", sig, got, want)
		}
		if !Verify(secret, body, want) {
			t.Fatal("Sign's own value does not verify")
		}
	})
}
