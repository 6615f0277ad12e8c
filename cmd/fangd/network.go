package main

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/peer"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ofp"
)

// peerAgents lets OFP peers discover and talk to this node's agents
// (peer.Local over agent.Agents).
type peerAgents struct{ a *agent.Agents }

func (p peerAgents) Agents(ctx context.Context) ([]ofp.RemoteAgent, error) {
	list, err := p.a.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ofp.RemoteAgent, 0, len(list))
	for _, ag := range list {
		out = append(out, remoteAgent(ag))
	}
	return out, nil
}

func remoteAgent(ag agent.Agent) ofp.RemoteAgent {
	return ofp.RemoteAgent{ID: ag.ID, Name: ag.Name, Description: ag.Description, Tags: ag.Tags, Tools: ag.Tools, State: ag.State}
}

// Turn runs the turn in a session of its own per remote sender
// ("peer:<node id>[/<sender>]"), which is also who the turn is audited
// and budgeted for.
func (p peerAgents) Turn(ctx context.Context, ref, message, sender string) (string, uint64, error) {
	r, err := agent.ParseRef(ref)
	if err != nil {
		return "", 0, err
	}
	ag, err := p.a.Get(ctx, r)
	if err != nil {
		return "", 0, err
	}
	ns, err := uuid.Parse(ag.ID)
	if err != nil {
		ns = uuid.NameSpaceURL
	}
	res, err := p.a.Send(ctx, agent.Send{Ref: agent.Ref{ID: ag.ID}, Text: message, SessionID: uuid.NewSHA1(ns, []byte(sender)).String(),
		From: sender, Who: agent.Who{Actor: sender}, User: sender, Ctx: ctx})
	if err != nil {
		return "", 0, err
	}
	return res.Response, uint64(max(0, res.InputTokens+res.OutputTokens)), nil
}

var _ peer.Local = peerAgents{}

// peerComms lets the comms router send "peer:" messages (comms.Peers
// over peer.Network).
type peerComms struct{ n *peer.Network }

func (p peerComms) SendAgent(ctx context.Context, node, agentRef, message, sender string) (comms.PeerReply, error) {
	r, err := p.n.SendAgent(ctx, node, agentRef, message, sender)
	if err != nil {
		return comms.PeerReply{}, err
	}
	out := comms.PeerReply{Text: r.Text, AgentID: agentRef, NodeID: r.NodeID, NodeName: r.NodeName}
	// The answer does not carry the agent's id; the node's announced
	// agents do, so a name becomes the id the topology knows.
	if remotes, err := p.n.Remotes(ctx); err == nil {
		for _, ra := range remotes {
			if ra.NodeID == r.NodeID && (ra.Agent.ID == agentRef || ra.Agent.Name == agentRef) {
				out.AgentID = ra.Agent.ID
				break
			}
		}
	}
	return out, nil
}

// peerNodes puts peer nodes and their agents in GET /api/comms/topology:
// "peer:<node id>" (kind peer) and "peer:<node id>/agent:<agent id>"
// (kind remote_agent).
type peerNodes struct{ n *peer.Network }

func (p peerNodes) Nodes(ctx context.Context) ([]comms.Node, error) {
	peers, err := p.n.Peers(ctx)
	if err != nil {
		return nil, err
	}
	remotes, err := p.n.Remotes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]comms.Node, 0, len(peers)+len(remotes))
	for _, pi := range peers {
		out = append(out, comms.Node{ID: "peer:" + pi.NodeID, Kind: "peer", Name: pi.NodeName, State: pi.State})
	}
	for _, r := range remotes {
		state := r.Agent.State
		if !r.Connected {
			state = peer.StateDisconnected
		}
		out = append(out, comms.Node{ID: "peer:" + r.NodeID + "/agent:" + r.Agent.ID, Kind: "remote_agent", Name: r.Agent.Name, State: state})
	}
	return out, nil
}

// startNetwork starts the OFP peer network when [network] switches it on
// and reports ofp_hmac_auth either way: active while the network runs
// with its shared secret, inactive when it is off.
func (d *daemon) startNetwork(cfg Config, vault *store.Vault, agents *agent.Agents, router *comms.Router, tools *agentToolbox, turnTimeout time.Duration) error {
	s, err := cfg.networkSettings()
	if err != nil {
		return err
	}
	if !s.enabled {
		d.kernel.Security.Register("ofp_hmac_auth", func() kernel.State { return kernel.StateInactive })
		return nil
	}
	secret, err := s.resolveSecret(vault)
	if err != nil {
		return err
	}
	id, err := peer.LoadIdentity(vault, s.nodeName)
	if err != nil {
		return err
	}
	pins, err := peer.OpenPins(d.db)
	if err != nil {
		return err
	}
	n, err := peer.Start(d.kernel, peer.Options{Identity: id, SharedSecret: secret, Listen: s.listen, Bootstrap: s.bootstrap,
		MaxPeers: s.maxPeers, MaxMessagesPerMinute: s.perMinute, MaxTokensPerHour: s.tokensPerHour, MaxConcurrent: s.maxConcurrent,
		EncryptLinks: s.encrypt, RequireEncryption: s.requireEnc,
		Keepalive: s.keepalive, ReconnectInitial: s.reconnectInitial, ReconnectMax: s.reconnectMax, TurnTimeout: turnTimeout,
		Pins: pins, Local: peerAgents{agents}, Audit: d.audit, Log: d.log.With().Str("component", "ofp").Logger()})
	if err != nil {
		return err
	}
	d.network = n
	d.kernel.Security.Register("ofp_hmac_auth", func() kernel.State {
		if n.Running() {
			return kernel.StateActive
		}
		return kernel.StateInactive
	})
	router.SetPeers(peerComms{n})
	tools.ofp.Store(n)
	router.AddNodeSource(peerNodes{n})
	// Peers keep their view of this node's agents current from these.
	d.kernel.System.EventStream.Subscribe(func(evt any) {
		switch e := evt.(type) {
		case *agent.AgentSpawned:
			n.Notify(ofp.EventAgentSpawned, ofp.AgentSpawned{Agent: ofp.RemoteAgent{ID: e.AgentID, Name: e.Name, State: "running"}})
		case *agent.AgentTerminated:
			n.Notify(ofp.EventAgentTerm, ofp.AgentTerminated{AgentID: e.AgentID})
		}
	})
	d.log.Info().Str("node_id", id.NodeID).Str("node_name", id.NodeName).Str("listen", n.ListenAddr()).
		Str("identity_fingerprint", n.Fingerprint()).Int("bootstrap_peers", len(s.bootstrap)).Msg("ofp peer network listening")
	return nil
}
