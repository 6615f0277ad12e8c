package ofp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ProtocolVersion is the only version LibreFang speaks.
const ProtocolVersion = 1

// Envelope types.
const (
	TypeRequest      = "request"
	TypeResponse     = "response"
	TypeNotification = "notification"
)

// Request methods, response methods and notification events.
const (
	MethodHandshake     = "handshake"
	MethodDiscover      = "discover"
	MethodAgentMessage  = "agent_message"
	MethodPing          = "ping"
	MethodHandshakeAck  = "handshake_ack"
	MethodDiscoverRes   = "discover_result"
	MethodAgentResponse = "agent_response"
	MethodPong          = "pong"
	MethodError         = "error"
	EventAgentSpawned   = "agent_spawned"
	EventAgentTerm      = "agent_terminated"
	EventShuttingDown   = "shutting_down"
)

// Error codes of an error response, LibreFang's.
const (
	CodeVersion      = 1
	CodeBadRequest   = 400
	CodeUnauthorized = 401
	CodeForbidden    = 403
	CodeTooLarge     = 413
	CodeRateLimited  = 429
	CodeInternal     = 500
)

// Message is a decoded frame: the envelope fields, and the whole object
// for the variant's fields (they sit at the same level). A type, method
// or event this node does not know is kept as is and ignored by callers
// (forward compatibility, as LibreFang does).
type Message struct {
	ID   string
	Type string
	// Name is the method (requests, responses) or event (notifications).
	Name string
	Raw  []byte
}

// ErrMalformed is a frame that is not an OFP message.
var ErrMalformed = errors.New("ofp: malformed message")

// Decode reads the envelope. Only JSON that is not an object, or lacks a
// string id, is an error; unknown types and names are not.
func Decode(b []byte) (*Message, error) {
	var h struct {
		ID     *string `json:"id"`
		Type   string  `json:"type"`
		Method string  `json:"method"`
		Event  string  `json:"event"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if h.ID == nil {
		return nil, fmt.Errorf("%w: no id", ErrMalformed)
	}
	m := &Message{ID: *h.ID, Type: h.Type, Name: h.Method, Raw: b}
	if h.Type == TypeNotification {
		m.Name = h.Event
	}
	return m, nil
}

// Is reports whether m is of type typ with method or event name.
func (m *Message) Is(typ, name string) bool { return m.Type == typ && m.Name == name }

// Body decodes the variant's fields into v.
func (m *Message) Body(v any) error {
	if err := json.Unmarshal(m.Raw, v); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformed, m.Type, m.Name, err)
	}
	return nil
}

// Encode builds a message: {"id", "type", "method"|"event", ...body}.
// body is a struct of the variant's fields (nil for none).
func Encode(id, typ, name string, body any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"id":`)
	writeString(&buf, id)
	buf.WriteString(`,"type":`)
	writeString(&buf, typ)
	if typ == TypeNotification {
		buf.WriteString(`,"event":`)
	} else {
		buf.WriteString(`,"method":`)
	}
	writeString(&buf, name)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		if len(b) < 2 || b[0] != '{' {
			return nil, fmt.Errorf("ofp: a message body must be a JSON object, got %.20s", b)
		}
		if len(b) > 2 {
			buf.WriteByte(',')
			buf.Write(b[1 : len(b)-1])
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func writeString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// RemoteAgent is an agent as peers describe theirs.
type RemoteAgent struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Tools       []string `json:"tools"`
	State       string   `json:"state"`
}

// Handshake is the handshake request and the handshake_ack response.
type Handshake struct {
	NodeID            string        `json:"node_id"`
	NodeName          string        `json:"node_name"`
	ProtocolVersion   uint32        `json:"protocol_version"`
	Agents            []RemoteAgent `json:"agents"`
	Nonce             string        `json:"nonce"`
	AuthHMAC          string        `json:"auth_hmac"`
	PublicKey         string        `json:"public_key,omitempty"`
	IdentitySignature string        `json:"identity_signature,omitempty"`
	EphemeralPubkey   string        `json:"ephemeral_pubkey,omitempty"`
	// LinkEncryption is fangd's offer to continue the link inside TLS 1.3
	// ("tls13"); LibreFang ignores the unknown field and never offers it,
	// so its links stay in its plaintext + HMAC mode.
	LinkEncryption string `json:"fangd_link_encryption,omitempty"`
}

// OfferTLS13 is the LinkEncryption value fangd sends.
const OfferTLS13 = "tls13"

// Discover asks for the agents matching a query (name, description, tags).
type Discover struct {
	Query string `json:"query"`
}

// DiscoverResult answers Discover.
type DiscoverResult struct {
	Agents []RemoteAgent `json:"agents"`
}

// AgentMessage asks a peer's agent (id or name) for one turn. Sender is
// null when not given, as LibreFang writes it.
type AgentMessage struct {
	Agent   string  `json:"agent"`
	Message string  `json:"message"`
	Sender  *string `json:"sender"`
}

// AgentResponse answers AgentMessage.
type AgentResponse struct {
	Text string `json:"text"`
}

// Pong answers ping.
type Pong struct {
	UptimeSecs uint64 `json:"uptime_secs"`
}

// ErrorBody is an error response.
type ErrorBody struct {
	Code    int32  `json:"code"`
	Message string `json:"message"`
}

// AgentSpawned tells peers of a new agent.
type AgentSpawned struct {
	Agent RemoteAgent `json:"agent"`
}

// AgentTerminated tells peers an agent is gone.
type AgentTerminated struct {
	AgentID string `json:"agent_id"`
}

// LibreFang's lists are required arrays: null would be refused, so nil
// slices go out as [].

func (a RemoteAgent) MarshalJSON() ([]byte, error) {
	type plain RemoteAgent
	a.Tags, a.Tools = orEmpty(a.Tags), orEmpty(a.Tools)
	return json.Marshal(plain(a))
}

func (h Handshake) MarshalJSON() ([]byte, error) {
	type plain Handshake
	if h.Agents == nil {
		h.Agents = []RemoteAgent{}
	}
	return json.Marshal(plain(h))
}

func (d DiscoverResult) MarshalJSON() ([]byte, error) {
	type plain DiscoverResult
	if d.Agents == nil {
		d.Agents = []RemoteAgent{}
	}
	return json.Marshal(plain(d))
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
