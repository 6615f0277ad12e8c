package http

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	nethttp "net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/fangd/fangd/actors/mcp"
)

// MCPConfig is the POST /mcp endpoint's part of the config.
type MCPConfig struct {
	// Stateless serves every request without a session (no Mcp-Session-Id,
	// GET and DELETE answer 405). Stateful (the default) gives clients
	// that initialize a session.
	Stateless bool
	// SessionTimeout closes a session idle this long. The SDK notices a
	// dead client only when it writes to it, so without this a vanished
	// client's session would live forever.
	SessionTimeout time.Duration
	// MaxBodyBytes caps a POST /mcp body (protocol routes take less than
	// the API's cap).
	MaxBodyBytes int
	// MaxSessions bounds the live sessions (about 89 KiB each); an
	// initialize beyond it is 429 mcp_session_limit. 0: DefaultMCPSessions.
	MaxSessions int
}

// DefaultMCPSessions is [mcp_server] max_sessions' default.
const DefaultMCPSessions = 256

func (s *Server) mcpRoutes() {
	if s.deps.MCP != nil {
		s.api("GET", "/mcp/servers", s.mcpServers)
		s.api("POST", "/mcp/servers", s.mcpAddServer)
		s.api("GET", "/mcp/servers/{id}", s.mcpServer)
		s.api("PUT", "/mcp/servers/{id}", s.mcpUpdateServer)
		s.api("DELETE", "/mcp/servers/{id}", s.mcpRemoveServer)
		s.api("POST", "/mcp/servers/{id}/reconnect", s.mcpReconnect)
		s.api("POST", "/mcp/servers/{id}/tools/accept", s.mcpAcceptTools)
		s.api("GET", "/mcp/catalog", s.mcpCatalog)
		s.api("GET", "/mcp/catalog/{id}", s.mcpCatalogEntry)
		s.api("GET", "/mcp/health", s.mcpHealth)
		s.api("POST", "/mcp/reload", s.mcpReload)
		s.mcpAuthRoutes()
	}
	if s.deps.MCPServer != nil {
		s.mcpEndpoint = newMCPEndpoint(s.deps.MCPServer.Server, s.cfg.MCP, s.log, s.streamWriter)
		s.mcpEndpoint.audits = &s.deps.MCPServer.Audits
		s.mcpEndpoint.x = s.deps.MCPServer
		for _, m := range []string{"POST", "GET", "DELETE"} {
			s.handle(m, "/mcp", s.mcpHTTP, routeOpts{loopbackHost: true})
		}
	}
}

// mcpServers serves GET /api/mcp/servers?offset=&limit= (default and max
// 100): the seed's {servers, total} plus the paging fields.
func (s *Server) mcpServers(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 100)
	if err != nil {
		return err
	}
	views, err := s.deps.MCP.Servers(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"servers": page(views, offset, limit), "total": len(views),
		"offset": offset, "limit": limit, "next_offset": nextOffset(len(views), offset, limit)})
	return nil
}

func (s *Server) mcpServer(ctx *fasthttp.RequestCtx) error {
	v, err := s.deps.MCP.Server(s.reqCtx(ctx), pathID(ctx))
	return reply(ctx, v, err)
}

// jsonBody checks the content type, emptiness and nesting depth of a JSON
// body and returns it for a decoder with its own rules.
func jsonBody(ctx *fasthttp.RequestCtx) ([]byte, error) {
	if err := checkJSONContentType(ctx); err != nil {
		return nil, err
	}
	body := ctx.PostBody()
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("invalid_json", "request body is empty; a JSON object is required")
	}
	if jsonDepth(body) > MaxJSONDepth {
		return nil, badRequest("json_too_deep", "JSON nesting depth exceeds the limit")
	}
	if !json.Valid(body) {
		var v any
		return nil, badRequest("invalid_json", jsonErrorMessage(json.Unmarshal(body, &v)))
	}
	return body, nil
}

func (s *Server) mcpAddServer(ctx *fasthttp.RequestCtx) error {
	body, err := jsonBody(ctx)
	if err != nil {
		return err
	}
	req, err := mcp.ParseAdd(body)
	if err != nil {
		return err
	}
	v, err := s.deps.MCP.Add(s.reqCtx(ctx), req)
	if err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+v.Name+" added ("+v.Transport+", template "+orDash(v.TemplateID)+")")
	writeJSON(ctx, fasthttp.StatusCreated, changeAnswer(v, "added"))
	return nil
}

