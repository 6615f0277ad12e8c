package comms

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// Peers is the OFP peer network as the comms layer sees it: one turn of
// an agent on another node.
type Peers interface {
	// SendAgent runs one turn of agent (id or name) on node (id or name)
	// with message from sender, and returns its answer and the node that
	// gave it.
	SendAgent(ctx context.Context, node, agent, message, sender string) (PeerReply, error)
}

// PeerReply is a remote agent's answer.
type PeerReply struct {
	Text string
	// AgentID is the remote agent's id when the node announced it, else
	// the reference the message named.
	AgentID  string
	NodeID   string
	NodeName string
}

// RemoteNode is the node that answered a "peer:" message.
type RemoteNode struct {
	NodeID   string `json:"node_id"`
	NodeName string `json:"node_name"`
}

// SetPeers wires the peer network in; call it while wiring the daemon,
// before serving. Without it "peer:" targets answer 503.
func (r *Router) SetPeers(p Peers) { r.peers = p }

// peerTarget parses "peer:<node id or name>/agent:<agent id or name>".
func peerTarget(to string) (node, agent string, err error) {
	rest, _ := strings.CutPrefix(to, "peer:")
	node, agent, ok := strings.Cut(rest, "/agent:")
	if !ok || node == "" || agent == "" || len(node) > 128 || len(agent) > 128 {
		return "", "", kernel.Invalid(`a peer target is "peer:<node id or name>/agent:<agent id or name>"`)
	}
	return node, agent, nil
}

// sendPeer runs a "peer:" message: one turn of the remote agent over OFP.
// It needs no router state (the loop guard counts local agents only), so
// it runs in the caller's goroutine; the route and its outcome go on the
// bus like a local message's.
func (r *Router) sendPeer(ctx context.Context, from, to, content string) (*SendResult, error) {
	node, agent, err := peerTarget(to)
	if err == nil {
		err = CheckContent("content", content)
	}
	if err == nil && len(from) > 256 {
		err = kernel.Invalid(`"from" is longer than 256 characters`)
	}
	if err != nil {
		return nil, err
	}
	if r.peers == nil {
		return nil, kernel.Unavailable("the peer network is off (network_enabled)")
	}
	if from == "" {
		from = "system"
	}
	if ref, ok := strings.CutPrefix(from, "agent:"); ok {
		if r.opts.Agents == nil {
			return nil, kernel.Unavailable("no agent runtime is wired into this daemon")
		}
		a, err := r.opts.Agents.Resolve(ctx, ref)
		if err != nil {
			return nil, kernel.NotFound("sender %q is not a known agent", from)
		}
		from = "agent:" + a.ID
	}
	msgID := "msg-" + uuid.NewString()
	bus := r.opts.Bus
	res, err := r.peers.SendAgent(ctx, node, agent, content, from)
	if err != nil {
		bus.Publish("message.failed", from, to, map[string]any{"message_id": msgID, "error": err.Error()})
		return nil, err
	}
	display := "peer:" + res.NodeID + "/agent:" + res.AgentID
	bus.PublishRoute(from, display, "ofp_message", map[string]any{"message_id": msgID, "chars": utf8.RuneCountInString(content),
		"node_id": res.NodeID})
	bus.Publish("message.delivered", from, display, map[string]any{"message_id": msgID, "status": "delivered", "node_id": res.NodeID})
	text := res.Text
	return &SendResult{MessageID: msgID, Status: "delivered", To: display, AgentID: res.AgentID, Response: &text,
		Node: &RemoteNode{NodeID: res.NodeID, NodeName: res.NodeName}}, nil
}
