package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ofp"
)

// MaxAgentMessage bounds an agent_message's text, LibreFang's 64 KiB.
const MaxAgentMessage = 64 << 10

// outQueue is how many frames may wait for one connection's writer; a
// peer that reads slower than that is dropped rather than buffered.
const outQueue = 256

// writeTimeout bounds one frame write.
const writeTimeout = 10 * time.Second

// counters are messages and bytes in and out, updated by the connection
// goroutines and read by the registry without asking the actor.
type counters struct {
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
	lastSeen                           atomic.Int64 // unix nanoseconds of the last frame in
}

func (c *counters) snapshot() Counters {
	return Counters{MessagesIn: c.msgsIn.Load(), MessagesOut: c.msgsOut.Load(), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load()}
}

// conn is one handshaken connection of a peer. The actor owns it; its
// reader and writer goroutines only report back by message.
type conn struct {
	id       int
	c        net.Conn
	key      string // the session key: never logged
	out      chan []byte
	inbound  bool
	remote   string
	lastRecv atomic.Int64
	// why is set by the actor when it ends the connection itself, so the
	// reader's "closed" error does not hide the reason.
	why error
}

// close ends the connection at once. A TLS link's socket is closed under
// it: tls.Conn.Close would first try to send close_notify, which can wait
// seconds on a peer that does not read.
func (cn *conn) close() {
	if tc, ok := cn.c.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	cn.c.Close()
}

// Messages of a peer actor (unexported: the supervisor and the actor's
// own goroutines send them).
type (
	attach struct {
		c        net.Conn
		sess     *ofp.Session
		dialAddr string // the address this node dialled, "" for inbound
	}
	frameIn struct {
		conn int
		m    *ofp.Message
	}
	connDown struct {
		conn int
		err  error
	}
	tick     struct{}
	redial   struct{}
	dialDone struct {
		c    net.Conn
		sess *ofp.Session
		err  error
	}
	replyOut struct {
		conn                int
		id, method          string
		body                any
		refusal, refusedFor string // audited when set
	}
	turnFinished struct{ tokens uint64 }
)

// link is the actor of one peer node: every connection with it, the
// requests in flight on them, its limits and its redial schedule.
type link struct {
	e        *env
	nodeID   string
	info     PeerInfo // name, agents, key, mode as the last handshake said
	dialAddr string
	stats    *counters
	self     *actor.PID

	conns    map[int]*conn
	nextConn int
	pending  map[string]pendingRequest
	stop     chan struct{}
	lastPing time.Time

	failures int
	dialing  bool

	minute      time.Time
	minuteCount int
	hour        time.Time
	hourTokens  uint64
	inflight    int
}

type pendingRequest struct {
	asker    *actor.PID
	conn     int
	deadline time.Time
}

// maxLinksPerPeer bounds the connections one node may hold open with this
// one (LibreFang opens one per request and closes it; a fangd node keeps
// one or two). Beyond it a new connection is refused and audited.
const maxLinksPerPeer = 16

func newLink(e *env, nodeID string, stats *counters) *link {
	return &link{e: e, nodeID: nodeID, stats: stats, conns: map[int]*conn{}, pending: map[string]pendingRequest{}}
}

func (l *link) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		l.self = c.Self()
		l.stop = make(chan struct{})
		go ticker(c.ActorSystem(), c.Self(), l.e.opts.Keepalive/4, l.stop)
	case *actor.Stopping, *actor.Restarting:
		if l.stop != nil {
			close(l.stop)
			l.stop = nil
		}
		for id := range l.conns {
			l.drop(id)
		}
		for id, p := range l.pending {
			c.Send(p.asker, kernel.Unavailable("the link to peer %s stopped", l.nodeID))
			delete(l.pending, id)
		}
	case *attach:
		l.attach(c, m)
	case *frameIn:
		l.frame(c, m)
	case *connDown:
		l.down(c, m)
	case *tick:
		l.keepalive(c)
	case *redial:
		l.dial(c)
	case *dialDone:
		l.dialed(c, m)
	case *replyOut:
		if m.refusal != "" {
			l.e.record("ofp_request_refused", "denied", l.nodeID, l.remoteOf(m.conn), m.refusedFor+": "+m.refusal)
		}
		if cn, ok := l.conns[m.conn]; ok {
			l.send(cn, m.id, ofp.TypeResponse, m.method, m.body)
		}
	case *turnFinished:
		l.inflight--
		l.hourTokens += m.tokens
	case *request:
		l.request(c, m)
	case *notify:
		if cn := l.primary(); cn != nil {
			l.send(cn, uuid.NewString(), ofp.TypeNotification, m.event, m.body)
		}
	}
}

