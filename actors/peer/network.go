package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ofp"
)

// maxPendingHandshakes bounds the inbound handshakes in progress, so a
// crowd of strangers that connect and stall costs a bounded number of
// goroutines (each is dropped after ofp.HandshakeTimeout anyway).
const maxPendingHandshakes = 64

// Network is the handle of the peer network: the REST layer and the
// comms router reach peers through it.
type Network struct {
	e   *env
	ln  net.Listener
	sup *actor.PID
}

// Start binds the listener (a bind failure fails the start), spawns the
// registry and begins dialling the bootstrap peers.
func Start(k *kernel.Kernel, opts Options) (*Network, error) {
	if opts.SharedSecret == "" {
		return nil, errors.New("ofp: no shared secret")
	}
	if opts.Pins == nil || opts.Identity.Key == nil {
		return nil, errors.New("ofp: no pin store or node identity")
	}
	if opts.Keepalive <= 0 {
		opts.Keepalive = 15 * time.Second
	}
	if opts.ReconnectInitial <= 0 {
		opts.ReconnectInitial = 500 * time.Millisecond
	}
	if opts.ReconnectMax < opts.ReconnectInitial {
		opts.ReconnectMax = max(5*time.Second, opts.ReconnectInitial)
	}
	if opts.TurnTimeout <= 0 {
		opts.TurnTimeout = 5 * time.Minute
	}
	if opts.MaxPeers <= 0 {
		opts.MaxPeers = 50
	}
	e := &env{k: k, opts: opts, totals: &counters{}, start: time.Now()}
	if opts.RequireEncryption {
		opts.EncryptLinks = true
		e.opts.EncryptLinks = true
	}
	if opts.EncryptLinks {
		cert, err := identityCert(opts.Identity)
		if err != nil {
			return nil, err
		}
		e.cert = cert
	}
	e.hs = &ofp.Config{Identity: opts.Identity, SharedSecret: opts.SharedSecret, Pins: opts.Pins, Replay: &ofp.MemoryReplay{},
		OfferTLS: opts.EncryptLinks,
		Agents: func() []ofp.RemoteAgent {
			if opts.Local == nil {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			agents, _ := opts.Local.Agents(ctx)
			return agents
		}}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("network.listen_addresses: listen on %s: %w", opts.Listen, err)
	}
	for _, c := range []struct {
		name, help string
		v          func() uint64
	}{
		{"fangd_ofp_messages_in_total", "OFP frames received from peers.", e.totals.msgsIn.Load},
		{"fangd_ofp_messages_out_total", "OFP frames sent to peers.", e.totals.msgsOut.Load},
		{"fangd_ofp_bytes_in_total", "OFP bytes received from peers (whole frames).", e.totals.bytesIn.Load},
		{"fangd_ofp_bytes_out_total", "OFP bytes sent to peers (whole frames).", e.totals.bytesOut.Load},
	} {
		v := c.v
		if err := k.Metrics.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(v()) })); err != nil {
			ln.Close()
			return nil, err
		}
	}
	n := &Network{e: e, ln: ln}
	sup := &supervisor{e: e, ln: ln}
	pid, err := k.SpawnRoot("peers", func() actor.Actor { return sup })
	if err != nil {
		ln.Close()
		return nil, err
	}
	n.sup = pid
	go n.accept()
	return n, nil
}

// accept hands each inbound connection to a handshake goroutine, and
// each handshaken one to the registry.
func (n *Network) accept() {
	sem := make(chan struct{}, maxPendingHandshakes)
	for {
		c, err := n.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond) // out of descriptors: do not spin
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			n.e.record("ofp_handshake_refused", "denied", "", c.RemoteAddr().String(), "too many handshakes in progress")
			continue
		}
		go func() {
			defer func() { <-sem }()
			n.respond(c)
		}()
	}
}

func (n *Network) respond(c net.Conn) {
	remote := c.RemoteAddr().String()
	sess, err := ofp.Respond(c, n.e.hs)
	if err == nil {
		if msg := validNodeID(sess.PeerID); msg != "" {
			err = errors.New(msg)
		}
	}
	var sc net.Conn
	if err == nil {
		sc, err = n.e.agree(c, sess, false)
	}
	if err != nil {
		c.Close()
		n.e.record(refusalEvent(err), "denied", "", remote, "inbound handshake from "+remote+": "+err.Error())
		return
	}
	n.e.k.Root.Send(n.sup, &linked{c: sc, sess: sess})
}

func refusalEvent(err error) string {
	if handshakeEvent(err) == "ofp_pin_mismatch" {
		return "ofp_pin_mismatch"
	}
	return "ofp_handshake_refused"
}

// Running reports whether the registry (and with it the listener) runs.
func (n *Network) Running() bool {
	_, ok := n.e.k.System.ProcessRegistry.Get(n.sup)
	return ok
}

// NodeID is this node's id.
func (n *Network) NodeID() string { return n.e.opts.Identity.NodeID }

// NodeName is this node's name.
func (n *Network) NodeName() string { return n.e.opts.Identity.NodeName }

// ListenAddr is the address inbound links are accepted on.
func (n *Network) ListenAddr() string { return n.ln.Addr().String() }

// LinkEncryption is the encryption policy: "required" (every link in
// TLS 1.3), "negotiated" (TLS 1.3 with fangd peers that offer it,
// LibreFang's plaintext + HMAC with the others) or "none".
func (n *Network) LinkEncryption() string {
	switch {
	case n.e.opts.RequireEncryption:
		return "required"
	case n.e.opts.EncryptLinks:
		return "negotiated"
	}
	return "none"
}

