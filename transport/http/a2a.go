package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	nethttp "net/http"
	"net/url"
	"strings"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// The A2A routes. Protocol side (unversioned): the cards, the list of local
// agents, the JSON-RPC binding (shared endpoint /a2a and one per agent)
// and the seed's REST routes /a2a/tasks/*. Management side (/api/a2a/*):
// discovery of external agents and outbound tasks.

// cardMaxAge is how long clients may cache a card (agents change rarely;
// the ETag makes revalidation cheap).
const cardMaxAge = "public, max-age=60"

func (s *Server) a2aRoutes() {
	if s.deps.A2A == nil {
		return
	}
	protocol := routeOpts{peers: true, maxBody: s.cfg.A2AMaxBodyBytes}
	rpc := routeOpts{peers: true, rpc: true, maxBody: s.cfg.A2AMaxBodyBytes}
	s.handle("GET", "/.well-known/agent.json", s.a2aSeedCard, public)
	s.handle("GET", "/.well-known/agent-card.json", s.a2aCard, public)
	// The same cards under /a2a, the URL the seed's card advertises: a
	// client that discovers <base>/a2a (LibreFang does) finds them there.
	s.handle("GET", "/a2a/.well-known/agent.json", s.a2aSeedCard, public)
	s.handle("GET", "/a2a/.well-known/agent-card.json", s.a2aCard, public)
	s.handle("GET", "/a2a/agents", s.a2aLocalCards, public)
	s.handle("GET", "/a2a/agents/{id}/.well-known/agent-card.json", s.a2aAgentCard, public)
	s.handle("POST", "/a2a", s.a2aRPC, rpc)
	s.handle("POST", "/a2a/agents/{id}", s.a2aAgentRPC, rpc)
	s.handle("POST", "/a2a/tasks/send", s.a2aTasksSend, protocol)
	s.handle("GET", "/a2a/tasks/{id}", s.a2aTaskGet, protocol)
	s.handle("POST", "/a2a/tasks/{id}/cancel", s.a2aTaskCancel, protocol)

	s.api("POST", "/a2a/discover", s.a2aDiscover)
	s.api("GET", "/a2a/agents", s.a2aExternalAgents)
	s.api("GET", "/a2a/agents/{id}", s.a2aExternalAgent)
	s.api("DELETE", "/a2a/agents/{id}", s.a2aDeleteExternalAgent)
	s.api("POST", "/a2a/agents/{id}/approve", s.a2aApprove)
	s.api("POST", "/a2a/send", s.a2aSend)
	s.api("GET", "/a2a/tasks/{id}/status", s.a2aOutboundStatus)
}

// a2aCaller hands the authenticated caller to the A2A service: the API key
// and loopback see every task, a peer only its own.
func a2aCaller(ctx *fasthttp.RequestCtx) a2a.Caller {
	actor, _ := ctx.UserValue(userActor).(string)
	c := a2a.Caller{Name: actor, Admin: !strings.HasPrefix(actor, "peer:")}
	ctx.SetUserValue(a2a.CallerKey, c)
	return c
}

