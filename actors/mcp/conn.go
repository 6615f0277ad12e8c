package mcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp/stdio"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/neterr"
	"github.com/fangd/fangd/transport/ssrf"
)

// conn is the actor "mcp/<name>": one server connection. Its mailbox
// serialises everything about the connection; the network and the
// subprocess are only touched from goroutines that report back to it.
type conn struct {
	env  *env
	spec Spec
	self *actor.PID
	line *callLine // what callers read to call without a hop (line.go)

	// gen increases with every connection attempt; messages from an older
	// attempt's goroutines are recognised and ignored.
	gen     uint64
	cancel  context.CancelFunc // the in-flight attempt
	session *sdk.ClientSession
	proc    *stdio.Process // a stdio server's process, for its exit reason

	st       serverState
	everUp   bool // connected at least once since the spec was applied
	attempts int  // failed attempts since the last success, for the backoff
	tools    map[string]*sdk.Tool
	pins     pinState
	waiters  []*actor.PID // reconnect requests waiting for the outcome
	stopping bool
}

func newConn(e *env, spec Spec, line *callLine) *conn {
	return &conn{env: e, spec: spec, line: line}
}

func (a *conn) log() *zerolog.Logger {
	l := a.env.log.With().Str("mcp_server", a.spec.Name).Logger()
	return &l
}

func (a *conn) Receive(c actor.Context) {
	// Whatever the message changed, callers see it from the next call on.
	defer a.publish(c)
	switch m := c.Message().(type) {
	case *actor.Started:
		a.self = c.Self()
		a.loadPins()
		a.start(c)
	case *actor.Stopping, *actor.Restarting:
		a.stopping = true
		a.drop()
		a.answerWaiters(c, kernel.Unavailable("mcp server %s was stopped", a.spec.Name))
	case *applySpec:
		a.spec = m.spec
		a.drop()
		a.st = serverState{}
		a.everUp, a.attempts = false, 0
		a.start(c)
	case *connectResult:
		a.connected(c, m)
	case *sessionEnded:
		if m.gen != a.gen || a.session == nil {
			return
		}
		err := m.err
		if a.proc != nil {
			select {
			case <-a.proc.Done():
				err = fmt.Errorf("server process %v", a.proc.ExitError())
			case <-time.After(50 * time.Millisecond):
			}
		}
		a.drop()
		a.down(c, err)
	case *toolsChangedNotice:
		if m.gen == a.gen && a.session != nil {
			a.refreshTools(m.gen)
		}
	case *toolsListed:
		if m.gen != a.gen || a.session == nil {
			return
		}
		if m.err != nil {
			a.log().Warn().Err(m.err).Msg("refreshing tools after tools/list_changed failed")
			return
		}
		a.setTools(c, m.tools)
		a.report(c)
	case *retryConnect:
		if m.gen == a.gen && a.session == nil && a.st.Status == StatusReconnecting {
			a.connect(c)
		}
	case *reconnectNow:
		if a.spec.Disabled {
			c.Respond(&ReconnectReply{ID: a.spec.Name, Status: StatusDisabled})
			return
		}
		a.waiters = append(a.waiters, c.Sender())
		a.drop()
		a.attempts = 0
		a.connect(c)
	case *callTool:
		a.call(c, m)
	case *callDone:
		a.callDone(c, m)
	case *acceptTools:
		a.accept(c, m)
	}
}

func (a *conn) start(c actor.Context) {
	if a.spec.Disabled {
		a.st.Status = StatusDisabled
		a.report(c)
		return
	}
	a.connect(c)
}

// connect starts an attempt in a goroutine; its result comes back as a
// connectResult.
func (a *conn) connect(c actor.Context) {
	a.gen++
	gen := a.gen
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if a.everUp || a.attempts > 0 {
		// Not the first attempt for this definition.
		a.st.ReconnectAttempts++
	}
	if a.everUp {
		a.st.Status = StatusReconnecting
		a.st.Reconnecting = true
	} else {
		a.st.Status = StatusConnecting
	}
	a.report(c)
	spec, self, sys := a.spec, a.self, c.ActorSystem()
	go func() {
		res := a.env.dial(ctx, spec, gen, self, sys)
		if res.session != nil {
			// Dropping the attempt closes its session, whoever holds it
			// then: an actor that stopped between the dial and this send
			// never takes it (the result goes to dead letters), and its
			// open stream would outlive the daemon's stop.
			context.AfterFunc(ctx, func() { res.session.Close() })
		}
		if ctx.Err() == nil {
			sys.Root.Send(self, res)
		}
	}()
}

