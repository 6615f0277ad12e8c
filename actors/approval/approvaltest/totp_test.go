package approvaltest

import (
	"encoding/base32"
	"testing"
	"time"
)

// The RFC's own test vector (Appendix B, SHA-1, T = 59 s) checks the
// test's implementation before it is trusted to check fangd.
func TestRFC6238VectorForTheTestImplementation(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	// The RFC lists 8-digit codes; the last six digits are the 6-digit code.
	for _, v := range []struct {
		unix int64
		want string
	}{{59, "287082"}, {1111111109, "081804"}, {1234567890, "005924"}, {2000000000, "279037"}} {
		if got := TOTP(t, secret, time.Unix(v.unix, 0)); got != v.want {
			t.Fatalf("T=%d: %s, want %s", v.unix, got, v.want)
		}
	}
}