// serveCard writes a public card with an ETag; a matching If-None-Match
// gets 304.
func serveCard(ctx *fasthttp.RequestCtx, body []byte) {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	h := &ctx.Response.Header
	h.Set("ETag", etag)
	h.Set("Cache-Control", cardMaxAge)
	// Cards are meant to be read from anywhere, browsers included.
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatches(inm, etag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(body)
}

func etagMatches(header []byte, etag string) bool {
	for _, part := range strings.Split(string(header), ",") {
		p := strings.TrimPrefix(strings.TrimSpace(part), "W/")
		if p == "*" || p == etag {
			return true
		}
	}
	return false
}

// a2aSeedCard serves GET /.well-known/agent.json: the seed's card shape.
func (s *Server) a2aSeedCard(ctx *fasthttp.RequestCtx) error {
	body, err := s.deps.A2A.SeedCardJSON(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	serveCard(ctx, body)
	return nil
}

// a2aCard serves GET /.well-known/agent-card.json: the A2A 1.0 card (in
// the SDK's 1.0 + 0.3 union form) of the daemon's shared endpoint.
func (s *Server) a2aCard(ctx *fasthttp.RequestCtx) error {
	body, err := s.deps.A2A.CardJSON(s.reqCtx(ctx), "")
	if err != nil {
		return err
	}
	serveCard(ctx, body)
	return nil
}

// a2aAgentCard serves one local agent's card.
func (s *Server) a2aAgentCard(ctx *fasthttp.RequestCtx) error {
	agent, err := s.deps.A2A.LocalAgent(s.reqCtx(ctx), ctx.UserValue("id").(string))
	if err != nil {
		return err
	}
	body, err := s.deps.A2A.CardJSON(s.reqCtx(ctx), agent.ID)
	if err != nil {
		return err
	}
	serveCard(ctx, body)
	return nil
}

// a2aLocalCards serves GET /a2a/agents?offset=&limit=: one card per local
// agent, paged like /api/agents (default and max 100).
func (s *Server) a2aLocalCards(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 100)
	if err != nil {
		return err
	}
	cards, err := s.deps.A2A.LocalCards(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, pageItems(cards, offset, limit))
	return nil
}

// a2aRPC serves the JSON-RPC binding of the shared endpoint.
func (s *Server) a2aRPC(ctx *fasthttp.RequestCtx) error {
	return s.serveRPC(ctx, "")
}

// a2aAgentRPC serves the JSON-RPC binding of one local agent (by id or name).
func (s *Server) a2aAgentRPC(ctx *fasthttp.RequestCtx) error {
	agent, err := s.deps.A2A.LocalAgent(s.reqCtx(ctx), ctx.UserValue("id").(string))
	if err != nil {
		if s.a2aDir != nil {
			a2aCaller(ctx)
			if done, rerr := s.a2aRoute(ctx, a2aTarget{agentRef: ctx.UserValue("id").(string)}); done || rerr != nil {
				return rerr
			}
		}
		return err
	}
	return s.serveRPC(ctx, agent.ID)
}

// serveRPC hands the request to the SDK's JSON-RPC handlers (net/http,
// adapted to fasthttp; streaming answers flow through as SSE).
func (s *Server) serveRPC(ctx *fasthttp.RequestCtx, agentID string) error {
	a2aCaller(ctx)
	if s.a2aDir != nil {
		if done, err := s.a2aRoute(ctx, a2aRPCTarget(ctx.PostBody(), agentID)); done || err != nil {
			return err
		}
	}
	var head struct {
		Method string `json:"method"`
	}
	_ = json.Unmarshal(ctx.PostBody(), &head)
	if head.Method != "" && len(head.Method) <= 64 {
		auditDetails(ctx, "A2A JSON-RPC "+head.Method)
	}
	if s.a2aListFromCluster(ctx, head.Method, agentID) && s.a2aListCluster(ctx) {
		return nil
	}
	if a2aStreamMethods[head.Method] {
		if n := s.a2aStreams.Add(1); s.cfg.MaxA2AStreams > 0 && n > int64(s.cfg.MaxA2AStreams) {
			s.a2aStreams.Add(-1)
			ctx.Response.Header.Set("Retry-After", "5")
			return &apiError{fasthttp.StatusTooManyRequests, "a2a_stream_limit",
				fmt.Sprintf("%d A2A streams are open, the most allowed ([a2a] max_streams)", s.cfg.MaxA2AStreams)}
		}
		// rpcBridge gives the slot back when the stream's handler returns.
		ctx.SetUserValue(userStreamSlot, true)
	} else {
		// A plain answer waits for the task writes it is ahead of after
		// the handler, alongside the request's audit entry (chain).
		ctx.SetUserValue(userPendingWrites, a2a.NewPendingWrites())
	}
	v, ok := s.rpcHandlers.Load(agentID)
	if !ok {
		rh := s.deps.A2A.JSONRPC(agentID)
		v, _ = s.rpcHandlers.LoadOrStore(agentID, &rpcEndpoint{rpc: rh, adapted: fasthttpadaptor.NewFastHTTPHandler(s.rpcBridge(rh))})
	}
	ep := v.(*rpcEndpoint)
	if head.Method == "SendMessage" && s.serveSendMessage(ctx, ep.rpc) {
		return nil
	}
	ctx.SetUserValue(userConn, connRef{ctx.Conn()})
	// The SDK writes its own Cache-Control for streams; the envelope's
	// no-store stays for plain answers.
	ep.adapted(ctx)
	return nil
}

// rpcEndpoint is one A2A endpoint's JSON-RPC binding: the SDK's handler
// adapted to fasthttp, and the binding itself for SendMessage's shortcut.
type rpcEndpoint struct {
	rpc     *a2a.RPCHandler
	adapted fasthttp.RequestHandler
}

// serveSendMessage answers a plain 1.0 SendMessage without the net/http
// adaptor (a2a.RPCHandler.ServeSendMessage): the handler's context is the
// one rpcBridge gives it. It reports false, having written nothing, for a
// request the full binding must serve.
func (s *Server) serveSendMessage(ctx *fasthttp.RequestCtx, rh *a2a.RPCHandler) bool {
	base, cancel := s.streamCtx()
	defer cancel()
	caller, _ := ctx.UserValue(a2a.CallerKey).(a2a.Caller) // serveRPC's a2aCaller
	rctx := context.WithValue(base, a2a.CallerKey, caller)
	if pw, _ := ctx.UserValue(userPendingWrites).(*a2a.PendingWrites); pw != nil {
		rctx = a2a.WithPendingWrites(rctx, pw)
	}
	answer, ok := rh.ServeSendMessage(rctx, ctx.PostBody(), a2aServiceParams(&ctx.Request.Header))
	if !ok {
		return false
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(answer)
	return true
}

// a2aServiceParams is the part of a request's header SendMessage's
// shortcut hands the SDK as the call's service parameters: the A2A-*
// ones (A2A-Version, A2A-Extensions), nil when there are none. The
// adaptor's copy of every header cost ~17 allocations a send, and only
// these are read on that path: fangd's protocol handler installs no
// interceptors and requires no extensions, so nothing looks at the rest.
func a2aServiceParams(h *fasthttp.RequestHeader) nethttp.Header {
	var header nethttp.Header
	for k, v := range h.All() {
		if len(k) > len(a2aParamPrefix) && bytes.EqualFold(k[:len(a2aParamPrefix)], a2aParamPrefix) {
			if header == nil {
				header = make(nethttp.Header, 2)
			}
			header.Add(string(k), string(v))
		}
	}
	return header
}

var a2aParamPrefix = []byte("A2A-")

// DefaultMaxA2AStreams is [a2a] max_streams' default.
const DefaultMaxA2AStreams = 256

// a2aStreamMethods are the JSON-RPC methods answered with a stream, in
// the v0.3 and v1 spellings.
var a2aStreamMethods = map[string]bool{"message/stream": true, "tasks/resubscribe": true,
	"SendStreamingMessage": true, "SubscribeToTask": true}

// userStreamSlot marks a request that holds an A2A stream slot.
const userStreamSlot = "fangd.a2a.stream"

// userPendingWrites carries a JSON-RPC request's *a2a.PendingWrites from
// serveRPC to rpcBridge (which hands it to the protocol handler) and to
// the chain (which waits for it before the answer leaves).
const userPendingWrites = "fangd.a2a.pending"

// awaitPendingWrites waits for the task writes the answer is ahead of
// (a2a.PendingWrites). It runs after the request's audit entry has been
// appended, so the two commits overlap; no answer leaves before both.
func (s *Server) awaitPendingWrites(ctx *fasthttp.RequestCtx) {
	pw, _ := ctx.UserValue(userPendingWrites).(*a2a.PendingWrites)
	if pw == nil {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), a2a.PendingWritesTimeout)
	defer cancel()
	if err := pw.Wait(c); err != nil {
		s.writeError(ctx, kernel.Unavailable("the task's final state was not confirmed stored in time"))
	}
}

// userConn carries the request's connection to rpcBridge.
const userConn = "fangd.conn"

// connRef holds the connection without being an io.Closer: fasthttp
// closes io.Closer user values when it releases the request.
type connRef struct{ c net.Conn }

// rpcBridge adapts the SDK's net/http handler to life on fasthttp:
//
//   - the handler gets its own context instead of fasthttp's RequestCtx,
//     which fasthttp reuses once the response is written while a stream's
//     goroutine may still read it (a data race); the context carries the
//     caller and ends when the server shuts down or the handler returns;
//   - SSE answers outlive the server's one-shot write timeout (see
//     streamWriter).
func (s *Server) rpcBridge(h nethttp.Handler) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		rc := r.Context()
		if slot, _ := rc.Value(userStreamSlot).(bool); slot {
			defer s.a2aStreams.Add(-1)
		}
		caller, _ := rc.Value(a2a.CallerKey).(a2a.Caller)
		conn, _ := rc.Value(userConn).(connRef)
		ctx, cancel := s.streamCtx()
		defer cancel()
		rctx := context.WithValue(ctx, a2a.CallerKey, caller)
		if pw, _ := rc.Value(userPendingWrites).(*a2a.PendingWrites); pw != nil {
			rctx = a2a.WithPendingWrites(rctx, pw)
		}
		r = r.WithContext(rctx)
		h.ServeHTTP(s.streamWriter(w, conn), r)
	})
}

