// Package peer is fangd's OFP peer network: a supervisor that keeps the
// peer registry, listens for inbound links and dials the bootstrap peers,
// and one supervised actor per peer node that owns that node's
// connections (keepalive, reconnect, request ids, per-peer limits). The
// wire protocol itself is transport/ofp; see docs/ofp.md.
package peer

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/transport/ofp"
)

// Link states, as GET /api/peers reports them.
const (
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
)

// Local is this node's side of cross-node messaging: the agents peers may
// discover and the one turn an inbound agent_message runs. cmd/fangd
// fills it with the agent runtime.
type Local interface {
	// Agents lists the local agents as peers see them.
	Agents(ctx context.Context) ([]ofp.RemoteAgent, error)
	// Turn runs one turn of agent (id or name) with message from sender
	// (a peer-qualified name) and returns the reply and the LLM tokens it
	// used.
	Turn(ctx context.Context, agent, message, sender string) (text string, tokens uint64, err error)
}

// Options configure the network. Zero limits mean none.
type Options struct {
	Identity     ofp.Identity
	SharedSecret string
	// Listen is the host:port inbound links are accepted on (port 0: any).
	Listen string
	// Bootstrap are host:port addresses dialled at start and redialled
	// with backoff until they answer.
	Bootstrap            []string
	MaxPeers             int
	MaxMessagesPerMinute int
	MaxTokensPerHour     uint64
	// MaxConcurrent bounds the inbound agent turns one peer may have
	// running at once.
	MaxConcurrent int
	Keepalive     time.Duration
	// ReconnectInitial and ReconnectMax pace redials of a lost link
	// (doubling, jittered, capped).
	ReconnectInitial, ReconnectMax time.Duration
	// EncryptLinks offers TLS 1.3 to peers in the handshake; links with
	// fangd peers that offer it too are encrypted (LibreFang peers never
	// offer it and stay in their plaintext + HMAC mode).
	EncryptLinks bool
	// RequireEncryption refuses every link that is not encrypted, and with
	// it every LibreFang peer.
	RequireEncryption bool
	// TurnTimeout bounds one inbound or outbound agent turn.
	TurnTimeout time.Duration
	Pins        *Pins
	Local       Local
	Audit       *audit.Log
	Log         zerolog.Logger
}

// AgentRef is a remote agent as a peer listing shows it.
type AgentRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// PeerInfo is one peer node: the seed's fields (node_id, address, state,
// authenticated, last_seen), LibreFang's (node_name, agents,
// connected_at, protocol_version) and fangd's counters and link mode.
type PeerInfo struct {
	NodeID          string     `json:"node_id"`
	NodeName        string     `json:"node_name"`
	Address         string     `json:"address"`
	State           string     `json:"state"`
	Authenticated   bool       `json:"authenticated"`
	LastSeen        string     `json:"last_seen"`
	Agents          []AgentRef `json:"agents"`
	ConnectedAt     string     `json:"connected_at"`
	ProtocolVersion int        `json:"protocol_version"`
	// LinkMode is how the link is protected: LibreFang's plaintext frames
	// with a per-frame HMAC under a session key, derived by X25519 + HKDF
	// ("ofp-hmac/ecdh") or, with peers predating the key exchange, from
	// the shared secret ("ofp-hmac/legacy"); "tls1.3+" in front when the
	// link runs inside TLS 1.3 (fangd peers that both offered it).
	LinkMode    string `json:"link_mode"`
	Links       int    `json:"links"`
	Fingerprint string `json:"identity_fingerprint"`
	Dialable    bool   `json:"reconnects"`
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`

	// full agent records, for discovery and topology (not listed).
	remote []ofp.RemoteAgent
}

// Remote is an agent of a peer node.
type Remote struct {
	NodeID   string
	NodeName string
	Agent    ofp.RemoteAgent
	// Connected is the state of the node's link.
	Connected bool
}

// Counters are messages and bytes in and out.
type Counters struct {
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
}

// Rates are Counters per second over the last minute (or since start).
type Rates struct {
	MessagesInPerSec  float64 `json:"messages_in_per_sec"`
	MessagesOutPerSec float64 `json:"messages_out_per_sec"`
	BytesInPerSec     float64 `json:"bytes_in_per_sec"`
	BytesOutPerSec    float64 `json:"bytes_out_per_sec"`
}

// AgentReply is a remote agent's answer to one message.
type AgentReply struct {
	Text     string
	NodeID   string
	NodeName string
}

// request is an outbound OFP request for a peer actor: send it on the
// link and answer the asker with the response (*ofp.Message) or an error.
type request struct {
	method string
	body   any
}
