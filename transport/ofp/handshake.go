package ofp

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// The handshake's recipe (LibreFang HEAD, crates/librefang-wire/src/
// {peer,kex,keys}.rs). Base64 is the standard alphabet with padding
// everywhere; hex is lowercase.

// SessionKeyInfo is the HKDF info string of the ECDH session key.
const SessionKeyInfo = "librefang-ofp/v1/session-key"

var b64 = base64.StdEncoding

// AuthData is what a handshake's HMAC and identity signature cover:
// "nonce|sender|recipient". A bootstrap dial, which does not know the
// peer's id yet, uses "" as recipient.
func AuthData(nonce, sender, recipient string) string {
	return nonce + "|" + sender + "|" + recipient
}

// AuthHMAC is hex(HMAC-SHA256(shared secret, data)).
func AuthHMAC(sharedSecret, data string) string {
	m := hmac.New(sha256.New, []byte(sharedSecret))
	m.Write([]byte(data))
	return hex.EncodeToString(m.Sum(nil))
}

// VerifyAuthHMAC checks a handshake HMAC in constant time.
func VerifyAuthHMAC(sharedSecret, data, macHex string) bool {
	return hmac.Equal([]byte(AuthHMAC(sharedSecret, data)), []byte(macHex))
}

// SigningScope is what the identity signature covers: the auth data, then
// "|" and the ephemeral X25519 key (base64) when one is sent, so the
// ephemeral key is bound to the node's identity.
func SigningScope(authData, ephemeralB64 string) []byte {
	if ephemeralB64 == "" {
		return []byte(authData)
	}
	return []byte(authData + "|" + ephemeralB64)
}

// Sign is the identity signature, base64.
func Sign(key ed25519.PrivateKey, authData, ephemeralB64 string) string {
	return b64.EncodeToString(ed25519.Sign(key, SigningScope(authData, ephemeralB64)))
}

// ErrBadIdentity is a public key or signature that does not verify.
var ErrBadIdentity = errors.New("ofp: identity signature does not verify")

// VerifySignature checks an identity signature against a base64 public key.
func VerifySignature(publicKeyB64, signatureB64, authData, ephemeralB64 string) error {
	pub, err := b64.DecodeString(publicKeyB64)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is not 32 bytes of base64", ErrBadIdentity)
	}
	sig, err := b64.DecodeString(signatureB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not 64 bytes of base64", ErrBadIdentity)
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), SigningScope(authData, ephemeralB64), sig) {
		return ErrBadIdentity
	}
	return nil
}

// PublicKeyB64 is a node's identity key as the handshake carries it.
func PublicKeyB64(key ed25519.PrivateKey) string {
	return b64.EncodeToString(key.Public().(ed25519.PublicKey))
}

// Fingerprint is hex(SHA-256(public key base64 text)), LibreFang's.
func Fingerprint(publicKeyB64 string) string {
	sum := sha256.Sum256([]byte(publicKeyB64))
	return hex.EncodeToString(sum[:])
}

// Ephemeral is one handshake's X25519 key.
type Ephemeral struct {
	key *ecdh.PrivateKey
	// PublicB64 is the public key as the handshake carries it.
	PublicB64 string
}

// NewEphemeral makes a fresh X25519 key from rand (crypto/rand.Reader in
// production; fixed bytes in test vectors).
func NewEphemeral(rand io.Reader) (*Ephemeral, error) {
	var seed [32]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, err
	}
	key, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		return nil, err
	}
	return &Ephemeral{key: key, PublicB64: b64.EncodeToString(key.PublicKey().Bytes())}, nil
}

// ErrBadEphemeral is a peer ephemeral key that is malformed or of low
// order (an all-zero shared secret).
var ErrBadEphemeral = errors.New("ofp: unusable ephemeral key")

// SessionKey derives the session key from both ephemeral keys:
// HKDF-SHA256(salt = initiator nonce "|" responder nonce, IKM = X25519
// shared secret, info = SessionKeyInfo), 32 bytes, as lowercase hex.
func (e *Ephemeral) SessionKey(remoteB64, initiatorNonce, responderNonce string) (string, error) {
	raw, err := b64.DecodeString(remoteB64)
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("%w: not 32 bytes of base64", ErrBadEphemeral)
	}
	remote, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadEphemeral, err)
	}
	shared, err := e.key.ECDH(remote) // refuses an all-zero result
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadEphemeral, err)
	}
	okm, err := hkdf.Key(sha256.New, shared, []byte(initiatorNonce+"|"+responderNonce), SessionKeyInfo, 32)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(okm), nil
}

// LegacySessionKey is the session key of peers that send no ephemeral
// key: hex(HMAC-SHA256(shared secret, initiator nonce + responder nonce)).
func LegacySessionKey(sharedSecret, initiatorNonce, responderNonce string) string {
	return AuthHMAC(sharedSecret, initiatorNonce+responderNonce)
}