// streamWriter lets a net/http handler mounted with fasthttpadaptor (the
// A2A and MCP SDKs) stream past the server's one-shot write timeout:
// fasthttp sets the connection's write deadline once per response, so
// every write and flush of a stream (an event or a keep-alive) pushes it
// forward instead, by StreamWriteTimeout. conn is the request's
// connection, taken while the request was still the handler's.
func (s *Server) streamWriter(w nethttp.ResponseWriter, conn connRef) nethttp.ResponseWriter {
	return sse.NewDeadline(conn.c, s.cfg.StreamWriteTimeout).ResponseWriter(w)
}

// a2aRPCError is the JSON-RPC body for an error the HTTP layer itself raises
// on a JSON-RPC route (auth, rate limit, size, unknown agent).
func a2aRPCError(status int, code, msg, requestID string) a2a.RPCError {
	var kind error
	switch {
	case status == fasthttp.StatusUnauthorized:
		kind = sdk.ErrUnauthenticated
	case status == fasthttp.StatusForbidden:
		kind = sdk.ErrUnauthorized
	case status == fasthttp.StatusNotFound:
		kind = sdk.ErrInvalidParams
	case status == fasthttp.StatusTooManyRequests:
		kind = sdk.ErrServerError
	case status >= 400 && status < 500:
		kind = sdk.ErrInvalidRequest
	default:
		kind = sdk.ErrInternalError
	}
	return a2a.NewRPCError(nil, kind, msg, map[string]any{"code": code, "request_id": requestID})
}