// mcpChangeAnswer is POST /api/mcp/servers' and PUT /api/mcp/servers/{id}'s
// answer: the server view plus LibreFang's fields. LibreFang's clients read
// status as what was done ("added", "updated") and reload as whether the
// change took effect, so status carries that here and the view's
// connection state moves to connection_status (connected stays as is).
type mcpChangeAnswer struct {
	mcp.ServerView
	// Status shadows the view's status (an outer field wins in
	// encoding/json).
	Status           string `json:"status"`
	ConnectionStatus string `json:"connection_status"`
	// Reload is LibreFang's reload outcome. Always "applied": the
	// supervisor stores the definition and starts (or restarts) its
	// connection before it answers, and any failure before that is an
	// error answer that changed nothing, so LibreFang's other outcomes
	// ("applied_partial", "saved_reload_failed": config.toml written, the
	// reload failing afterwards) cannot happen here.
	Reload string `json:"reload"`
}

const mcpReloadApplied = "applied"

func changeAnswer(v mcp.ServerView, status string) mcpChangeAnswer {
	return mcpChangeAnswer{ServerView: v, Status: status, ConnectionStatus: v.Status, Reload: mcpReloadApplied}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (s *Server) mcpUpdateServer(ctx *fasthttp.RequestCtx) error {
	body, err := jsonBody(ctx)
	if err != nil {
		return err
	}
	spec, err := mcp.ParseSpec(body)
	if err != nil {
		return err
	}
	v, err := s.deps.MCP.Update(s.reqCtx(ctx), pathID(ctx), spec)
	if err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+v.Name+" replaced; reconnecting")
	writeJSON(ctx, fasthttp.StatusOK, changeAnswer(v, "updated"))
	return nil
}

func (s *Server) mcpRemoveServer(ctx *fasthttp.RequestCtx) error {
	id := pathID(ctx)
	if err := s.deps.MCP.Remove(s.reqCtx(ctx), id); err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+id+" removed with its credentials")
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "removed", "name": id})
	return nil
}

// mcpReconnect answers {id, status, tool_count} when the server came back,
// and 502 with the same fields and the error when it did not.
func (s *Server) mcpReconnect(ctx *fasthttp.RequestCtx) error {
	r, err := s.deps.MCP.Reconnect(s.reqCtxWait(ctx), pathID(ctx))
	if err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+r.ID+" reconnect: "+r.Status)
	if r.Status == mcp.StatusConnected || r.Status == mcp.StatusDisabled {
		writeJSON(ctx, fasthttp.StatusOK, r)
		return nil
	}
	writeJSON(ctx, fasthttp.StatusBadGateway, map[string]any{
		"id": r.ID, "status": r.Status, "tool_count": r.ToolCount,
		"error": "mcp server " + r.ID + " did not reconnect: " + r.Error, "code": "mcp_connect_failed",
		"request_id": requestID(ctx),
	})
	return nil
}

type acceptBody struct {
	Tools []string `json:"tools"`
}

func (s *Server) mcpAcceptTools(ctx *fasthttp.RequestCtx) error {
	var body acceptBody
	if len(bytes.TrimSpace(ctx.PostBody())) > 0 {
		if err := decodeJSON(ctx, &body); err != nil {
			return err
		}
	}
	r, err := s.deps.MCP.AcceptTools(s.reqCtx(ctx), pathID(ctx), body.Tools)
	return replyAudited(ctx, r, err, func() string { return "mcp server " + r.ID + " tools accepted: " + strings.Join(r.Accepted, ",") })
}

func (s *Server) mcpCatalog(ctx *fasthttp.RequestCtx) error {
	entries, err := s.deps.MCP.Catalog(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"entries": entries, "count": len(entries)})
	return nil
}

func (s *Server) mcpCatalogEntry(ctx *fasthttp.RequestCtx) error {
	e, err := s.deps.MCP.CatalogEntry(s.reqCtx(ctx), pathID(ctx))
	return reply(ctx, e, err)
}

func (s *Server) mcpHealth(ctx *fasthttp.RequestCtx) error {
	h, err := s.deps.MCP.Health(s.reqCtx(ctx))
	return reply(ctx, h, err)
}

func (s *Server) mcpReload(ctx *fasthttp.RequestCtx) error {
	r, err := s.deps.MCP.Reload(s.reqCtx(ctx))
	return replyAudited(ctx, r, err, func() string {
		return "mcp reloaded: added " + strings.Join(r.Added, ",") + "; removed " + strings.Join(r.Removed, ",") + "; reconnected " + strings.Join(r.Reconnected, ",")
	})
}