func (a *conn) connected(c actor.Context, m *connectResult) {
	if m.gen != a.gen || a.stopping {
		if m.session != nil {
			go m.session.Close()
		}
		return
	}
	if m.err != nil {
		a.cancel = nil
		a.down(c, m.err)
		return
	}
	// a.cancel stays: it ends the session's context when the session is
	// dropped.
	a.session, a.proc = m.session, m.proc
	session, gen, self, sys := m.session, m.gen, a.self, c.ActorSystem()
	go func() {
		err := session.Wait()
		sys.Root.Send(self, &sessionEnded{gen: gen, err: err})
	}()
	now := time.Now()
	a.everUp = true
	a.attempts = 0
	a.st.Status = StatusConnected
	a.st.Reconnecting = false
	a.st.ConnectedSince = now
	a.st.LastOK = now
	a.st.LastError, a.st.LastErrorCode = "", ""
	a.st.ConsecutiveFailures = 0
	if m.proc != nil {
		a.st.Pid = m.proc.Pid()
	}
	if ir := session.InitializeResult(); ir != nil {
		a.st.ProtocolVersion = ir.ProtocolVersion
		if ir.ServerInfo != nil {
			a.st.ServerInfo = strings.TrimSpace(ir.ServerInfo.Name + " " + ir.ServerInfo.Version)
		}
	}
	a.setTools(c, m.tools)
	a.report(c)
	a.log().Info().Int("tools", len(a.tools)).Str("protocol", a.st.ProtocolVersion).Msg("mcp server connected")
	a.env.publish("mcp.server.up", a.spec.Name, map[string]any{"tool_count": len(a.tools), "protocol_version": a.st.ProtocolVersion})
	a.answerWaiters(c, nil)
}

// down handles a failed attempt or a lost session: permanent errors stop
// retrying until the server is reconfigured or reconnected by hand; other
// errors schedule a retry after the kernel's capped, jittered backoff.
func (a *conn) down(c actor.Context, err error) {
	wasUp := a.st.Status == StatusConnected
	a.st.Pid = 0
	a.st.ConnectedSince = time.Time{}
	msg, code := "connection closed", ""
	var ke *kernel.Error
	if neterr.Network(err) {
		// The cause, without the URL (its query may hold a token).
		code, msg = neterr.Cause(err)
	} else if err != nil {
		msg = err.Error()
		if errors.As(err, &ke) && ke.Code == codeAuthRequired {
			code = codeAuthRequired
		}
	}
	a.st.LastError, a.st.LastErrorCode = msg, code
	b := a.env.opts.Backoff
	a.attempts++
	switch {
	case isPermanent(err):
		a.st.Status = StatusError
		a.st.Reconnecting = false
		a.log().Error().Str("error", msg).Msg("mcp server failed permanently; not retrying until it is reconfigured or reconnected")
	case a.attempts > b.MaxRetries:
		a.st.Status = StatusError
		a.st.Reconnecting = false
		a.st.LastError = fmt.Sprintf("gave up after %d attempts: %s", a.attempts-1, msg)
		a.log().Error().Str("error", msg).Msg("mcp server is down; retries exhausted")
	default:
		a.st.Status = StatusReconnecting
		a.st.Reconnecting = true
		gen, self, sys := a.gen, a.self, c.ActorSystem()
		delay := b.Jittered(a.attempts)
		time.AfterFunc(delay, func() { sys.Root.Send(self, &retryConnect{gen: gen}) })
		a.log().Warn().Str("error", msg).Dur("retry_in_ms", delay).Msg("mcp server is down")
	}
	a.report(c)
	if wasUp {
		a.env.publish("mcp.server.down", a.spec.Name, map[string]any{"error": a.st.LastError})
	}
	if a.st.Status == StatusError || len(a.waiters) > 0 {
		a.answerWaiters(c, nil)
	}
}