// ticker sends tick to pid every d until stop is closed.
func ticker(sys *actor.ActorSystem, pid *actor.PID, d time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			sys.Root.Send(pid, &tick{})
		case <-stop:
			return
		}
	}
}

func (l *link) attach(c actor.Context, m *attach) {
	if len(l.conns) >= maxLinksPerPeer {
		m.c.Close()
		l.e.record("ofp_link_dropped", "denied", l.nodeID, m.c.RemoteAddr().String(), "more than 16 open connections from one node")
		return
	}
	first := len(l.conns) == 0
	l.nextConn++
	cn := &conn{id: l.nextConn, c: m.c, key: m.sess.Key, out: make(chan []byte, outQueue), inbound: m.dialAddr == "",
		remote: m.c.RemoteAddr().String()}
	cn.lastRecv.Store(time.Now().UnixNano())
	l.conns[cn.id] = cn
	if m.dialAddr != "" {
		l.dialAddr = m.dialAddr
	}
	s := m.sess
	l.info.NodeID, l.info.NodeName, l.info.remote = s.PeerID, s.PeerName, s.PeerAgents
	l.info.Fingerprint = ""
	if s.PeerPublicKey != "" {
		l.info.Fingerprint = ofp.Fingerprint(s.PeerPublicKey)
	}
	l.info.LinkMode = linkMode(s)
	if first {
		l.info.ConnectedAt = time.Now().UTC().Format(time.RFC3339)
		l.failures = 0
	}
	l.stats.lastSeen.Store(time.Now().UnixNano())
	go l.read(c.ActorSystem(), c.Self(), cn)
	go l.write(c.ActorSystem(), c.Self(), cn)
	l.publish(c)
}

// linkMode names how a session's link is protected.
func linkMode(s *ofp.Session) string {
	if s.TLS {
		return "tls1.3+ofp-hmac/" + s.Mode
	}
	return "ofp-hmac/" + s.Mode
}

// read turns frames into messages for the actor until the connection
// fails; a bad MAC, an oversize or malformed frame ends it.
func (l *link) read(sys *actor.ActorSystem, self *actor.PID, cn *conn) {
	for {
		b, err := ofp.ReadAuthFrame(cn.c, cn.key)
		if err != nil {
			sys.Root.Send(self, &connDown{conn: cn.id, err: err})
			return
		}
		now := time.Now().UnixNano()
		cn.lastRecv.Store(now)
		n := uint64(len(b) + 4 + ofp.MACHexLen)
		l.stats.msgsIn.Add(1)
		l.stats.bytesIn.Add(n)
		l.stats.lastSeen.Store(now)
		l.e.totals.msgsIn.Add(1)
		l.e.totals.bytesIn.Add(n)
		m, err := ofp.Decode(b)
		if err != nil {
			sys.Root.Send(self, &connDown{conn: cn.id, err: err})
			return
		}
		sys.Root.Send(self, &frameIn{conn: cn.id, m: m})
	}
}

// write sends the frames the actor queues, one at a time, until the
// actor closes the queue.
func (l *link) write(sys *actor.ActorSystem, self *actor.PID, cn *conn) {
	for b := range cn.out {
		cn.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := ofp.WriteAuthFrame(cn.c, b, cn.key); err != nil {
			cn.close()
			sys.Root.Send(self, &connDown{conn: cn.id, err: err})
			for range cn.out { // the actor closes it when it drops the conn
			}
			return
		}
		n := uint64(len(b) + 4 + ofp.MACHexLen)
		l.stats.msgsOut.Add(1)
		l.stats.bytesOut.Add(n)
		l.e.totals.msgsOut.Add(1)
		l.e.totals.bytesOut.Add(n)
	}
}

// send queues one message on cn; a full queue drops the connection.
func (l *link) send(cn *conn, id, typ, name string, body any) {
	b, err := ofp.Encode(id, typ, name, body)
	if err != nil {
		l.e.log().Error().Err(err).Str("peer", l.nodeID).Str("method", name).Msg("ofp message does not encode")
		return
	}
	select {
	case cn.out <- b:
	default:
		l.e.log().Warn().Str("peer", l.nodeID).Msg("ofp peer does not read its frames: link dropped")
		cn.close() // the reader reports it down
	}
}

func (l *link) drop(id int) {
	if cn, ok := l.conns[id]; ok {
		cn.close()
		close(cn.out)
		delete(l.conns, id)
	}
}

