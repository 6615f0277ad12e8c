package ofp

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Identity is this node as peers know it.
type Identity struct {
	NodeID, NodeName string
	Key              ed25519.PrivateKey
}

// Pins is trust on first use: Check pins publicKeyB64 to nodeID the first
// time and refuses another key (or none, "") for a pinned id afterwards.
type Pins interface {
	Check(nodeID, publicKeyB64 string) error
}

// Replay remembers handshake nonces: Seen records nonce and reports
// whether it was already recorded within the replay window.
type Replay interface {
	Seen(nonce string) bool
}

// Config is what a handshake needs.
type Config struct {
	Identity
	SharedSecret string
	// Agents lists this node's agents for the peer (nil: none).
	Agents func() []RemoteAgent
	Pins   Pins
	Replay Replay
	// Rand replaces crypto/rand (tests).
	Rand io.Reader
	// Legacy sends no ephemeral key, as nodes before LibreFang's key
	// exchange do (tests of the fallback).
	Legacy bool
	// OfferTLS offers to continue the link inside TLS 1.3 (fangd peers
	// only; Session.TLS says whether both sides offered).
	OfferTLS bool
}

// Session is the outcome of a handshake.
type Session struct {
	PeerID, PeerName string
	PeerAgents       []RemoteAgent
	// PeerPublicKey is the peer's Ed25519 identity (base64), "" for a
	// peer that sent none.
	PeerPublicKey string
	// Key is the hex session key every later frame is MACed with.
	Key string
	// Mode is "ecdh" (X25519 + HKDF) or "legacy" (HMAC of the nonces).
	Mode string
	// TLS: both sides offered TLS 1.3, so the link continues inside it
	// (the caller wraps the connection; the frames keep their MAC).
	TLS bool
}

// HandshakeError is a refusal with LibreFang's error code, sent to the
// peer as an error response or received from it.
type HandshakeError struct {
	Code    int32
	Message string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("ofp handshake refused (%d): %s", e.Code, e.Message)
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Config) hello(nonce, recipient string, eph *Ephemeral) Handshake {
	h := Handshake{NodeID: c.NodeID, NodeName: c.NodeName, ProtocolVersion: ProtocolVersion, Nonce: nonce}
	if c.Agents != nil {
		h.Agents = c.Agents()
	}
	auth := AuthData(nonce, c.NodeID, recipient)
	h.AuthHMAC = AuthHMAC(c.SharedSecret, auth)
	if eph != nil {
		h.EphemeralPubkey = eph.PublicB64
	}
	if c.OfferTLS {
		h.LinkEncryption = OfferTLS13
	}
	if c.Key != nil {
		h.PublicKey = PublicKeyB64(c.Key)
		h.IdentitySignature = Sign(c.Key, auth, h.EphemeralPubkey)
	}
	return h
}

// checkIdentity verifies the peer's signature over auth and pins its key.
func (c *Config) checkIdentity(h *Handshake, auth string) *HandshakeError {
	if h.PublicKey != "" {
		if err := VerifySignature(h.PublicKey, h.IdentitySignature, auth, h.EphemeralPubkey); err != nil {
			return &HandshakeError{CodeForbidden, "identity signature verification failed"}
		}
	}
	if c.Pins != nil {
		if err := c.Pins.Check(h.NodeID, h.PublicKey); err != nil {
			return &HandshakeError{CodeForbidden, err.Error()}
		}
	}
	if c.Replay != nil && c.Replay.Seen(h.Nonce) {
		return &HandshakeError{CodeForbidden, "Nonce replay rejected"}
	}
	return nil
}

func (c *Config) newNonceAndEphemeral() (string, *Ephemeral, error) {
	nonce, err := uuid.NewRandomFromReader(c.rand())
	if err != nil {
		return "", nil, err
	}
	if c.Legacy {
		return nonce.String(), nil, nil
	}
	eph, err := NewEphemeral(c.rand())
	return nonce.String(), eph, err
}