// drop abandons the in-flight attempt and closes the session.
func (a *conn) drop() {
	a.gen++
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	a.proc = nil
	if a.session != nil {
		s := a.session
		a.session = nil
		if a.stopping {
			// Stopping: the process must be gone when the actor is.
			s.Close()
		} else {
			go s.Close()
		}
	}
}

func (a *conn) answerWaiters(c actor.Context, err error) {
	for _, w := range a.waiters {
		if err != nil {
			c.Send(w, err)
			continue
		}
		c.Send(w, &ReconnectReply{ID: a.spec.Name, Status: a.st.Status, ToolCount: len(a.tools), Error: errText(a.st)})
	}
	a.waiters = nil
}

func errText(st serverState) string {
	if st.Status == StatusConnected {
		return ""
	}
	return st.LastError
}

func (a *conn) refreshTools(gen uint64) {
	session, self, sys := a.session, a.self, a.env.k.System
	timeout := a.spec.Timeout()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		tools, err := listTools(ctx, session)
		sys.Root.Send(self, &toolsListed{gen: gen, tools: tools, err: err})
	}()
}

func listTools(ctx context.Context, s *sdk.ClientSession) ([]*sdk.Tool, error) {
	var out []*sdk.Tool
	for t, err := range s.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// setTools records a fresh tool list and checks it against the pins.
func (a *conn) setTools(c actor.Context, tools []*sdk.Tool) {
	a.tools = make(map[string]*sdk.Tool, len(tools))
	for _, t := range tools {
		a.tools[t.Name] = t
	}
	dirty, changed := a.pins.observe(tools)
	if dirty {
		if err := a.env.pins.Put(a.spec.Name, a.pins); err != nil {
			a.log().Error().Err(err).Msg("could not store tool pins")
		}
	}
	if len(changed) > 0 {
		a.log().Warn().Strs("tools", changed).Bool("quarantined", a.env.opts.QuarantineChanged).Msg("mcp server changed tool definitions since they were pinned")
		a.env.record(audit.Event{EventType: "mcp_tools_changed", Outcome: "flagged", Actor: "mcp",
			Details: fmt.Sprintf("server=%s tools=%s quarantined=%t", a.spec.Name, strings.Join(changed, ","), a.env.opts.QuarantineChanged)})
		a.env.publish("mcp.tools_changed", a.spec.Name, map[string]any{"tools": changed, "quarantined": a.env.opts.QuarantineChanged})
	}
	a.st.ToolsChanged = len(a.pins.Changed) > 0
	a.st.Tools = a.toolInfos()
}

func (a *conn) toolInfos() []ToolInfo {
	names := slices.Sorted(maps.Keys(a.tools))
	out := make([]ToolInfo, 0, len(names))
	for _, n := range names {
		t := a.tools[n]
		_, changed := a.pins.Changed[n]
		info := ToolInfo{Name: Namespace(a.spec.Name, n), OriginalName: n, Description: t.Description,
			InputSchema: schemaJSON(t.InputSchema), Changed: changed, ReadOnlyHint: readOnly(t),
			Quarantined: changed && a.env.opts.QuarantineChanged}
		out = append(out, info)
	}
	return out
}

func (a *conn) loadPins() {
	p, err := a.env.pins.Get(a.spec.Name)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			a.log().Error().Err(err).Msg("could not load tool pins")
		}
		p = newPinState()
	}
	if p.Pins == nil {
		p.Pins = map[string]string{}
	}
	if p.Changed == nil {
		p.Changed = map[string]string{}
	}
	a.pins = p
}