func (l *link) remoteOf(id int) string {
	if cn, ok := l.conns[id]; ok {
		return cn.remote
	}
	return ""
}

// down forgets a failed connection. A failure that is not a plain close
// (a bad MAC, an oversize or malformed frame, a keepalive timeout) is
// audited. The last connection gone, the peer is disconnected and, when
// this node knows its address, redialled.
func (l *link) down(c actor.Context, m *connDown) {
	cn, ok := l.conns[m.conn]
	if !ok {
		return
	}
	if cn.why != nil {
		m.err = cn.why
	}
	if m.err != nil && !errors.Is(m.err, io.EOF) && !errors.Is(m.err, net.ErrClosed) && !isReset(m.err) {
		l.e.record("ofp_link_dropped", "denied", l.nodeID, cn.remote, m.err.Error())
	}
	l.drop(m.conn)
	// A response can only come back on the connection its request went
	// out on: those requests fail now rather than at their deadline.
	for id, p := range l.pending {
		if p.conn == m.conn {
			c.Send(p.asker, kernel.Unavailable("the link to peer %s closed before it answered", l.nodeID))
			delete(l.pending, id)
		}
	}
	if len(l.conns) == 0 {
		l.scheduleRedial(c, nil)
	}
	l.publish(c)
}

func isReset(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

// errKeepalive ends a connection that was silent for too long.
var errKeepalive = errors.New("no frame from the peer within 1.5 keepalive intervals")

// keepalive pings every connection once per interval and ends those the
// peer left silent for 1.5 intervals: checked every quarter interval, a
// dead link is found within 1.75 intervals of its last frame.
func (l *link) keepalive(c actor.Context) {
	now := time.Now()
	k := l.e.opts.Keepalive
	for id, cn := range l.conns {
		if now.Sub(time.Unix(0, cn.lastRecv.Load())) > k+k/2 {
			cn.why = errKeepalive
			cn.close()
			c.Send(c.Self(), &connDown{conn: id, err: errKeepalive})
		}
	}
	if now.Sub(l.lastPing) >= k-k/8 {
		l.lastPing = now
		for _, cn := range l.conns {
			l.send(cn, uuid.NewString(), ofp.TypeRequest, ofp.MethodPing, nil)
		}
	}
	for id, p := range l.pending {
		if now.After(p.deadline) {
			c.Send(p.asker, kernel.Unavailable("peer %s did not answer in time", l.nodeID))
			delete(l.pending, id)
		}
	}
}

func (l *link) scheduleRedial(c actor.Context, err error) {
	if l.dialAddr == "" || l.dialing || len(l.conns) > 0 {
		return
	}
	l.failures++
	l.dialing = true
	d := l.e.redialDelay(l.failures, err)
	sys, self := c.ActorSystem(), c.Self()
	stop := l.stop
	go func() {
		select {
		case <-time.After(d):
			sys.Root.Send(self, &redial{})
		case <-stop:
		}
	}()
}

func (l *link) dial(c actor.Context) {
	if len(l.conns) > 0 {
		l.dialing = false
		return
	}
	sys, self, addr, id := c.ActorSystem(), c.Self(), l.dialAddr, l.nodeID
	go func() {
		cn, sess, err := l.e.dial(addr, id)
		sys.Root.Send(self, &dialDone{c: cn, sess: sess, err: err})
	}()
}

func (l *link) dialed(c actor.Context, m *dialDone) {
	l.dialing = false
	if m.err != nil {
		l.scheduleRedial(c, m.err)
		return
	}
	if l.stop == nil { // stopping
		m.c.Close()
		return
	}
	l.attach(c, &attach{c: m.c, sess: m.sess, dialAddr: l.dialAddr})
}

// publish tells the registry what this peer looks like now.
func (l *link) publish(c actor.Context) {
	info := l.info
	info.NodeID = l.nodeID
	info.Links = len(l.conns)
	info.Dialable = l.dialAddr != ""
	info.ProtocolVersion = ofp.ProtocolVersion
	info.Authenticated = len(l.conns) > 0
	info.State = StateDisconnected
	if len(l.conns) > 0 {
		info.State = StateConnected
	}
	info.Address = l.dialAddr
	if info.Address == "" {
		for _, cn := range l.conns {
			info.Address = cn.remote
		}
		if info.Address == "" {
			info.Address = l.info.Address
		}
	}
	l.info.Address = info.Address
	info.Agents = make([]AgentRef, 0, len(info.remote))
	for _, a := range info.remote {
		info.Agents = append(info.Agents, AgentRef{ID: a.ID, Name: a.Name})
	}
	info.remote = append([]ofp.RemoteAgent(nil), info.remote...)
	c.Send(l.e.sup, &peerState{info: info})
}

// primary picks the connection outbound requests use: one this node
// dialled when there is one (it is redialled if lost), else the newest.
func (l *link) primary() *conn {
	var best *conn
	for _, cn := range l.conns {
		if best == nil || (!cn.inbound && best.inbound) || (cn.inbound == best.inbound && cn.id > best.id) {
			best = cn
		}
	}
	return best
}

// request sends an outbound request and answers the asker when its
// response (same id) comes back on any connection.
func (l *link) request(c actor.Context, m *request) {
	cn := l.primary()
	if cn == nil {
		c.Respond(kernel.Unavailable("peer %s is not connected", l.nodeID))
		return
	}
	id := uuid.NewString()
	timeout := l.e.opts.TurnTimeout
	if m.method == ofp.MethodDiscover {
		timeout = kernel.DefaultAskTimeout
	}
	l.pending[id] = pendingRequest{asker: c.Sender(), conn: cn.id, deadline: time.Now().Add(timeout)}
	l.send(cn, id, ofp.TypeRequest, m.method, m.body)
}

// frame handles one message from the peer.
func (l *link) frame(c actor.Context, f *frameIn) {
	cn, ok := l.conns[f.conn]
	if !ok {
		return
	}
	m := f.m
	switch m.Type {
	case ofp.TypeResponse:
		if p, ok := l.pending[m.ID]; ok {
			delete(l.pending, m.ID)
			c.Send(p.asker, responseResult(l.nodeID, m))
		} // a pong, or a response that came too late: nothing waits
	case ofp.TypeNotification:
		l.notification(c, m)
	case ofp.TypeRequest:
		l.serve(c, cn, m)
	} // an unknown type is ignored, as LibreFang does
}

// responseResult is what the asker of a request gets: the response, or
// the peer's error as a domain error.
func responseResult(nodeID string, m *ofp.Message) any {
	if m.Name != ofp.MethodError {
		return m
	}
	var e ofp.ErrorBody
	if err := m.Body(&e); err != nil {
		return kernel.Errorf(kernel.KindUpstream, "peer_error", "peer %s answered a malformed error", nodeID)
	}
	kind := kernel.KindUpstream
	switch e.Code {
	case ofp.CodeRateLimited:
		kind = kernel.KindRateLimited
	case ofp.CodeTooLarge:
		kind = kernel.KindTooLarge
	case ofp.CodeForbidden, ofp.CodeUnauthorized:
		kind = kernel.KindForbidden
	case 404:
		kind = kernel.KindNotFound
	}
	return kernel.Errorf(kind, "peer_error", "peer %s refused (%d): %s", nodeID, e.Code, e.Message)
}

func (l *link) notification(c actor.Context, m *ofp.Message) {
	switch m.Name {
	case ofp.EventAgentSpawned:
		var b ofp.AgentSpawned
		if m.Body(&b) != nil || b.Agent.ID == "" {
			return
		}
		l.info.remote = append(without(l.info.remote, b.Agent.ID), b.Agent)
		l.publish(c)
	case ofp.EventAgentTerm:
		var b ofp.AgentTerminated
		if m.Body(&b) != nil {
			return
		}
		l.info.remote = without(l.info.remote, b.AgentID)
		l.publish(c)
	case ofp.EventShuttingDown:
		// The peer is going away: its links close on their own; nothing
		// is redialled sooner than the backoff says.
	}
}

// without is agents less the one with id id, in a new slice (published
// snapshots share the old one).
func without(agents []ofp.RemoteAgent, id string) []ofp.RemoteAgent {
	out := make([]ofp.RemoteAgent, 0, len(agents))
	for _, a := range agents {
		if a.ID != id {
			out = append(out, a)
		}
	}
	return out
}

// serve answers one request from the peer.
func (l *link) serve(c actor.Context, cn *conn, m *ofp.Message) {
	refuse := func(code int32, msg string) {
		l.e.record("ofp_request_refused", "denied", l.nodeID, cn.remote, m.Name+": "+msg)
		l.send(cn, m.ID, ofp.TypeResponse, ofp.MethodError, ofp.ErrorBody{Code: code, Message: msg})
	}
	switch m.Name {
	case ofp.MethodPing:
		l.send(cn, m.ID, ofp.TypeResponse, ofp.MethodPong, ofp.Pong{UptimeSecs: uint64(time.Since(l.e.start) / time.Second)})
	case ofp.MethodDiscover:
		var q ofp.Discover
		if m.Body(&q) != nil {
			refuse(ofp.CodeBadRequest, "malformed discover")
			return
		}
		if l.e.opts.Local == nil {
			l.send(cn, m.ID, ofp.TypeResponse, ofp.MethodDiscoverRes, ofp.DiscoverResult{})
			return
		}
		sys, self, id, conn := c.ActorSystem(), c.Self(), m.ID, cn.id
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), kernel.DefaultAskTimeout)
			defer cancel()
			agents, err := l.e.opts.Local.Agents(ctx)
			r := &replyOut{conn: conn, id: id, method: ofp.MethodDiscoverRes, body: ofp.DiscoverResult{Agents: matching(agents, q.Query)}}
			if err != nil {
				r.method, r.body = ofp.MethodError, ofp.ErrorBody{Code: ofp.CodeInternal, Message: "agents unavailable"}
			}
			sys.Root.Send(self, r)
		}()
	case ofp.MethodAgentMessage:
		l.agentMessage(c, cn, m, refuse)
	default:
		refuse(ofp.CodeBadRequest, "unsupported request method "+truncate(m.Name, 64))
	}
}

