package ofp

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// Fixed inputs of the golden vectors (testdata/vectors.py computes the
// expected values with Python's cryptography, not Go's).
var (
	vSecret  = "cluster-secret-for-vectors"
	vNodeI   = "11111111-1111-4111-8111-111111111111"
	vNodeR   = "22222222-2222-4222-8222-222222222222"
	vNonceI  = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	vNonceR  = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	vIDI     = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	vIDR     = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	vEphSeed = func(from byte) []byte {
		b := make([]byte, 32)
		for i := range b {
			b[i] = from + byte(i)
		}
		return b
	}
	golden = map[string]string{
		"public_key_i":        "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=",
		"public_key_r":        "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=",
		"ephemeral_i":         "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8=",
		"ephemeral_r":         "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=",
		"auth_hmac_i":         "329d4ca8e2087623d9d082ad1d632f680740edffa1a3a5f81050d1d1ed2972ff",
		"auth_hmac_bootstrap": "5d830a2fc71b13b561b8dfd41b9efb9274d159b608dda56d5148a62015a481f8",
		"auth_hmac_r":         "167e45654161a2437a87caa69b415e47aa3670fe865e228f6597514457e1fb3e",
		"signature_i":         "Jlo/Zsab4qEOBK/6m+L6FDcblGD8WAR+2YgE8zt0lwdrxcisKUicGDOwh60UxK5PgNVYKqirBtMx+I48uAJ8CA==",
		"signature_i_legacy":  "6r6qIbk1iFZx+h+A3GaizU06lZoWk38nZooBmm9WymG/7JkoHR8UxdPPnGHEPhr2WFb7PqTinfstCIWaiqf2Bw==",
		"signature_r":         "1xnx+n+fmNOZo6YB5A4aJJQMCw7Ge1rtiHT+AJvFQqNuAteIXHc5pxm0hxz0BOg4LB2byIi/DUqpduTlyqxyDA==",
		"session_key":         "52cb99170a99a7a18d196356225baf90ae1351c0e99aa82dd898cc6b09dd57e1",
		"legacy_session_key":  "d28029778849b1aa6f0a3e33443a56f38c655585ce264a574f708f318d0aeca2",
		"fingerprint_i":       "22a94de7fafab8d3c51d73701c23f3846fd8ff954c5976d7117ca1f642e9f624",
		"ping_mac":            "5f7af2d98bf19d4a680d6e64cb96b720a6766a85df6aa6d54b976f6e3a93b351",
	}
)

const vPing = `{"id":"x","type":"request","method":"ping"}`

func vEphemerals(t *testing.T) (*Ephemeral, *Ephemeral) {
	t.Helper()
	ei, err := NewEphemeral(bytes.NewReader(vEphSeed(0)))
	if err != nil {
		t.Fatal(err)
	}
	er, err := NewEphemeral(bytes.NewReader(vEphSeed(32)))
	if err != nil {
		t.Fatal(err)
	}
	return ei, er
}

