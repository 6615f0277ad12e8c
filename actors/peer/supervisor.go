package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ofp"
)

// env is what the supervisor, the peer actors and the listener share.
type env struct {
	k      *kernel.Kernel
	opts   Options
	hs     *ofp.Config // read-only once started; Pins and Replay lock themselves
	totals *counters
	sup    *actor.PID // set by the supervisor's Started
	start  time.Time
	cert   tls.Certificate // the identity's self-signed certificate (tls.go)
}

// agree finishes a handshaken connection: it continues inside TLS when
// the handshake agreed it, and is refused when encryption is required
// but was not agreed.
func (e *env) agree(c net.Conn, sess *ofp.Session, client bool) (net.Conn, error) {
	if sess.TLS {
		return e.secure(c, sess, client)
	}
	if e.opts.RequireEncryption {
		return nil, errors.New("require_encrypted_links: the peer did not agree to TLS")
	}
	return c, nil
}

func (e *env) log() *zerolog.Logger { return &e.opts.Log }

// record appends an audit entry without holding up the caller. Details
// never carry a secret or a session key: only addresses, node ids and
// the refusal's reason.
func (e *env) record(eventType, outcome, nodeID, remote, details string) {
	if e.opts.Audit == nil {
		return
	}
	ev := audit.Event{EventType: eventType, Outcome: outcome, Details: details, SourceIP: hostOf(remote)}
	if nodeID != "" {
		ev.Actor = "peer:" + nodeID
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
		defer cancel()
		if _, err := e.opts.Audit.Append(ctx, ev); err != nil {
			e.opts.Log.Error().Err(err).Str("event", eventType).Msg("could not audit")
		}
	}()
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// dial connects to addr and runs the handshake as initiator; nodeID is
// the node expected there ("" for a bootstrap address). A refused
// handshake is audited.
func (e *env) dial(addr, nodeID string) (net.Conn, *ofp.Session, error) {
	c, err := net.DialTimeout("tcp", addr, ofp.HandshakeTimeout)
	if err != nil {
		return nil, nil, err
	}
	sess, err := ofp.Initiate(c, e.hs, nodeID)
	if err != nil {
		c.Close()
		e.record(handshakeEvent(err), "denied", nodeID, addr, "outbound handshake with "+addr+": "+err.Error())
		return nil, nil, err
	}
	if herr := validNodeID(sess.PeerID); herr != "" {
		c.Close()
		e.record("ofp_handshake_failed", "denied", "", addr, "outbound handshake with "+addr+": "+herr)
		return nil, nil, errors.New(herr)
	}
	sc, err := e.agree(c, sess, true)
	if err != nil {
		c.Close()
		e.record("ofp_handshake_failed", "denied", sess.PeerID, addr, "outbound link to "+addr+": "+err.Error())
		return nil, nil, err
	}
	return sc, sess, nil
}

// refusedRedialMax caps the redial delay after the peer refused the
// handshake (wrong secret, pin mismatch): that does not mend itself, and
// every attempt is audited on both nodes.
const refusedRedialMax = 5 * time.Minute

// redialDelay is the wait before dial attempt n+1 after err.
func (e *env) redialDelay(n int, err error) time.Duration {
	b := kernel.Backoff{Initial: e.opts.ReconnectInitial, Max: e.opts.ReconnectMax}
	var he *ofp.HandshakeError
	if errors.As(err, &he) {
		b.Max = max(b.Max, refusedRedialMax)
	}
	return b.Jittered(n)
}

// handshakeEvent names a handshake failure's audit event: a pinned key
// that does not match gets its own.
func handshakeEvent(err error) string {
	var he *ofp.HandshakeError
	if errors.As(err, &he) && strings.Contains(he.Message, "pinned") {
		return "ofp_pin_mismatch"
	}
	return "ofp_handshake_failed"
}

// validNodeID refuses node ids that could not name an actor or would
// garble a log line; "" means fine.
func validNodeID(id string) string {
	if id == "" || len(id) > 128 {
		return "node id empty or longer than 128 characters"
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || r == '/' {
			return "node id has a control character or '/'"
		}
	}
	return ""
}

// Supervisor messages.
type (
	// linked is a handshaken connection for the registry to hand to its
	// peer's actor.
	linked struct {
		c        net.Conn
		sess     *ofp.Session
		dialAddr string
	}
	peerState struct{ info PeerInfo }
	notify    struct {
		event string
		body  any
	}
	listPeers  struct{}
	peerList   struct{ peers []PeerInfo }
	lookupPeer struct{ peer string }
	found      struct {
		pid  *actor.PID
		info PeerInfo
	}
	sample struct{}
)

type entry struct {
	pid   *actor.PID
	info  PeerInfo
	stats *counters
}

type rateSample struct {
	at time.Time
	c  Counters
}

// supervisor is the peer registry: one entry and one child per peer node.
type supervisor struct {
	e       *env
	ln      net.Listener
	entries map[string]*entry
	cancel  context.CancelFunc
	samples []rateSample
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		// Set here, before any child or goroutine that uses it exists.
		if s.e.sup == nil {
			s.e.sup = c.Self()
		}
		s.entries = map[string]*entry{}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		for _, addr := range s.e.opts.Bootstrap {
			go s.bootstrap(ctx, addr)
		}
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					c.ActorSystem().Root.Send(s.e.sup, &sample{})
				case <-ctx.Done():
					return
				}
			}
		}()
	case *actor.Restarting:
		s.cancel()
	case *actor.Stopping:
		s.cancel()
		s.ln.Close()
	case *linked:
		s.linked(c, m)
	case *peerState:
		if en, ok := s.entries[m.info.NodeID]; ok {
			en.info = m.info
		}
	case *listPeers:
		c.Respond(&peerList{peers: s.snapshot()})
	case *lookupPeer:
		en := s.find(m.peer)
		if en == nil {
			c.Respond(kernel.NotFound("Peer not found"))
			return
		}
		c.Respond(&found{pid: en.pid, info: s.info(en)})
	case *notify:
		for _, en := range s.entries {
			c.Send(en.pid, m)
		}
	case *sample:
		now := time.Now()
		s.samples = append(s.samples, rateSample{at: now, c: s.e.totals.snapshot()})
		for len(s.samples) > 1 && now.Sub(s.samples[0].at) > time.Minute {
			s.samples = s.samples[1:]
		}
	case *statusAsk:
		c.Respond(s.status())
	}
}