// seedSendBody is POST /a2a/tasks/send: the seed's {"agent_id", "message"}
// and LibreFang's JSON-RPC-ish {"params": {"agentId", "message", "sessionId"}}.
type seedSendBody struct {
	AgentID   string           `json:"agent_id"`
	Message   a2a.MessageInput `json:"message"`
	SessionID string           `json:"session_id"`
	ContextID string           `json:"context_id"`
	Params    *struct {
		AgentID   string           `json:"agentId"`
		Message   a2a.MessageInput `json:"message"`
		SessionID string           `json:"sessionId"`
		ID        string           `json:"id"`
	} `json:"params"`
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	ID      json.RawMessage `json:"id"`
}

// a2aTasksSend serves POST /a2a/tasks/send: run a local agent's turn and
// answer with the seed's {"task_id", "status", "result"}. A failed task is
// answered 500 with the task (LibreFang's behaviour); one still working
// when the wait ends is 202 and can be polled at GET /a2a/tasks/{id}.
func (s *Server) a2aTasksSend(ctx *fasthttp.RequestCtx) error {
	var b seedSendBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	agent, msg, session := b.AgentID, b.Message, firstNonEmpty(b.ContextID, b.SessionID)
	if b.Params != nil {
		agent = firstNonEmpty(agent, b.Params.AgentID)
		if !msg.IsSet() {
			msg = b.Params.Message
		}
		session = firstNonEmpty(session, b.Params.SessionID)
	}
	if strings.TrimSpace(agent) == "" {
		return badRequest("missing_agent_id", "agent_id is required")
	}
	if !msg.IsSet() {
		return badRequest("missing_message", "message is required: {\"role\": \"user\", \"parts\": [{\"text\": \"...\"}]}")
	}
	m, err := msg.ToA2A()
	if err != nil {
		return err
	}
	a2aCaller(ctx)
	if s.a2aDir != nil {
		if done, err := s.a2aRoute(ctx, a2aTarget{contextID: session, agentRef: agent}); done || err != nil {
			return err
		}
	}
	snap, err := s.deps.A2A.SendSeed(s.reqCtxWait(ctx), agent, m, session)
	if err != nil {
		return err
	}
	auditDetails(ctx, "A2A task "+snap.ID()+" for agent "+snap.AgentID()+": "+a2a.SeedStatus(snap.State()))
	status := fasthttp.StatusOK
	switch {
	case snap.State() == sdk.TaskStateFailed:
		status = fasthttp.StatusInternalServerError
	case !snap.Terminal():
		status = fasthttp.StatusAccepted
	}
	writeJSON(ctx, status, snap.Seed())
	return nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// a2aTaskGet serves GET /a2a/tasks/{id}.
func (s *Server) a2aTaskGet(ctx *fasthttp.RequestCtx) error {
	a2aCaller(ctx)
	if s.a2aDir != nil {
		if done, err := s.a2aRoute(ctx, a2aTarget{taskID: ctx.UserValue("id").(string)}); done || err != nil {
			return err
		}
	}
	snap, err := s.deps.A2A.InboundTask(s.reqCtx(ctx), ctx.UserValue("id").(string))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, snap.Seed())
	return nil
}