// ---- POST /mcp: fangd as an MCP server ----

// mcpEndpoint mounts the SDK's streamable HTTP handlers on fasthttp. Three
// handlers share one MCP server: stateful (sessions), stateless (the
// 2026-07-28 protocol, and everything in stateless mode), and a plain
// JSON-RPC bridge that answers application/json to clients that do not
// speak streamable HTTP (no text/event-stream in Accept, no initialize),
// like the seed's bare tools/list POST.
type mcpEndpoint struct {
	cfg       MCPConfig
	srv       *sdk.Server
	stateful  fasthttp.RequestHandler
	stateless fasthttp.RequestHandler
	plain     fasthttp.RequestHandler
	// audits carries a request's tool_invoked entry from the exposer to
	// the chain, which commits it with the api_request entry (nil: the
	// exposer commits its entries itself).
	audits *mcp.CallAudits
	// x serves the fast path's calls (mcpfast.go). noFast turns that path
	// off (only the test that compares it with the SDK's answers does);
	// fastCalls counts the calls it answered.
	x         *mcp.Exposer
	noFast    atomic.Bool
	fastCalls atomic.Uint64
	metas     metaMemo
}

func newMCPEndpoint(srv *sdk.Server, cfg MCPConfig, log zerolog.Logger, stream streamWrap) *mcpEndpoint {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 2 * time.Minute
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMCPSessions
	}
	slogger := slog.New(zerolog.NewSlogHandler(log.With().Str("component", "mcp-sdk").Logger().Level(zerolog.WarnLevel)))
	get := func(*nethttp.Request) *sdk.Server { return srv }
	mk := func(stateless, jsonResponse bool) fasthttp.RequestHandler {
		return fasthttpadaptor.NewFastHTTPHandler(ownContext(sdk.NewStreamableHTTPHandler(get, &sdk.StreamableHTTPOptions{
			Stateless: stateless, JSONResponse: jsonResponse, Logger: slogger,
			SessionTimeout: cfg.SessionTimeout, MaxRequestBodyBytes: int64(cfg.MaxBodyBytes),
			// The chain's Host check (checkHost, loopbackHost) applies the
			// SDK's DNS rebinding rule and also admits allowed_hosts; the
			// SDK's own check would refuse those with a plain-text 403.
			DisableLocalhostProtection: true,
		}), stream))
	}
	return &mcpEndpoint{cfg: cfg, srv: srv, stateful: mk(false, false), stateless: mk(true, false), plain: mk(true, true)}
}

// ownContext gives the SDK a context of its own instead of the one
// fasthttpadaptor passes, which is the *fasthttp.RequestCtx itself: the SDK
// keeps a session's context (values included) beyond the request that
// opened it, and fasthttp recycles the RequestCtx for the next request on
// the connection, so later lookups would read another request's values
// (the race detector catches it). Only the local address is carried over,
// read while the request is still ours, and the connection, so that a
// standalone GET /mcp stream (and a long POST answered as SSE) outlives
// the server's one-shot write timeout (stream, the server's streamWriter).
func ownContext(h nethttp.Handler, stream streamWrap) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		conn, _ := r.Context().Value(userConn).(connRef)
		ctx := context.WithValue(context.Background(), nethttp.LocalAddrContextKey, r.Context().Value(nethttp.LocalAddrContextKey))
		h.ServeHTTP(stream(w, conn), r.WithContext(ctx))
	})
}

// streamWrap is Server.streamWriter.
type streamWrap func(nethttp.ResponseWriter, connRef) nethttp.ResponseWriter

