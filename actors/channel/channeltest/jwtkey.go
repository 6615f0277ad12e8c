package channeltest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// SigningKey is a platform's RS256 token-signing key and its key id, as
// the fakes of platforms that sign what they push to fangd (Google Chat,
// Teams) publish it in their JWK set and sign with it.
type SigningKey struct {
	Key *rsa.PrivateKey
	Kid string
}

// NewSigningKey makes a fresh 2048-bit key named kid.
func NewSigningKey(kid string) SigningKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return SigningKey{Key: k, Kid: kid}
}

// JWK is the public key as an entry of a JWK set ("kty", "use", "kid",
// "n", "e"), with the platform's own fields in extra.
func (k SigningKey) JWK(extra map[string]any) map[string]any {
	pub := k.Key.PublicKey
	jwk := map[string]any{"kty": "RSA", "use": "sig", "kid": k.Kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
	for name, v := range extra {
		jwk[name] = v
	}
	return jwk
}

// Sign is an RS256 JWT of claims whose header names this key. (A forgery:
// NewSigningKey with the published key's kid, so the token names a known
// key that does not verify it.)
func (k SigningKey) Sign(claims jwt.MapClaims) string {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = k.Kid
	signed, err := t.SignedString(k.Key)
	if err != nil {
		panic(err)
	}
	return signed
}