// sessionKey picks ECDH when both sides sent an ephemeral key, else the
// legacy derivation.
func (c *Config) sessionKey(eph *Ephemeral, remoteEph, nonceI, nonceR string) (string, string, error) {
	if eph != nil && remoteEph != "" {
		k, err := eph.SessionKey(remoteEph, nonceI, nonceR)
		if err != nil {
			return "", "", &HandshakeError{CodeForbidden, err.Error()}
		}
		return k, "ecdh", nil
	}
	return LegacySessionKey(c.SharedSecret, nonceI, nonceR), "legacy", nil
}

// Initiate runs the handshake as the dialing side. recipient is the
// peer's node id, or "" for a bootstrap dial that does not know it yet.
func Initiate(conn net.Conn, c *Config, recipient string) (*Session, error) {
	nonceI, eph, err := c.newNonceAndEphemeral()
	if err != nil {
		return nil, err
	}
	hello := c.hello(nonceI, recipient, eph)
	if err := writeMessage(conn, uuid.NewString(), TypeRequest, MethodHandshake, hello); err != nil {
		return nil, err
	}
	m, err := readHandshakeFrame(conn)
	if err != nil {
		return nil, err
	}
	if m.Is(TypeResponse, MethodError) {
		var e ErrorBody
		m.Body(&e)
		return nil, &HandshakeError{e.Code, e.Message}
	}
	if !m.Is(TypeResponse, MethodHandshakeAck) {
		return nil, fmt.Errorf("ofp: expected handshake_ack, got %s %s", m.Type, m.Name)
	}
	var ack Handshake
	if err := m.Body(&ack); err != nil {
		return nil, err
	}
	if recipient != "" && ack.NodeID != recipient {
		return nil, &HandshakeError{CodeForbidden, fmt.Sprintf("dialled node %s but %s answered", recipient, ack.NodeID)}
	}
	auth := AuthData(ack.Nonce, ack.NodeID, c.NodeID)
	if !VerifyAuthHMAC(c.SharedSecret, auth, ack.AuthHMAC) {
		return nil, &HandshakeError{CodeForbidden, "handshake_ack HMAC authentication failed"}
	}
	if herr := c.checkIdentity(&ack, auth); herr != nil {
		return nil, herr
	}
	key, mode, err := c.sessionKey(eph, ack.EphemeralPubkey, nonceI, ack.Nonce)
	if err != nil {
		return nil, err
	}
	return &Session{PeerID: ack.NodeID, PeerName: ack.NodeName, PeerAgents: ack.Agents, PeerPublicKey: ack.PublicKey, Key: key, Mode: mode,
		TLS: c.OfferTLS && c.Key != nil && ack.LinkEncryption == OfferTLS13 && ack.PublicKey != ""}, nil
}

