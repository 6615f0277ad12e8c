package ofp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

const testKey = "52cb99170a99a7a18d196356225baf90ae1351c0e99aa82dd898cc6b09dd57e1"

func TestAuthFrameRoundTripAndLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteAuthFrame(&buf, []byte(vPing), testKey); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	if n := binary.BigEndian.Uint32(raw); int(n) != len(vPing)+64 || len(raw) != 4+int(n) {
		t.Fatalf("length prefix %d for %d bytes", n, len(raw))
	}
	if string(raw[4+len(vPing):]) != golden["ping_mac"] {
		t.Fatalf("MAC %s", raw[4+len(vPing):])
	}
	got, err := ReadAuthFrame(bytes.NewReader(raw), testKey)
	if err != nil || string(got) != vPing {
		t.Fatalf("read back %q %v", got, err)
	}
}

func TestAuthFrameRefusals(t *testing.T) {
	frame := func(payload []byte) []byte {
		var b bytes.Buffer
		WriteAuthFrame(&b, payload, testKey)
		return b.Bytes()
	}
	good := frame([]byte(vPing))
	flipped := append([]byte(nil), good...)
	flipped[10] ^= 1
	wrongKey := append([]byte(nil), good...)
	copy(wrongKey[4+len(vPing):], MAC("other", []byte(vPing)))
	short := make([]byte, 4+65)
	binary.BigEndian.PutUint32(short, 65)
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, MaxFrame+1)
	upper := append([]byte(nil), good...)
	copy(upper[4+len(vPing):], strings.ToUpper(golden["ping_mac"]))
	for name, c := range map[string]struct {
		raw  []byte
		want error
	}{
		"a flipped payload byte": {flipped, ErrBadMAC},
		"another key's MAC":      {wrongKey, ErrBadMAC},
		"uppercase hex":          {upper, ErrBadMAC},
		"shorter than its MAC":   {short, ErrFrameTooShort},
		"over 16 MiB":            {huge, ErrFrameTooLarge},
	} {
		if _, err := ReadAuthFrame(bytes.NewReader(c.raw), testKey); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := ReadAuthFrame(bytes.NewReader(good[:len(good)-1]), testKey); err == nil {
		t.Error("a truncated frame was read")
	}
}

// Before the handshake a frame is at most 64 KiB, refused from its
// length alone (nothing is allocated for it).
func TestHandshakeFrameLimit(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, []byte(`{"id":"1"}`)); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFrame(&b, MaxHandshakeFrame)
	if err != nil || string(got) != `{"id":"1"}` {
		t.Fatalf("%q %v", got, err)
	}
	hdr := make([]byte, 4)
	binary.BigEndian.PutUint32(hdr, MaxHandshakeFrame+1)
	if _, err := ReadFrame(bytes.NewReader(hdr), MaxHandshakeFrame); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize handshake frame: %v", err)
	}
}

func TestEnvelopeEncodeDecode(t *testing.T) {
	sender := "ops"
	b, err := Encode("m1", TypeRequest, MethodAgentMessage, AgentMessage{Agent: "coder", Message: "hi", Sender: &sender})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"id":"m1","type":"request","method":"agent_message","agent":"coder","message":"hi","sender":"ops"}` {
		t.Fatalf("encoded %s", b)
	}
	m, err := Decode(b)
	if err != nil || !m.Is(TypeRequest, MethodAgentMessage) || m.ID != "m1" {
		t.Fatalf("decoded %+v %v", m, err)
	}
	var am AgentMessage
	if err := m.Body(&am); err != nil || am.Agent != "coder" || *am.Sender != "ops" {
		t.Fatalf("body %+v %v", am, err)
	}
	// LibreFang writes a missing sender as null, and requires arrays.
	b, _ = Encode("m2", TypeRequest, MethodAgentMessage, AgentMessage{Agent: "a", Message: "b"})
	if !strings.Contains(string(b), `"sender":null`) {
		t.Fatalf("no null sender: %s", b)
	}
	b, _ = Encode("m3", TypeRequest, MethodHandshake, Handshake{NodeID: "n"})
	if !strings.Contains(string(b), `"agents":[]`) || strings.Contains(string(b), "public_key") {
		t.Fatalf("handshake: %s", b)
	}
	b, _ = Encode("m4", TypeNotification, EventAgentSpawned, AgentSpawned{Agent: RemoteAgent{ID: "x"}})
	if !strings.Contains(string(b), `"event":"agent_spawned"`) || !strings.Contains(string(b), `"tags":[],"tools":[]`) {
		t.Fatalf("notification: %s", b)
	}
	b, _ = Encode("m5", TypeRequest, MethodPing, nil)
	if string(b) != `{"id":"m5","type":"request","method":"ping"}` {
		t.Fatalf("ping: %s", b)
	}
}

// Unknown types, methods and events decode (to be ignored), as
// LibreFang's serde(other) arms do; only non-objects and a missing id
// are malformed.
func TestEnvelopeForwardCompatible(t *testing.T) {
	for _, ok := range []string{
		`{"id":"1","type":"teleport"}`,
		`{"id":"1","type":"request","method":"future_thing","x":1}`,
		`{"id":"1","type":"notification","event":"moon_landing"}`,
	} {
		if _, err := Decode([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{`[]`, `"x"`, `{"type":"request"}`, `{"id":1}`, `{`, ``} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzReadAuthFrame: any bytes either fail or yield a payload whose MAC
// verified; nothing panics or allocates past the limits.
func FuzzReadAuthFrame(f *testing.F) {
	var b bytes.Buffer
	WriteAuthFrame(&b, []byte(vPing), testKey)
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 66})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ReadAuthFrame(bytes.NewReader(raw), testKey)
		if err == nil && MAC(testKey, p) != string(raw[4+len(p):4+len(p)+64]) {
			t.Fatal("accepted a frame whose MAC is not its payload's")
		}
	})
}

// FuzzDecode: the envelope and every variant decoder take any bytes
// without panicking.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{vPing, `{"id":"1","type":"request","method":"handshake","node_id":"n","agents":[{"id":"a","tags":null}]}`,
		`{"id":"1","type":"response","method":"error","code":403,"message":"x"}`, `{"id":"1","type":"notification","event":"agent_spawned","agent":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Decode(raw)
		if err != nil {
			return
		}
		for _, v := range []any{&Handshake{}, &Discover{}, &DiscoverResult{}, &AgentMessage{}, &AgentResponse{}, &Pong{}, &ErrorBody{}, &AgentSpawned{}, &AgentTerminated{}} {
			m.Body(v)
		}
	})
}