// The production recipe gives the bytes an independent implementation
// (OpenSSL through Python) computed, so a LibreFang node derives the same.
func TestHandshakeGoldenVectors(t *testing.T) {
	ei, er := vEphemerals(t)
	authI, authR := AuthData(vNonceI, vNodeI, vNodeR), AuthData(vNonceR, vNodeR, vNodeI)
	kI, err := ei.SessionKey(er.PublicB64, vNonceI, vNonceR)
	if err != nil {
		t.Fatal(err)
	}
	kR, err := er.SessionKey(ei.PublicB64, vNonceI, vNonceR)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"public_key_i":        PublicKeyB64(vIDI),
		"public_key_r":        PublicKeyB64(vIDR),
		"ephemeral_i":         ei.PublicB64,
		"ephemeral_r":         er.PublicB64,
		"auth_hmac_i":         AuthHMAC(vSecret, authI),
		"auth_hmac_bootstrap": AuthHMAC(vSecret, AuthData(vNonceI, vNodeI, "")),
		"auth_hmac_r":         AuthHMAC(vSecret, authR),
		"signature_i":         Sign(vIDI, authI, ei.PublicB64),
		"signature_i_legacy":  Sign(vIDI, authI, ""),
		"signature_r":         Sign(vIDR, authR, er.PublicB64),
		"session_key":         kI,
		"legacy_session_key":  LegacySessionKey(vSecret, vNonceI, vNonceR),
		"fingerprint_i":       Fingerprint(PublicKeyB64(vIDI)),
		"ping_mac":            MAC(kI, []byte(vPing)),
	}
	for k, want := range golden {
		if got[k] != want {
			t.Errorf("%s = %s, want %s", k, got[k], want)
		}
	}
	if kR != kI {
		t.Fatalf("the two sides derive different keys: %s and %s", kI, kR)
	}
	if err := VerifySignature(golden["public_key_i"], golden["signature_i"], authI, golden["ephemeral_i"]); err != nil {
		t.Fatalf("the golden signature does not verify: %v", err)
	}
	if VerifySignature(golden["public_key_i"], golden["signature_i"], authI, "") == nil {
		t.Fatal("a signature over auth data + ephemeral verified without the ephemeral")
	}
	if VerifySignature(golden["public_key_r"], golden["signature_i"], authI, golden["ephemeral_i"]) == nil {
		t.Fatal("a signature verified under another node's key")
	}
	if !VerifyAuthHMAC(vSecret, authI, golden["auth_hmac_i"]) || VerifyAuthHMAC("wrong", authI, golden["auth_hmac_i"]) {
		t.Fatal("VerifyAuthHMAC")
	}
}

// A second implementation of the session-key recipe, written here from
// RFC 5869 and RFC 2104 rather than with the production code's calls,
// agrees with the production derivation (and so with the vectors).
func TestSessionKeyAgainstIndependentRecipe(t *testing.T) {
	shared, err := curve25519.X25519(vEphSeed(0), mustPub(t, vEphSeed(32)))
	if err != nil {
		t.Fatal(err)
	}
	hmacSHA256 := func(key, msg []byte) []byte { // RFC 2104 by hand
		if len(key) > 64 {
			s := sha256.Sum256(key)
			key = s[:]
		}
		k := make([]byte, 64)
		copy(k, key)
		ipad, opad := make([]byte, 64), make([]byte, 64)
		for i := range k {
			ipad[i], opad[i] = k[i]^0x36, k[i]^0x5c
		}
		inner := sha256.Sum256(append(ipad, msg...))
		outer := sha256.Sum256(append(opad, inner[:]...))
		return outer[:]
	}
	prk := hmacSHA256([]byte(vNonceI+"|"+vNonceR), shared)            // extract
	okm := hmacSHA256(prk, append([]byte(SessionKeyInfo), 0x01))      // expand, one block is 32 bytes
	legacy := hmacSHA256([]byte(vSecret), []byte(vNonceI+vNonceR))    // legacy fallback
	mac := hmacSHA256([]byte(hex.EncodeToString(okm)), []byte(vPing)) // frame MAC keyed by the hex text
	if hex.EncodeToString(okm) != golden["session_key"] || hex.EncodeToString(legacy) != golden["legacy_session_key"] || hex.EncodeToString(mac) != golden["ping_mac"] {
		t.Fatalf("independent recipe: session %x legacy %x mac %x", okm, legacy, mac)
	}
}

func mustPub(t *testing.T, scalar []byte) []byte {
	t.Helper()
	p, err := curve25519.X25519(scalar, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A low-order peer key (all-zero shared secret) and malformed keys are
// refused, never turned into a predictable session key.
func TestSessionKeyRefusesBadEphemerals(t *testing.T) {
	ei, _ := vEphemerals(t)
	for name, remote := range map[string]string{
		"zero point": b64.EncodeToString(make([]byte, 32)),
		"short":      b64.EncodeToString(make([]byte, 31)),
		"not base64": "%%%",
	} {
		if _, err := ei.SessionKey(remote, vNonceI, vNonceR); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