// mcpHTTP runs after the chain has rate-limited, authenticated and will
// audit the request.
func (s *Server) mcpHTTP(ctx *fasthttp.RequestCtx) error {
	e := s.mcpEndpoint
	h := &ctx.Request.Header
	// The exposer trusts these: only we may set them.
	h.Del(mcp.HeaderActor)
	h.Del(mcp.HeaderSourceIP)
	h.Del(mcp.HeaderAuditToken)
	actor, _ := ctx.UserValue(userActor).(string)
	h.Set(mcp.HeaderActor, actor)
	h.Set(mcp.HeaderSourceIP, clientIP(ctx).String())
	// Trap 1 (the SDK's DNS rebinding check is off without the local
	// address) does not apply: the chain checked Host already (checkHost);
	// the address is still passed on for the SDK's other uses.
	ctx.SetUserValue(nethttp.LocalAddrContextKey, ctx.LocalAddr())
	ctx.SetUserValue(userConn, connRef{ctx.Conn()})
	if !ctx.IsPost() {
		if e.cfg.Stateless {
			e.stateless(ctx)
		} else {
			e.stateful(ctx)
		}
		return nil
	}
	body := ctx.PostBody()
	if len(body) > e.cfg.MaxBodyBytes {
		return &apiError{fasthttp.StatusRequestEntityTooLarge, "body_too_large", "MCP request body exceeds the limit"}
	}
	rpc, rpcErr := checkJSONRPC(body)
	if rpcErr != nil {
		writeRPCError(ctx, rpcErr)
		return nil
	}
	if !e.cfg.Stateless && len(h.Peek("Mcp-Session-Id")) == 0 && rpc.initialize &&
		strings.Contains(strings.ToLower(string(h.Peek("Accept"))), "text/event-stream") {
		// A new session: refused at the cap, before the SDK builds it.
		if n := e.sessions(); n >= e.cfg.MaxSessions {
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(e.cfg.SessionTimeout.Seconds())))
			return &apiError{fasthttp.StatusTooManyRequests, "mcp_session_limit",
				fmt.Sprintf("%d MCP sessions are open, the most allowed ([mcp_server] max_sessions); close one (DELETE /mcp) or wait for an idle one to expire", n)}
		}
	}
	accept := strings.ToLower(string(h.Peek("Accept")))
	sse := strings.Contains(accept, "text/event-stream")
	sessionless := e.cfg.Stateless || (len(h.Peek("Mcp-Session-Id")) == 0 && !rpc.initialize)
	if sse && sessionless && e.fastToolCall(ctx, rpc) {
		return nil
	}
	defer rpcErrorBody(ctx, body)
	// The SDK adds its own Cache-Control; keep the one API value. (Set
	// alone replaced only the first of the two the adaptor leaves.)
	defer func() {
		ctx.Response.Header.Del("Cache-Control")
		ctx.Response.Header.Set("Cache-Control", "no-store")
	}()
	method := rpc.method
	if method == "tools/call" && e.audits != nil {
		// One synced commit per call instead of two in series: the
		// exposer hands the call's tool_invoked entry over, and the chain
		// appends it together with the request's api_request entry
		// (auditRequest) before the answer goes out (mcp.CallAudits).
		token := e.audits.Begin()
		h.Set(mcp.HeaderAuditToken, token)
		defer func() {
			if evs := e.audits.End(token); len(evs) > 0 {
				ctx.SetUserValue(userAuditFirst, evs)
			}
		}()
	}
	switch {
	case !sse:
		// Trap 3: the SDK answers 400 to an Accept without both types and
		// keeps a bare tools/list for stateless mode; a plain JSON-RPC
		// client gets a stateless exchange answered in JSON.
		h.Set("Accept", "application/json, text/event-stream")
		e.plain(ctx)
	case e.cfg.Stateless:
		e.serveStateless(ctx, rpc)
	case len(h.Peek("Mcp-Session-Id")) > 0 || rpc.initialize:
		e.stateful(ctx)
	default:
		// No session and no initialize: a 2026-07-28 (stateless protocol)
		// request, or a session-less call; the stateful handler would
		// refuse both.
		e.serveStateless(ctx, rpc)
	}
	return nil
}

// serveStateless answers a stateless tools/call as one application/json
// body, which streamable HTTP lets a server choose for any request, rather
// than as a one-event SSE stream: the stream is written through the
// fasthttp adaptor as a chunked body stream with a flush per event, ~6% of
// the daemon's CPU per call in the mcp-gateway profiles (docs/bench.md).
// A call that asked for progress keeps the stream: a call held for human
// approval reports its wait as notifications/progress, which a JSON answer
// would drop (the Go SDK client speaks the session-less protocol by
// default). Other methods keep the SSE answer (subscriptions/listen, for
// one, is a stream by nature).
func (e *mcpEndpoint) serveStateless(ctx *fasthttp.RequestCtx, rpc rpcShape) {
	if rpc.method == "tools/call" && !rpc.progress {
		e.plain(ctx)
		return
	}
	e.stateless(ctx)
}

// sessions counts the live stateful sessions.
func (e *mcpEndpoint) sessions() int {
	n := 0
	for range e.srv.Sessions() {
		n++
	}
	return n
}

type rpcError struct {
	code int
	msg  string
}