func (a *conn) accept(c actor.Context, m *acceptTools) {
	for _, n := range m.tools {
		if _, ok := a.pins.Changed[n]; !ok {
			c.Respond(kernel.Invalid("tool %q has no pending change to accept", n))
			return
		}
	}
	accepted := a.pins.accept(m.tools)
	if len(accepted) > 0 {
		if err := a.env.pins.Put(a.spec.Name, a.pins); err != nil {
			c.Respond(err)
			return
		}
	}
	a.st.ToolsChanged = len(a.pins.Changed) > 0
	a.st.Tools = a.toolInfos()
	a.report(c)
	if accepted == nil {
		accepted = []string{}
	}
	c.Respond(&AcceptReply{ID: a.spec.Name, Accepted: accepted})
}

// call runs one tool call in a goroutine. While the server is down it
// fails at once with the reason instead of waiting for a timeout.
func (a *conn) call(c actor.Context, m *callTool) {
	if a.session == nil {
		reason := a.st.LastError
		if reason == "" {
			reason = a.st.Status
		}
		m.reply <- callResult{err: kernel.Errorf(kernel.KindUnavailable, "mcp_server_down", "mcp server %s is not connected (%s)", a.spec.Name, reason)}
		return
	}
	if _, ok := a.tools[m.tool]; !ok {
		m.reply <- callResult{err: unknownTool(a.spec.Name, m.tool)}
		return
	}
	if _, changed := a.pins.Changed[m.tool]; changed && a.env.opts.QuarantineChanged {
		m.reply <- callResult{err: quarantined(a.spec.Name, m.tool)}
		return
	}
	session, gen, self, sys, timeout, name := a.session, a.gen, a.self, c.ActorSystem(), a.spec.Timeout(), a.spec.Name
	go func() {
		res, err, failure := callSession(m.ctx, session, name, m.tool, m.args, timeout)
		m.reply <- callResult{res: res, err: err}
		sys.Root.Send(self, &callDone{gen: gen, failure: failure})
	}()
}

// callDone feeds health: consecutive transport failures or timeouts past
// the threshold force a reconnect.
func (a *conn) callDone(c actor.Context, m *callDone) {
	if m.gen != a.gen || a.session == nil {
		return
	}
	if m.failure == nil {
		a.st.ConsecutiveFailures = 0
		a.st.LastOK = time.Now()
		return
	}
	a.st.ConsecutiveFailures++
	a.st.LastError = m.failure.Error()
	if a.st.ConsecutiveFailures >= a.env.opts.FailureThreshold {
		a.log().Warn().Int("failures", a.st.ConsecutiveFailures).Msg("too many failed calls; reconnecting")
		a.drop()
		a.down(c, fmt.Errorf("%d consecutive failed calls, last: %w", a.st.ConsecutiveFailures, m.failure))
		return
	}
	a.report(c)
}

func (a *conn) report(c actor.Context) {
	// Publish first: whoever reads this report (or the answer that follows
	// it) may call at once, and the deferred publish in Receive runs only
	// after both have gone out.
	a.publish(c)
	st := a.st
	st.Tools = slices.Clone(a.st.Tools)
	if c.Parent() != nil {
		c.Send(c.Parent(), &serverReport{name: a.spec.Name, state: st})
	}
}

// isPermanent reports a failure that retrying cannot fix: one marked
// kernel.Permanent, or a command that is not installed.
func isPermanent(err error) bool {
	return kernel.IsPermanent(err) || errors.Is(err, stdio.ErrCommandNotFound)
}