// a2aTaskCancel serves POST /a2a/tasks/{id}/cancel: the running turn is
// stopped; a finished task is a 409.
func (s *Server) a2aTaskCancel(ctx *fasthttp.RequestCtx) error {
	a2aCaller(ctx)
	id := ctx.UserValue("id").(string)
	if s.a2aDir != nil {
		if done, err := s.a2aRoute(ctx, a2aTarget{taskID: id}); done || err != nil {
			return err
		}
	}
	snap, err := s.deps.A2A.CancelInbound(s.reqCtx(ctx), id)
	if err != nil {
		return err
	}
	auditDetails(ctx, "A2A task "+id+" cancelled")
	writeJSON(ctx, fasthttp.StatusOK, snap.Seed())
	return nil
}

// discoverBody is POST /api/a2a/discover.
type discoverBody struct {
	URL string `json:"url"`
	// Token, when set, is presented as a bearer token on every call to the
	// agent; it is kept in the vault and never shown.
	Token string `json:"token"`
}

// a2aDiscover serves POST /api/a2a/discover: 201 with a newly discovered
// agent, 200 when it was known (and has been refreshed).
func (s *Server) a2aDiscover(ctx *fasthttp.RequestCtx) error {
	var b discoverBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	agent, created, err := s.deps.A2A.Discover(s.reqCtxWait(ctx), b.URL, []byte(b.Token))
	if err != nil {
		return err
	}
	auditDetails(ctx, "A2A agent "+agent.ID+" ("+agent.Name+") discovered at "+agent.URL)
	status := fasthttp.StatusOK
	if created {
		status = fasthttp.StatusCreated
	}
	writeJSON(ctx, status, agent.Summary())
	return nil
}

// a2aExternalAgents serves GET /api/a2a/agents?offset=&limit= (default
// and max 100).
func (s *Server) a2aExternalAgents(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 100)
	if err != nil {
		return err
	}
	all, err := s.deps.A2A.ExternalAgents(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, pageItems(all, offset, limit))
	return nil
}

