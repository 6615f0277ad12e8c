package ofp

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func node(id string, seed byte, secret string) *Config {
	return &Config{Identity: Identity{NodeID: id, NodeName: "node-" + id[:4], Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))},
		SharedSecret: secret, Pins: &MemoryPins{}, Replay: &MemoryReplay{},
		Agents: func() []RemoteAgent { return []RemoteAgent{{ID: "a-" + id[:4], Name: "agent-" + id[:4]}} }}
}

type result struct {
	s   *Session
	err error
}

// handshake runs both sides over an in-memory connection.
func handshake(t *testing.T, ini, resp *Config, recipient string) (result, result) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan result, 1)
	go func() {
		s, err := Respond(b, resp)
		if err != nil {
			b.Close()
		}
		done <- result{s, err}
	}()
	s, err := Initiate(a, ini, recipient)
	a.Close()
	return result{s, err}, <-done
}

const (
	idA = "11111111-1111-4111-8111-111111111111"
	idB = "22222222-2222-4222-8222-222222222222"
)

func TestHandshakeAgreesOnAKeyBothWays(t *testing.T) {
	for _, recipient := range []string{idB, ""} { // known peer, and a bootstrap dial
		a, b := node(idA, 1, "s3cret"), node(idB, 2, "s3cret")
		ri, rr := handshake(t, a, b, recipient)
		if ri.err != nil || rr.err != nil {
			t.Fatalf("recipient %q: %v / %v", recipient, ri.err, rr.err)
		}
		if ri.s.Key != rr.s.Key || len(ri.s.Key) != 64 || ri.s.Mode != "ecdh" || rr.s.Mode != "ecdh" {
			t.Fatalf("keys %s / %s modes %s / %s", ri.s.Key, rr.s.Key, ri.s.Mode, rr.s.Mode)
		}
		if ri.s.PeerID != idB || rr.s.PeerID != idA || ri.s.PeerAgents[0].Name != "agent-2222" || rr.s.PeerPublicKey != PublicKeyB64(a.Key) {
			t.Fatalf("sessions %+v / %+v", ri.s, rr.s)
		}
	}
}

// A node without the key exchange gets the legacy key from both sides.
func TestHandshakeLegacyFallback(t *testing.T) {
	a, b := node(idA, 1, "s3cret"), node(idB, 2, "s3cret")
	a.Legacy = true
	ri, rr := handshake(t, a, b, idB)
	if ri.err != nil || rr.err != nil || ri.s.Mode != "legacy" || rr.s.Mode != "legacy" || ri.s.Key != rr.s.Key {
		t.Fatalf("%+v %v / %+v %v", ri.s, ri.err, rr.s, rr.err)
	}
}

// TLS is agreed only when both sides offer it; both then say so, and a
// side that does not offer (LibreFang) sees no offer in the ack.
func TestHandshakeNegotiatesTLS(t *testing.T) {
	for _, c := range []struct{ ini, resp, want bool }{{true, true, true}, {true, false, false}, {false, true, false}, {false, false, false}} {
		a, b := node(idA, 1, "s3cret"), node(idB, 2, "s3cret")
		a.OfferTLS, b.OfferTLS = c.ini, c.resp
		ri, rr := handshake(t, a, b, idB)
		if ri.err != nil || rr.err != nil || ri.s.TLS != c.want || rr.s.TLS != c.want {
			t.Fatalf("offers %v/%v: %+v %v / %+v %v", c.ini, c.resp, ri.s, ri.err, rr.s, rr.err)
		}
	}
}