// find resolves a peer by node id, else by node name (the first match in
// id order, connected peers first).
func (s *supervisor) find(peer string) *entry {
	if en, ok := s.entries[peer]; ok {
		return en
	}
	var best *entry
	for _, en := range s.entries {
		if en.info.NodeName != peer {
			continue
		}
		if best == nil || (en.info.State == StateConnected && best.info.State != StateConnected) ||
			(en.info.State == best.info.State && en.info.NodeID < best.info.NodeID) {
			best = en
		}
	}
	return best
}

func (s *supervisor) info(en *entry) PeerInfo {
	info := en.info
	cs := en.stats.snapshot()
	info.MessagesIn, info.MessagesOut, info.BytesIn, info.BytesOut = cs.MessagesIn, cs.MessagesOut, cs.BytesIn, cs.BytesOut
	if ns := en.stats.lastSeen.Load(); ns > 0 {
		info.LastSeen = time.Unix(0, ns).UTC().Format(time.RFC3339)
	}
	return info
}

func (s *supervisor) snapshot() []PeerInfo {
	out := make([]PeerInfo, 0, len(s.entries))
	for _, en := range s.entries {
		out = append(out, s.info(en))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

func (s *supervisor) connected() int {
	n := 0
	for _, en := range s.entries {
		if en.info.State == StateConnected {
			n++
		}
	}
	return n
}

// linked hands a connection to its peer's actor, spawning the actor for
// a node seen for the first time. Beyond max_peers connected nodes a new
// node is refused (and audited).
func (s *supervisor) linked(c actor.Context, m *linked) {
	id := m.sess.PeerID
	en, ok := s.entries[id]
	if (!ok || en.info.State != StateConnected) && s.connected() >= s.e.opts.MaxPeers {
		m.c.Close()
		s.e.record("ofp_peer_refused", "denied", id, m.c.RemoteAddr().String(),
			"max_peers reached: node "+id+" not admitted")
		return
	}
	if !ok {
		stats := &counters{}
		pid, err := c.SpawnNamed(s.e.k.Props(func() actor.Actor { return newLink(s.e, id, stats) }), "peer/"+url.PathEscape(id))
		if err != nil {
			m.c.Close()
			s.e.log().Error().Err(err).Str("peer", id).Msg("ofp peer actor did not start")
			return
		}
		en = &entry{pid: pid, stats: stats, info: PeerInfo{NodeID: id, NodeName: m.sess.PeerName, State: StateConnected, Authenticated: true}}
		s.entries[id] = en
	}
	// Counted as connected at once, so that max_peers holds while the
	// actor has not published yet; the connection has passed its
	// handshake, so it is authenticated too (a listing in between read
	// "connected" beside the stale "authenticated": false of the last
	// disconnect). Its link mode is known from the handshake already, so
	// a listing in between does not show a connected link with none.
	en.info.State = StateConnected
	en.info.Authenticated = true
	en.info.LinkMode = linkMode(m.sess)
	c.Send(en.pid, &attach{c: m.c, sess: m.sess, dialAddr: m.dialAddr})
}

// bootstrap dials addr until a handshake succeeds, then hands the link
// over; from then on the peer's actor redials it.
func (s *supervisor) bootstrap(ctx context.Context, addr string) {
	for n := 1; ; n++ {
		c, sess, err := s.e.dial(addr, "")
		if err == nil {
			if ctx.Err() != nil {
				c.Close()
				return
			}
			s.e.k.Root.Send(s.e.sup, &linked{c: c, sess: sess, dialAddr: addr})
			return
		}
		s.e.log().Debug().Err(err).Str("address", addr).Msg("ofp bootstrap peer not reached; retrying")
		select {
		case <-time.After(s.e.redialDelay(n, err)):
		case <-ctx.Done():
			return
		}
	}
}

// statusAsk asks for the registry's part of GET /api/network/status.
type statusAsk struct{}

type registryStatus struct {
	connected, total int
	rates            Rates
}

func (s *supervisor) status() *registryStatus {
	st := &registryStatus{connected: s.connected(), total: len(s.entries)}
	now, cur := time.Now(), s.e.totals.snapshot()
	from := rateSample{at: s.e.start}
	if len(s.samples) > 0 {
		from = s.samples[0]
	}
	if dt := now.Sub(from.at).Seconds(); dt > 0 {
		st.rates = Rates{
			MessagesInPerSec:  float64(cur.MessagesIn-from.c.MessagesIn) / dt,
			MessagesOutPerSec: float64(cur.MessagesOut-from.c.MessagesOut) / dt,
			BytesInPerSec:     float64(cur.BytesIn-from.c.BytesIn) / dt,
			BytesOutPerSec:    float64(cur.BytesOut-from.c.BytesOut) / dt,
		}
	}
	return st
}