// dial makes one connection attempt: resolve the spec's values, start the
// transport, initialize (the SDK offers the newest protocol version and
// settles on the newest both sides speak), list the tools.
func (e *env) dial(ctx context.Context, spec Spec, gen uint64, self *actor.PID, sys *actor.ActorSystem) *connectResult {
	res := &connectResult{gen: gen}
	r, err := resolve(spec, e.vault, e.opts.Environ)
	if err != nil {
		res.err = kernel.Permanent(err)
		return res
	}
	var transport sdk.Transport
	var proc *stdio.Transport
	var remote *remoteClient
	switch spec.Transport.Type {
	case TransportStdio:
		dir := filepath.Join(e.opts.Home, "mcp", "work", spec.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			res.err = kernel.Permanent(fmt.Errorf("working directory: %w", err))
			return res
		}
		proc = stdio.New(stdio.Options{
			Command: spec.Transport.Command, Args: r.args, Dir: dir,
			Env:        stdio.Environ(e.opts.Sandbox.EnvAllowlist, os.Environ(), r.env),
			CPUSeconds: e.opts.Sandbox.CPUSeconds, MemoryMB: e.opts.Sandbox.MemoryMB,
			Grace: e.opts.StopGrace, Log: e.log.With().Str("mcp_server", spec.Name).Logger(),
		})
		transport = proc
	case TransportHTTP, TransportSSE:
		if e.opts.Policy != nil {
			if _, err := e.opts.Policy.Check(ctx, spec.Transport.URL); err != nil {
				// A refusal stays a refusal; a name that does not resolve
				// may resolve on the next attempt.
				if ssrf.IsBlocked(err) {
					err = kernel.Permanent(err)
				}
				res.err = err
				return res
			}
		}
		tokens, err := e.tokensFor(spec.Name)
		if err != nil {
			res.err = err
			return res
		}
		remote = newRemoteClient(r.headers, e.opts.Policy, spec.Timeout(), tokens)
		if spec.Transport.Type == TransportHTTP {
			// No SDK-level stream retries: a lost stream ends the session at
			// once and the actor reconnects with the kernel's backoff.
			transport = &sdk.StreamableClientTransport{Endpoint: spec.Transport.URL, HTTPClient: remote.Client, MaxRetries: -1}
		} else {
			transport = &sdk.SSEClientTransport{Endpoint: spec.Transport.URL, HTTPClient: remote.Client}
		}
	default:
		res.err = kernel.Permanent(fmt.Errorf("transport type %q is not supported", spec.Transport.Type))
		return res
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "fangd", Version: e.opts.Version}, &sdk.ClientOptions{
		// No roots, sampling or elicitation: fangd offers servers nothing
		// but tool calls.
		Capabilities: &sdk.ClientCapabilities{},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) {
			sys.Root.Send(self, &toolsChangedNotice{gen: gen})
		},
	})
	// The legacy SSE transport ties its event stream to the context given
	// to Connect, so that context must outlive the attempt: it is the
	// attempt's own, cancelled when the actor drops the session. The
	// timeout is a timer that cancels it only while connecting.
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(spec.Timeout(), cancel)
	session, err := client.Connect(cctx, transport, nil)
	if err != nil {
		cancel()
		res.err = e.connectError(err, proc, remote)
		return res
	}
	tools, err := listTools(cctx, session)
	if err == nil && !timer.Stop() {
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		session.Close()
		res.err = fmt.Errorf("tools/list: %w", e.connectError(err, proc, remote))
		return res
	}
	res.session, res.tools = session, tools
	if proc != nil {
		res.proc = proc.Process()
	}
	return res
}

// connectError explains a failed attempt: a stdio server's own last
// words, or a refusal of our credentials (permanent).
func (e *env) connectError(err error, proc *stdio.Transport, remote *remoteClient) error {
	if errors.Is(err, stdio.ErrCommandNotFound) {
		return err
	}
	if proc != nil && proc.Process() != nil {
		p := proc.Process()
		select {
		case <-p.Done():
			return fmt.Errorf("server process %v", p.ExitError())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if remote != nil && remote.denied() {
		// Permanent: only new credentials (a PUT, or an OAuth flow started
		// with POST /api/mcp/servers/{name}/auth/start) can fix it.
		return kernel.Permanent(kernel.Errorf(kernel.KindUpstream, codeAuthRequired,
			"server refused the credentials (HTTP %d): %v", remote.lastStatus.Load(), err))
	}
	return err
}

// record appends an audit entry without holding up the actor.
func (e *env) record(ev audit.Event) {
	if e.audit == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
		defer cancel()
		if _, err := e.audit.Append(ctx, ev); err != nil {
			e.log.Error().Err(err).Str("event", ev.EventType).Msg("could not audit")
		}
	}()
}

func (e *env) publish(eventType, server string, detail map[string]any) {
	if e.opts.Events != nil {
		e.opts.Events.Publish(eventType, "mcp:"+server, "", detail)
	}
}
