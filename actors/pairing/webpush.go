package pairing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Web Push (RFC 8030) with message encryption (RFC 8291, the aes128gcm
// content coding of RFC 8188) and VAPID (RFC 8292). fangd generates its
// VAPID key pair once (vault "pairing/vapid"); a browser subscribes with
// its public key (GET /api/pairing/vapid) and pairs with the
// PushSubscription it got: the endpoint URL and the keys p256dh and auth.
// Each notification is encrypted for the subscription when it is queued;
// the webhook engine delivers the bytes with their headers and retries.

const vaultVAPID = "pairing/vapid"

// vapidTTL is the life of a VAPID token: the retries of one message
// (about 7 hours, webhook.DefaultBackoff) fit in it; RFC 8292 allows 24 h.
const vapidTTL = 12 * time.Hour

func vapidKey(v *store.Vault) (*ecdsa.PrivateKey, error) {
	var key *ecdsa.PrivateKey
	err := v.With(vaultVAPID, func(der []byte) error {
		k, err := x509.ParseECPrivateKey(der)
		key = k
		return err
	})
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return key, v.Put(vaultVAPID, der)
}

// VAPIDPublicKey is the applicationServerKey a browser subscribes with:
// the uncompressed P-256 point, base64url without padding.
func (p *Pairing) VAPIDPublicKey() string {
	pub, err := p.vapid.PublicKey.ECDH()
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(pub.Bytes())
}

// subscription is a device's PushSubscription keys, kept in the vault.
type subscription struct {
	P256DH string `json:"p256dh"`
	Auth   string `json:"auth"`
}

func subscriptionName(deviceID string) string { return "pairing/webpush/" + deviceID }

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func (t *Target) validateWebPush() error {
	if err := httpURL("push.url", t.URL); err != nil {
		return err
	}
	k, err := decodeB64(t.P256DH)
	if err != nil {
		return kernel.Invalid("push.p256dh must be base64url")
	}
	if _, err := ecdh.P256().NewPublicKey(k); err != nil {
		return kernel.Invalid("push.p256dh is not an uncompressed P-256 public key")
	}
	if a, err := decodeB64(t.AuthSecret); err != nil || len(a) != 16 {
		return kernel.Invalid("push.auth must be 16 bytes, base64url")
	}
	return nil
}

// encryptWebPush encrypts plaintext for the subscription (RFC 8291 §3.4,
// one aes128gcm record).
func encryptWebPush(sub subscription, plaintext []byte) ([]byte, error) {
	uaRaw, err := decodeB64(sub.P256DH)
	if err != nil {
		return nil, err
	}
	ua, err := ecdh.P256().NewPublicKey(uaRaw)
	if err != nil {
		return nil, err
	}
	authSecret, err := decodeB64(sub.Auth)
	if err != nil {
		return nil, err
	}
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := as.ECDH(ua)
	if err != nil {
		return nil, err
	}
	asPub := as.PublicKey().Bytes()
	keyInfo := append(append([]byte("WebPush: info\x00"), uaRaw...), asPub...)
	prkKey, err := hkdf.Extract(sha256.New, shared, authSecret)
	if err != nil {
		return nil, err
	}
	ikm, err := hkdf.Expand(sha256.New, prkKey, string(keyInfo), 32)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	const rs = 4096
	if len(plaintext)+1+16 > rs {
		return nil, kernel.Invalid("the notification is too large for one Web Push record")
	}
	// Header: salt | rs | idlen | keyid (the sender's public key).
	out := make([]byte, 0, 16+4+1+len(asPub)+len(plaintext)+17)
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, rs)
	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	padded := append(append([]byte(nil), plaintext...), 0x02) // the last record's delimiter
	return gcm.Seal(out, nonce, padded, nil), nil
}

// vapidHeader is the Authorization header for endpoint (RFC 8292 §3).
func (p *Pairing) vapidHeader(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	sub := p.opts.VAPIDSubject
	if sub == "" {
		sub = "mailto:fangd@localhost"
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"aud": u.Scheme + "://" + u.Host,
		"exp": p.opts.Now().Add(vapidTTL).Unix(), "sub": sub})
	signed, err := tok.SignedString(p.vapid)
	if err != nil {
		return "", err
	}
	return "vapid t=" + signed + ", k=" + p.VAPIDPublicKey(), nil
}

// urgency maps ntfy's 1-5 priority onto RFC 8030's Urgency.
func urgency(prio int) string {
	switch {
	case prio >= 4:
		return "high"
	case prio == 1:
		return "very-low"
	case prio == 2:
		return "low"
	}
	return "normal"
}

// webPushMessage encrypts n for device d: the body and the headers.
func (p *Pairing) webPushMessage(d Device, n *Notification) ([]byte, map[string]string, error) {
	var sub subscription
	err := p.opts.Vault.With(subscriptionName(d.ID), func(raw []byte) error { return json.Unmarshal(raw, &sub) })
	if err != nil {
		return nil, nil, fmt.Errorf("web push subscription: %w", err)
	}
	plain, _ := json.Marshal(map[string]any{"title": n.Title, "body": n.Message, "priority": n.Priority,
		"actions": n.Actions, "approval_id": n.ApprovalID})
	body, err := encryptWebPush(sub, plain)
	if err != nil {
		return nil, nil, err
	}
	auth, err := p.vapidHeader(d.Push.URL)
	if err != nil {
		return nil, nil, err
	}
	prio := n.Priority
	if prio == 0 {
		prio = 3
	}
	return body, map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "aes128gcm",
		"TTL": "86400", "Urgency": urgency(prio), "Authorization": auth}, nil
}