// Respond runs the handshake as the accepting side: it reads the first
// frame, answers an error response (and returns the error) when it must
// refuse, else the handshake_ack.
func Respond(conn net.Conn, c *Config) (*Session, error) {
	m, err := readHandshakeFrame(conn)
	if err != nil {
		return nil, err
	}
	s, eph, nonceR, hello, herr := c.accept(m)
	if herr != nil {
		writeMessage(conn, m.ID, TypeResponse, MethodError, ErrorBody{Code: herr.Code, Message: herr.Message})
		return nil, herr
	}
	if hello.EphemeralPubkey == "" {
		// A legacy peer gets the handshake it knows: no ephemeral key.
		eph = nil
	}
	ack := c.hello(nonceR, hello.NodeID, eph)
	// TLS is agreed only when the initiator offered it and has an
	// identity key to bind the TLS certificate to.
	s.TLS = c.OfferTLS && c.Key != nil && hello.LinkEncryption == OfferTLS13 && hello.PublicKey != ""
	if !s.TLS {
		ack.LinkEncryption = ""
	}
	if err := writeMessage(conn, m.ID, TypeResponse, MethodHandshakeAck, ack); err != nil {
		return nil, err
	}
	if s.Key, s.Mode, err = c.sessionKey(eph, hello.EphemeralPubkey, hello.Nonce, nonceR); err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Config) accept(m *Message) (*Session, *Ephemeral, string, *Handshake, *HandshakeError) {
	if !m.Is(TypeRequest, MethodHandshake) {
		return nil, nil, "", nil, &HandshakeError{CodeUnauthorized, "Authentication required: complete HMAC handshake first"}
	}
	var h Handshake
	if err := m.Body(&h); err != nil {
		return nil, nil, "", nil, &HandshakeError{CodeBadRequest, "malformed handshake"}
	}
	if h.ProtocolVersion != ProtocolVersion {
		return nil, nil, "", nil, &HandshakeError{CodeVersion, fmt.Sprintf("Unsupported protocol version %d", h.ProtocolVersion)}
	}
	auth := AuthData(h.Nonce, h.NodeID, c.NodeID)
	if !VerifyAuthHMAC(c.SharedSecret, auth, h.AuthHMAC) {
		auth = AuthData(h.Nonce, h.NodeID, "") // a bootstrap dial
		if !VerifyAuthHMAC(c.SharedSecret, auth, h.AuthHMAC) {
			return nil, nil, "", nil, &HandshakeError{CodeForbidden, "HMAC authentication failed"}
		}
	}
	if h.NodeID == "" || h.NodeID == c.NodeID {
		return nil, nil, "", nil, &HandshakeError{CodeForbidden, "bad node id"}
	}
	if herr := c.checkIdentity(&h, auth); herr != nil {
		return nil, nil, "", nil, herr
	}
	nonceR, eph, err := c.newNonceAndEphemeral()
	if err != nil {
		return nil, nil, "", nil, &HandshakeError{CodeInternal, "internal error"}
	}
	return &Session{PeerID: h.NodeID, PeerName: h.NodeName, PeerAgents: h.Agents, PeerPublicKey: h.PublicKey}, eph, nonceR, &h, nil
}

func writeMessage(conn net.Conn, id, typ, name string, body any) error {
	b, err := Encode(id, typ, name, body)
	if err != nil {
		return err
	}
	conn.SetWriteDeadline(time.Now().Add(HandshakeTimeout))
	defer conn.SetWriteDeadline(time.Time{})
	return WriteFrame(conn, b)
}

// readHandshakeFrame reads one handshake-phase frame: at most 64 KiB,
// within HandshakeTimeout, so a stalled or greedy stranger costs little.
func readHandshakeFrame(conn net.Conn) (*Message, error) {
	conn.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	defer conn.SetReadDeadline(time.Time{})
	b, err := ReadFrame(conn, MaxHandshakeFrame)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// MemoryPins is Pins in memory (tests, and the base of a persisted one).
type MemoryPins struct {
	mu   sync.Mutex
	keys map[string]string
}

// Check implements Pins.
func (p *MemoryPins) Check(nodeID, publicKeyB64 string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		p.keys = map[string]string{}
	}
	pinned, ok := p.keys[nodeID]
	switch {
	case !ok && publicKeyB64 != "":
		p.keys[nodeID] = publicKeyB64
	case ok && publicKeyB64 == "":
		return errors.New("node " + nodeID + " is pinned to an identity key but sent none")
	case ok && pinned != publicKeyB64:
		return errors.New("node " + nodeID + " presented a different identity key than the one pinned")
	}
	return nil
}

// ReplayWindow is how long a handshake nonce is remembered.
const ReplayWindow = 5 * time.Minute

// MemoryReplay is Replay in memory, bounded by the window.
type MemoryReplay struct {
	mu   sync.Mutex
	seen map[string]time.Time
	Now  func() time.Time
}

// Seen implements Replay.
func (r *MemoryReplay) Seen(nonce string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	for n, at := range r.seen {
		if now.Sub(at) > ReplayWindow {
			delete(r.seen, n)
		}
	}
	if at, ok := r.seen[nonce]; ok && now.Sub(at) <= ReplayWindow {
		return true
	}
	r.seen[nonce] = now
	return false
}
