package peer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"time"

	"github.com/fangd/fangd/transport/ofp"
)

// Links between fangd nodes continue inside TLS 1.3 once the OFP
// handshake has agreed it (ofp.Session.TLS): each side presents a
// self-signed certificate of its Ed25519 node identity, and each checks
// that the peer's certificate key is the identity key the handshake
// verified and pinned. No certificate authority is involved; the pins are
// the trust. Frames keep their HMAC inside TLS, so the OFP layer is
// unchanged. LibreFang never offers TLS and keeps its plaintext mode.

// identityCert is a self-signed certificate for the node's identity key.
func identityCert(id ofp.Identity) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: id.NodeID},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.Key.Public(), id.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.Key}, nil
}

var errCertKey = errors.New("ofp: the peer's TLS certificate is not its pinned identity key")

// secure wraps c in TLS 1.3 (client when this node dialled) and returns
// once the TLS handshake is done and the peer proved its identity key.
func (e *env) secure(c net.Conn, sess *ofp.Session, client bool) (net.Conn, error) {
	want, err := base64.StdEncoding.DecodeString(sess.PeerPublicKey)
	if err != nil || len(want) != ed25519.PublicKeySize {
		return nil, errCertKey
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{e.cert},
		// The chain is not checked against any CA: the pinned identity is
		// the trust anchor, checked below on both sides.
		InsecureSkipVerify: true,
		ClientAuth:         tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errCertKey
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return errCertKey
			}
			pub, ok := cert.PublicKey.(ed25519.PublicKey)
			if !ok || !bytes.Equal(pub, want) {
				return errCertKey
			}
			return nil
		},
	}
	var tc *tls.Conn
	if client {
		tc = tls.Client(c, cfg)
	} else {
		tc = tls.Server(c, cfg)
	}
	tc.SetDeadline(time.Now().Add(ofp.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}