// Fingerprint is hex(SHA-256(public key base64)) of this node's identity.
func (n *Network) Fingerprint() string {
	return ofp.Fingerprint(ofp.PublicKeyB64(n.e.opts.Identity.Key))
}

// Peers lists every peer node seen since start, in node id order.
func (n *Network) Peers(ctx context.Context) ([]PeerInfo, error) {
	r, err := kernel.Ask[*peerList](ctx, n.e.k, n.sup, &listPeers{})
	if err != nil {
		return nil, err
	}
	return r.peers, nil
}

// Peer is one peer, by node id or node name.
func (n *Network) Peer(ctx context.Context, id string) (PeerInfo, error) {
	r, err := kernel.Ask[*found](ctx, n.e.k, n.sup, &lookupPeer{peer: id})
	if err != nil {
		return PeerInfo{}, err
	}
	return r.info, nil
}

// Status is the network as GET /api/network/status reports it.
type Status struct {
	Connected, Total int
	Totals           Counters
	Rates            Rates
	Pinned           int
}

// Status measures the network now.
func (n *Network) Status(ctx context.Context) (Status, error) {
	r, err := kernel.Ask[*registryStatus](ctx, n.e.k, n.sup, &statusAsk{})
	if err != nil {
		return Status{}, err
	}
	return Status{Connected: r.connected, Total: r.total, Totals: n.e.totals.snapshot(), Rates: r.rates, Pinned: n.e.opts.Pins.Len()}, nil
}

// Trusted lists the pinned identity keys.
func (n *Network) Trusted() []TrustedPeer { return n.e.opts.Pins.List() }

// Forget removes the pin of nodeID (durably) and audits it; the node's
// next handshake pins the key it presents then. who is the API caller.
func (n *Network) Forget(ctx context.Context, nodeID, who, sourceIP string) error {
	tp, err := n.e.opts.Pins.Forget(ctx, nodeID)
	if err != nil {
		return err
	}
	if n.e.opts.Audit != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), audit.AppendTimeout)
		defer cancel()
		_, err = n.e.opts.Audit.Append(actx, audit.Event{EventType: "ofp_pin_forgotten", Outcome: "ok", Actor: who, SourceIP: sourceIP,
			Details: "pin of node " + nodeID + " (fingerprint " + tp.Fingerprint + ") removed"})
	}
	return err
}

// Notify tells every connected peer of an event (agent_spawned,
// agent_terminated, shutting_down).
func (n *Network) Notify(event string, body any) {
	n.e.k.Root.Send(n.sup, &notify{event: event, body: body})
}

// SendAgent runs one turn of agent (id or name) on the peer node (id or
// name) and returns its answer.
func (n *Network) SendAgent(ctx context.Context, peer, agent, message, sender string) (AgentReply, error) {
	if len(message) > MaxAgentMessage {
		return AgentReply{}, kernel.Errorf(kernel.KindTooLarge, "message_too_large", "an OFP agent message is at most 64 KiB")
	}
	f, err := kernel.Ask[*found](ctx, n.e.k, n.sup, &lookupPeer{peer: peer})
	if err != nil {
		return AgentReply{}, err
	}
	var s *string
	if sender != "" {
		s = &sender
	}
	m, err := kernel.Ask[*ofp.Message](ctx, n.e.k, f.pid, &request{method: ofp.MethodAgentMessage, body: ofp.AgentMessage{Agent: agent, Message: message, Sender: s}})
	if err != nil {
		return AgentReply{}, err
	}
	var r ofp.AgentResponse
	if m.Name != ofp.MethodAgentResponse || m.Body(&r) != nil {
		return AgentReply{}, kernel.Errorf(kernel.KindUpstream, "peer_error", "peer %s answered %s to an agent message", f.info.NodeID, m.Name)
	}
	return AgentReply{Text: r.Text, NodeID: f.info.NodeID, NodeName: f.info.NodeName}, nil
}

// Discover asks one peer for its agents matching query.
func (n *Network) Discover(ctx context.Context, peer, query string) ([]ofp.RemoteAgent, error) {
	f, err := kernel.Ask[*found](ctx, n.e.k, n.sup, &lookupPeer{peer: peer})
	if err != nil {
		return nil, err
	}
	m, err := kernel.Ask[*ofp.Message](ctx, n.e.k, f.pid, &request{method: ofp.MethodDiscover, body: ofp.Discover{Query: query}})
	if err != nil {
		return nil, err
	}
	var r ofp.DiscoverResult
	if m.Name != ofp.MethodDiscoverRes || m.Body(&r) != nil {
		return nil, kernel.Errorf(kernel.KindUpstream, "peer_error", "peer %s answered %s to discover", f.info.NodeID, m.Name)
	}
	return r.Agents, nil
}

// Remotes lists every peer's agents as last announced.
func (n *Network) Remotes(ctx context.Context) ([]Remote, error) {
	peers, err := n.Peers(ctx)
	if err != nil {
		return nil, err
	}
	var out []Remote
	for _, p := range peers {
		for _, a := range p.remote {
			out = append(out, Remote{NodeID: p.NodeID, NodeName: p.NodeName, Agent: a, Connected: p.State == StateConnected})
		}
	}
	return out, nil
}