func (l *link) agentMessage(c actor.Context, cn *conn, m *ofp.Message, refuse func(int32, string)) {
	var am ofp.AgentMessage
	if m.Body(&am) != nil || am.Agent == "" {
		refuse(ofp.CodeBadRequest, "malformed agent_message")
		return
	}
	if len(am.Message) > MaxAgentMessage {
		refuse(ofp.CodeTooLarge, "message exceeds 64 KiB")
		return
	}
	now := time.Now()
	if lim := l.e.opts.MaxMessagesPerMinute; lim > 0 {
		if now.Sub(l.minute) >= time.Minute {
			l.minute, l.minuteCount = now, 0
		}
		if l.minuteCount >= lim {
			refuse(ofp.CodeRateLimited, "rate limit: too many messages from this peer per minute")
			return
		}
		l.minuteCount++
	}
	if lim := l.e.opts.MaxTokensPerHour; lim > 0 {
		if now.Sub(l.hour) >= time.Hour {
			l.hour, l.hourTokens = now, 0
		}
		if l.hourTokens >= lim {
			refuse(ofp.CodeRateLimited, "rate limit: this peer's LLM token budget for the hour is spent")
			return
		}
	}
	if l.e.opts.MaxConcurrent > 0 && l.inflight >= l.e.opts.MaxConcurrent {
		refuse(ofp.CodeRateLimited, "rate limit: too many turns from this peer at once")
		return
	}
	if l.e.opts.Local == nil {
		refuse(ofp.CodeInternal, "this node runs no agents")
		return
	}
	l.inflight++
	sender := "peer:" + l.nodeID
	if am.Sender != nil && *am.Sender != "" {
		sender += "/" + truncate(*am.Sender, 256)
	}
	sys, self, id, conn := c.ActorSystem(), c.Self(), m.ID, cn.id
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), l.e.opts.TurnTimeout)
		defer cancel()
		text, tokens, err := l.e.opts.Local.Turn(ctx, am.Agent, am.Message, sender)
		sys.Root.Send(self, &turnFinished{tokens: tokens})
		r := &replyOut{conn: conn, id: id, method: ofp.MethodAgentResponse, body: ofp.AgentResponse{Text: text}}
		if err != nil {
			code, msg := int32(ofp.CodeInternal), "agent turn failed"
			var ke *kernel.Error
			if errors.As(err, &ke) {
				msg = ke.Msg
				switch ke.Kind {
				case kernel.KindNotFound:
					code = 404
				case kernel.KindRateLimited:
					code = ofp.CodeRateLimited
				}
			}
			r.method, r.body = ofp.MethodError, ofp.ErrorBody{Code: code, Message: msg}
			r.refusal, r.refusedFor = msg, "agent_message to "+truncate(am.Agent, 128)
		}
		sys.Root.Send(self, r)
	}()
}

// matching filters agents by LibreFang's discover query: a
// case-insensitive substring of the name, description or a tag; "" is all.
func matching(agents []ofp.RemoteAgent, query string) []ofp.RemoteAgent {
	q := strings.ToLower(strings.TrimSpace(query))
	if q == "" {
		return agents
	}
	var out []ofp.RemoteAgent
	for _, a := range agents {
		hit := strings.Contains(strings.ToLower(a.Name), q) || strings.Contains(strings.ToLower(a.Description), q)
		for _, t := range a.Tags {
			hit = hit || strings.Contains(strings.ToLower(t), q)
		}
		if hit {
			out = append(out, a)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