// a2aExternalAgent serves GET /api/a2a/agents/{id} (id or name), with the
// agent's card.
func (s *Server) a2aExternalAgent(ctx *fasthttp.RequestCtx) error {
	a, err := s.deps.A2A.ExternalAgent(s.reqCtx(ctx), ctx.UserValue("id").(string))
	return reply(ctx, a, err)
}

// a2aDeleteExternalAgent serves DELETE /api/a2a/agents/{id}.
func (s *Server) a2aDeleteExternalAgent(ctx *fasthttp.RequestCtx) error {
	id := ctx.UserValue("id").(string)
	if err := s.deps.A2A.DeleteExternalAgent(s.reqCtx(ctx), id); err != nil {
		return err
	}
	auditDetails(ctx, "A2A agent "+id+" removed")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

// a2aApprove serves POST /api/a2a/agents/{id}/approve, LibreFang's step
// between discovery and sending. {id} is the agent's id or name, or (as
// LibreFang's clients send it) its discovery URL, percent-encoded. fangd
// trusts an agent when an API key holder discovers it, so a discovered
// agent is already trusted: the answer says so and changes nothing; one
// never discovered is a 404 (discover it first).
func (s *Server) a2aApprove(ctx *fasthttp.RequestCtx) error {
	raw := ctx.UserValue("id").(string)
	ref, err := url.PathUnescape(raw)
	if err != nil {
		return badRequest("a2a_invalid_url", "the agent in the path is not valid percent-encoding")
	}
	var agent a2a.ExternalAgent
	if strings.Contains(ref, "://") {
		var found bool
		if agent, found, err = s.deps.A2A.ExternalAgentByURL(s.reqCtx(ctx), ref); err != nil {
			return err
		}
		if !found {
			return kernel.Errorf(kernel.KindNotFound, "agent_not_found", "no external agent was discovered at %s: POST /api/a2a/discover it first", truncateText(ref, 200))
		}
	} else if agent, err = s.deps.A2A.ExternalAgent(s.reqCtx(ctx), ref); err != nil {
		return err
	}
	auditDetails(ctx, "A2A agent "+agent.ID+" ("+agent.Name+") approved: already trusted since its discovery")
	writeJSON(ctx, fasthttp.StatusOK, struct {
		URL     string            `json:"url"`
		Status  string            `json:"status"`
		Agent   a2a.ExternalAgent `json:"agent"`
		Message string            `json:"message"`
	}{agent.URL, agent.Status, agent.Summary(), "Agent is trusted: fangd trusts an agent when an API key holder discovers it. It can receive tasks via POST /api/a2a/send."})
	return nil
}

// a2aSendBody is POST /api/a2a/send: the seed's {"agent_id", "message"},
// message a string or {"role", "parts"}.
type a2aSendBody struct {
	AgentID string `json:"agent_id"`
	// URL is LibreFang's way to name the external agent: its discovery URL.
	URL       string           `json:"url"`
	Message   a2a.MessageInput `json:"message"`
	ContextID string           `json:"context_id"`
	SessionID string           `json:"session_id"`
}

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// a2aSend serves POST /api/a2a/send: 202 with {"task_id", "status",
// "agent_id"} at once; the outbound task runs on. The same Idempotency-Key
// with the same body replays the first answer; with another body it is a
// 409.
func (s *Server) a2aSend(ctx *fasthttp.RequestCtx) error {
	var b a2aSendBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	byURL := strings.TrimSpace(b.URL) != ""
	if !byURL && strings.TrimSpace(b.AgentID) == "" {
		return badRequest("missing_agent_id", "agent_id (a discovered agent's id or name, or one agent a discovered peer serves) or url is required")
	}
	if !b.Message.IsSet() {
		return badRequest("a2a_missing_message", "message is required: a string or {\"role\": \"user\", \"parts\": [{\"text\": \"...\"}]}")
	}
	m, err := b.Message.ToA2A()
	if err != nil {
		return err
	}
	key := string(bytes.TrimSpace(ctx.Request.Header.Peek("Idempotency-Key")))
	if len(key) > maxIdempotencyKey {
		return badRequest("invalid_idempotency_key", "Idempotency-Key is longer than 255 characters")
	}
	sum := sha256.Sum256(ctx.PostBody())
	a2aCaller(ctx)
	discovered, remote := "", ""
	if byURL {
		// With url naming the peer, agent_id picks one of the agents it
		// serves (a fangd peer serves several behind one URL).
		remote = strings.TrimSpace(b.AgentID)
		// LibreFang sends only to agents it discovered (and an operator
		// approved). fangd trusts an agent when an API key holder
		// discovers it, and this caller holds the key: a URL not
		// discovered yet is discovered first (SSRF-checked as always).
		agent, found, err := s.deps.A2A.ExternalAgentByURL(s.reqCtx(ctx), b.URL)
		if err != nil {
			return err
		}
		if !found {
			if agent, _, err = s.deps.A2A.Discover(s.reqCtxWait(ctx), b.URL, nil); err != nil {
				return err
			}
			discovered = "discovered " + agent.URL + " and "
		}
		b.AgentID = agent.ID
	}
	receipt, replayed, err := s.deps.A2A.SendOutbound(s.reqCtxWait(ctx), a2a.OutboundRequest{
		AgentRef: b.AgentID, RemoteAgent: remote, Message: m, ContextID: firstNonEmpty(b.ContextID, b.SessionID),
		IdempotencyKey: key, BodyHash: hex.EncodeToString(sum[:]),
	})
	if err != nil {
		return err
	}
	if replayed {
		ctx.Response.Header.Set("Idempotency-Replayed", "true")
		auditDetails(ctx, "A2A send replayed for Idempotency-Key: task "+receipt.TaskID)
	} else {
		auditDetails(ctx, "A2A "+discovered+"task "+receipt.TaskID+" sent to external agent "+receipt.AgentID)
	}
	if byURL {
		return s.a2aSendWait(ctx, receipt)
	}
	writeJSON(ctx, fasthttp.StatusAccepted, receipt)
	return nil
}

// a2aSendWait answers a send by URL as LibreFang does: once the peer's
// task has finished (up to [a2a] sync_wait), 200 with the task in
// LibreFang's shape; a task still running then is 202 in the same shape.
// The receipt's task_id and agent_id go beside it.
func (s *Server) a2aSendWait(ctx *fasthttp.RequestCtx, receipt a2a.SendReceipt) error {
	wctx, cancel := context.WithTimeout(s.reqCtxWait(ctx), s.deps.A2A.SyncWait())
	defer cancel()
	snap, err := s.deps.A2A.WaitOutbound(wctx, receipt.TaskID)
	if err != nil {
		return err
	}
	status := fasthttp.StatusOK
	if !snap.Terminal() {
		status = fasthttp.StatusAccepted
	}
	writeJSON(ctx, status, struct {
		a2a.LibreFangTask
		TaskID        string `json:"task_id"`
		AgentID       string `json:"agent_id"`
		RemoteAgentID string `json:"remote_agent_id,omitempty"`
	}{snap.LibreFang(), receipt.TaskID, receipt.AgentID, receipt.RemoteAgentID})
	return nil
}

// a2aOutboundStatus serves GET /api/a2a/tasks/{id}/status.
func (s *Server) a2aOutboundStatus(ctx *fasthttp.RequestCtx) error {
	a2aCaller(ctx)
	if s.a2aDir != nil {
		if done, err := s.a2aRoute(ctx, a2aTarget{taskID: ctx.UserValue("id").(string)}); done || err != nil {
			return err
		}
	}
	snap, err := s.deps.A2A.OutboundTask(s.reqCtx(ctx), ctx.UserValue("id").(string))
	if err != nil {
		if de := kernel.AsError(err); de != nil && de.Code == "task_not_found" {
			return kernel.Errorf(kernel.KindNotFound, "task_not_found", "no outbound A2A task %s", ctx.UserValue("id"))
		}
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, snap.Outbound())
	return nil
}