// rpcShape is what the endpoint routes a valid JSON-RPC body by.
type rpcShape struct {
	// method is the method of a single request, "" for a batch or a
	// response.
	method string
	// initialize: the request, or one in the batch, is an initialize.
	initialize bool
	// progress: a single request whose params carry _meta.progressToken.
	progress bool
	// msg is a single message's members, undecoded (nil for a batch).
	msg map[string]json.RawMessage
}

// checkJSONRPC refuses a body that is not JSON (-32700) or not a JSON-RPC
// message or batch (-32600), answering with a JSON-RPC error object rather
// than the SDK's plain-text 400, and reads what the routing needs in the
// same pass (it used to decode the body twice more for that).
func checkJSONRPC(body []byte) (rpcShape, *rpcError) {
	var out rpcShape
	// json.Valid runs only when the body is refused: a successful Unmarshal
	// has checked the whole body already (one scan fewer per request).
	notJSON := &rpcError{-32700, "Parse error: the body is not valid JSON"}
	refuse := func(e *rpcError) (rpcShape, *rpcError) {
		if !json.Valid(body) {
			return out, notJSON
		}
		return out, e
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return out, notJSON
	}
	if jsonDepth(body) > MaxJSONDepth {
		return refuse(&rpcError{-32600, "Invalid Request: JSON nesting is too deep"})
	}
	var msgs []map[string]json.RawMessage
	batch := body[0] == '['
	if batch {
		if json.Unmarshal(body, &msgs) != nil || len(msgs) == 0 {
			return refuse(&rpcError{-32600, "Invalid Request: a batch must be a non-empty array of JSON-RPC objects"})
		}
	} else {
		var one map[string]json.RawMessage
		if json.Unmarshal(body, &one) != nil {
			return refuse(&rpcError{-32600, "Invalid Request: expected a JSON-RPC object"})
		}
		msgs = append(msgs, one)
	}
	for _, m := range msgs {
		if string(m["jsonrpc"]) != `"2.0"` {
			return out, &rpcError{-32600, `Invalid Request: "jsonrpc" must be "2.0"`}
		}
		raw, hasMethod := m["method"]
		_, hasResult := m["result"]
		_, hasError := m["error"]
		if !hasMethod && !hasResult && !hasError {
			return out, &rpcError{-32600, "Invalid Request: no method"}
		}
		var method string
		if hasMethod && json.Unmarshal(raw, &method) == nil {
			if !batch {
				out.method = method
			}
			out.initialize = out.initialize || method == "initialize"
		}
	}
	if !batch {
		out.msg = msgs[0]
		if out.method != "" {
			out.progress = asksProgress(msgs[0]["params"])
		}
	}
	return out, nil
}

// asksProgress says whether a request's params carry a progress token; the
// substring test spares the decode on the calls that carry none.
func asksProgress(params json.RawMessage) bool {
	if !bytes.Contains(params, []byte(`"progressToken"`)) {
		return false
	}
	var p struct {
		Meta struct {
			Token json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	return json.Unmarshal(params, &p) == nil && len(p.Meta.Token) > 0 && string(p.Meta.Token) != "null"
}

// rpcErrorBody turns the SDK's plain-text 400 for a request it refuses
// (an unknown method, a malformed request) into a JSON-RPC error object:
// -32601 with the request's id for an unknown method (HTTP 200, as
// LibreFang answers), -32600 otherwise.
func rpcErrorBody(ctx *fasthttp.RequestCtx, body []byte) {
	if ctx.Response.StatusCode() != fasthttp.StatusBadRequest ||
		!strings.HasPrefix(string(ctx.Response.Header.ContentType()), "text/plain") || ctx.Response.IsBodyStream() {
		return
	}
	msg := strings.TrimSpace(string(ctx.Response.Body()))
	var one struct {
		ID json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(body, &one)
	id := any(nil)
	if len(one.ID) > 0 {
		id = one.ID
	}
	status, code := fasthttp.StatusBadRequest, -32600
	if strings.HasPrefix(msg, "JSON RPC not handled") {
		status, code = fasthttp.StatusOK, -32601
		msg = "Method not found: " + strings.TrimPrefix(msg, "JSON RPC not handled: ")
	}
	ctx.Response.ResetBody()
	writeJSON(ctx, status, map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
}

func writeRPCError(ctx *fasthttp.RequestCtx, e *rpcError) {
	writeJSON(ctx, fasthttp.StatusBadRequest, map[string]any{
		"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": e.code, "message": e.msg},
	})
}