func wantRefusal(t *testing.T, what string, r result, code int32) {
	t.Helper()
	var he *HandshakeError
	if !errors.As(r.err, &he) || he.Code != code {
		t.Fatalf("%s: %v, want a %d refusal", what, r.err, code)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	// A wrong shared secret: the responder refuses with 403 and says so.
	ri, rr := handshake(t, node(idA, 1, "wrong"), node(idB, 2, "s3cret"), idB)
	wantRefusal(t, "wrong secret (initiator)", ri, CodeForbidden)
	wantRefusal(t, "wrong secret (responder)", rr, CodeForbidden)

	// A swapped identity key for a pinned node id.
	b := node(idB, 2, "s3cret")
	if ri, rr = handshake(t, node(idA, 1, "s3cret"), b, idB); ri.err != nil || rr.err != nil {
		t.Fatal(ri.err, rr.err)
	}
	ri, rr = handshake(t, node(idA, 9, "s3cret"), b, idB)
	wantRefusal(t, "swapped key", ri, CodeForbidden)
	if !strings.Contains(rr.err.Error(), "different identity key") {
		t.Fatalf("swapped key: %v", rr.err)
	}
	// Dropping the identity after being pinned.
	anon := node(idA, 1, "s3cret")
	anon.Key = nil
	ri, _ = handshake(t, anon, b, idB)
	wantRefusal(t, "no identity after a pin", ri, CodeForbidden)

	// The initiator checks the responder too: another node answering.
	ri, _ = handshake(t, node(idA, 1, "s3cret"), node(idB, 2, "s3cret"), "33333333-3333-4333-8333-333333333333")
	wantRefusal(t, "wrong node answered", ri, CodeForbidden)
}

// sendRaw writes one frame to a fresh responder and returns its answer.
func sendRaw(t *testing.T, resp *Config, frame []byte) (*Message, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	errc := make(chan error, 1)
	go func() { _, err := Respond(b, resp); b.Close(); errc <- err }()
	if err := WriteFrame(a, frame); err != nil {
		t.Fatal(err)
	}
	raw, rerr := ReadFrame(a, MaxHandshakeFrame)
	err := <-errc
	if rerr != nil {
		return nil, err
	}
	m, derr := Decode(raw)
	if derr != nil {
		t.Fatal(derr)
	}
	return m, err
}

func errorCode(t *testing.T, m *Message) int32 {
	t.Helper()
	var e ErrorBody
	if m == nil || !m.Is(TypeResponse, MethodError) || m.Body(&e) != nil {
		t.Fatalf("not an error response: %+v", m)
	}
	return e.Code
}

func TestResponderRefusesReplaysStrangersAndOtherVersions(t *testing.T) {
	a, b := node(idA, 1, "s3cret"), node(idB, 2, "s3cret")
	eph, _ := NewEphemeral(bytes.NewReader(bytes.Repeat([]byte{7}, 32)))
	hello, _ := Encode("h1", TypeRequest, MethodHandshake, a.hello("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", idB, eph))
	if m, err := sendRaw(t, b, hello); err != nil || !m.Is(TypeResponse, MethodHandshakeAck) {
		t.Fatalf("first hello: %+v %v", m, err)
	}
	m, _ := sendRaw(t, b, hello)
	if errorCode(t, m) != CodeForbidden || !strings.Contains(string(m.Raw), "replay") {
		t.Fatalf("a replayed hello: %s", m.Raw)
	}
	ping, _ := Encode("p", TypeRequest, MethodPing, nil)
	if m, _ = sendRaw(t, b, ping); errorCode(t, m) != CodeUnauthorized {
		t.Fatalf("ping before the handshake: %s", m.Raw)
	}
	v2 := a.hello("cccccccc-cccc-4ccc-8ccc-cccccccccccc", idB, eph)
	v2.ProtocolVersion = 2
	bad, _ := Encode("h2", TypeRequest, MethodHandshake, v2)
	if m, _ = sendRaw(t, b, bad); errorCode(t, m) != CodeVersion {
		t.Fatalf("version 2: %s", m.Raw)
	}
	tampered := a.hello("dddddddd-dddd-4ddd-8ddd-dddddddddddd", idB, eph)
	tampered.NodeName = "evil" // not covered by the MAC: fine; the signature covers nonce|ids|ephemeral
	tampered.EphemeralPubkey = b64.EncodeToString(bytes.Repeat([]byte{9}, 32))
	bad, _ = Encode("h3", TypeRequest, MethodHandshake, tampered)
	if m, _ = sendRaw(t, b, bad); errorCode(t, m) != CodeForbidden {
		t.Fatalf("a swapped ephemeral key: %s", m.Raw)
	}
}

// A stranger that opens a connection and says nothing is dropped after
// HandshakeTimeout; an oversize first frame is refused from its length.
func TestResponderDropsStallsAndOversizeFrames(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the handshake timeout")
	}
	a, b := net.Pipe()
	defer a.Close()
	done := make(chan error, 1)
	go func() { _, err := Respond(b, node(idB, 2, "s3cret")); done <- err }()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a stall ended with %v", err)
		}
	case <-time.After(HandshakeTimeout + 20*time.Second): // bounds a hang only
		t.Fatal("a stalled handshake was never dropped")
	}
	a2, b2 := net.Pipe()
	defer a2.Close()
	go func() { _, err := Respond(b2, node(idB, 2, "s3cret")); b2.Close(); done <- err }()
	a2.Write([]byte{0, 1, 0, 1}) // a length of 64 KiB + 1, and no body
	if err := <-done; !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize first frame: %v", err)
	}
}

func TestReplayWindowForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &MemoryReplay{Now: func() time.Time { return now }}
	if r.Seen("n") || !r.Seen("n") {
		t.Fatal("a nonce is not remembered")
	}
	now = now.Add(ReplayWindow + time.Second)
	if r.Seen("n") {
		t.Fatal("a nonce is remembered past the window")
	}
}
