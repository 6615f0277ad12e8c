package pairing

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"image/png"
	"net/url"
	"strings"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"

	"github.com/fangd/fangd/actors/kernel"
)

// codeAlphabet has no 0/O, 1/I/L or U/V lookalikes: 29 symbols, 6 of them
// per code (about 29 bits), shown as "XK9-47B". With the per-address
// lockout and the global burn (see claim) guessing is hopeless.
const codeAlphabet = "23456789ABCDEFGHJKMNPQRSTWXYZ"

const codeLen = 6

// newCode returns a fresh code in its display form.
func newCode() string {
	var b [codeLen]byte
	out := make([]byte, 0, codeLen+1)
	for i := range b {
		out = append(out, codeAlphabet[randIndex(len(codeAlphabet))])
		if i == 2 {
			out = append(out, '-')
		}
	}
	return string(out)
}

// randIndex is a uniform index below n (rejection sampling, no modulo bias).
func randIndex(n int) int {
	limit := 256 - 256%n
	var b [1]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if int(b[0]) < limit {
			return int(b[0]) % n
		}
	}
}

// normalize is the form a code is compared in: upper case, without the
// dash or spaces a user may type.
func normalize(s string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(s) {
		if c != '-' && c != ' ' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// codeHash is the key a pending code is stored under.
func codeHash(code string) string {
	sum := sha256.Sum256([]byte("fangd-pairing-code\x00" + normalize(code)))
	return hex.EncodeToString(sum[:])
}

// newDeviceToken returns a device bearer token and its stored hash.
func newDeviceToken() (token, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	token = "fdv_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, TokenHash([]byte(token))
}

// TokenHash is how a device token is stored and looked up.
func TokenHash(token []byte) string {
	sum := sha256.Sum256(token)
	return hex.EncodeToString(sum[:])
}

// QRURI is the URI a pairing QR code carries: the base URL and the code,
// in fangd's scheme ("fangd://pair?base_url=...&code=...").
func QRURI(baseURL, code string) string {
	return "fangd://pair?base_url=" + url.QueryEscape(baseURL) + "&code=" + url.QueryEscape(code)
}

// QRPNG renders text as a PNG QR code of about size pixels.
func QRPNG(text string, size int) ([]byte, error) {
	c, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return nil, err
	}
	if c, err = barcode.Scale(c, size, size); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ---- action tokens ----

// actionClaims are what an action token carries: who may do what to
// which approval until when; J makes it single use.
type actionClaims struct {
	Approval string `json:"a"`
	Decision string `json:"d"` // approve, reject
	Device   string `json:"dev"`
	Exp      int64  `json:"exp"`
	JTI      string `json:"j"`
}

// ActionClaims is a verified action token's content.
type ActionClaims struct {
	ApprovalID string
	Approve    bool
	DeviceID   string
	Expires    time.Time
	JTI        string
}

func signAction(key []byte, c actionClaims) string {
	payload, _ := json.Marshal(c)
	p := base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var errBadAction = kernel.Errorf(kernel.KindUnauthorized, "invalid_action_token", "the action token is invalid or expired")

func verifyAction(key []byte, token string, now time.Time) (*ActionClaims, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok || len(token) > 1024 {
		return nil, errBadAction
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return nil, errBadAction
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(p))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return nil, errBadAction
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil, errBadAction
	}
	var c actionClaims
	if json.Unmarshal(raw, &c) != nil || c.JTI == "" || c.Approval == "" || (c.Decision != "approve" && c.Decision != "reject") {
		return nil, errBadAction
	}
	exp := time.Unix(c.Exp, 0)
	if !now.Before(exp) {
		return nil, errBadAction
	}
	return &ActionClaims{ApprovalID: c.Approval, Approve: c.Decision == "approve", DeviceID: c.Device, Expires: exp, JTI: c.JTI}, nil
}
