package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
)

// handlerFunc is an endpoint: it writes a success response itself and
// returns an error for everything else, which the chain turns into the
// error envelope.
type handlerFunc func(ctx *fasthttp.RequestCtx) error

type routeOpts struct {
	public bool // no API key needed
	// peers also admits the per-peer tokens of [[a2a.peers]] (A2A
	// protocol routes), as a non-admin caller "peer:<name>".
	peers bool
	// rpc answers every error of the route as a JSON-RPC error object
	// instead of the JSON envelope (the route speaks JSON-RPC).
	rpc bool
	// maxBody, when set, caps the request body below the server's limit.
	maxBody int
	// ownAuth: the handler authenticates the caller itself (inbound hooks:
	// their own token or a signature, never the API key).
	ownAuth bool
	// loopbackHost applies the Host check on a loopback listener even
	// when an API key is set (/mcp: the MCP SDK's DNS rebinding rule).
	loopbackHost bool
	// platformCallback marks routes chat platforms call
	// (/channels/<name>/webhook): they authenticate by signature, and only
	// refused or failed calls are audited (every inbound chat message would
	// otherwise be an audit entry).
	platformCallback bool
}

var (
	public  = routeOpts{public: true}
	ownAuth = routeOpts{ownAuth: true}
)

func mergeOpts(opts []routeOpts) routeOpts {
	var o routeOpts
	for _, x := range opts {
		o.public = o.public || x.public
		o.peers = o.peers || x.peers
		o.rpc = o.rpc || x.rpc
		o.maxBody = max(o.maxBody, x.maxBody)
		o.ownAuth = o.ownAuth || x.ownAuth
		o.platformCallback = o.platformCallback || x.platformCallback
		o.loopbackHost = o.loopbackHost || x.loopbackHost
	}
	return o
}

const (
	userActor = "fangd.actor"
	userAudit = "fangd.audit_details"
	userRPC   = "fangd.rpc_errors"
	// userAuthRefused marks a request refused by a handler's own
	// authentication (hooks), audited in aggregate instead.
	userAuthRefused = "fangd.auth_refused"
	// userAuditedBelow marks a request whose handler already made its
	// durable audit entry (the OIDC sign-in and refresh).
	userAuditedBelow = "fangd.audited_below"
	// userAuditFirst holds entries ([]audit.Event) the handler left to the
	// chain, to be committed ahead of the request's api_request entry in
	// the same synced commit (a POST /mcp tools/call: mcp.CallAudits).
	userAuditFirst = "fangd.audit_first"
)

// chain wraps h in the middleware every route gets, outermost first:
// request id + security headers + panic recovery + metrics, the Host
// check, CORS (and the refusal of cross-origin writes), rate limit, auth,
// then auditing of mutating calls. A refused Host or cross-origin write
// changes nothing: it spends no rate-limit cells and writes no audit entry.
func (s *Server) chain(route string, o routeOpts, h handlerFunc) fasthttp.RequestHandler {
	metrics := s.metrics.route(route)
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		if s.cfg.AccessLog {
			defer s.accessLog(ctx, route, start) // last, once the status is final
		}
		s.startRequest(ctx)
		if o.rpc {
			ctx.SetUserValue(userRPC, true)
		}
		// Deferred in this order so that a panic is turned into its 500
		// before the request is counted.
		defer metrics.observe(ctx, start)
		defer s.recoverPanic(ctx)
		if err := s.checkHost(ctx, o); err != nil {
			s.writeError(ctx, err)
			return
		}
		s.resolveClient(ctx)
		listed := s.cors(ctx)
		if listed {
			if method, ok := s.preflightFor(ctx); ok {
				// Browsers send preflights without credentials: they
				// spend the client address's cells and are answered
				// before auth.
				if err := s.rateLimit(ctx, "", false); err != nil {
					s.writeError(ctx, err)
					return
				}
				answerPreflight(ctx, method)
				return
			}
		}
		if err := s.checkOrigin(ctx, o, listed); err != nil {
			s.writeError(ctx, err)
			return
		}
		actor, refused := s.authenticate(ctx, o)
		if err := s.rateLimit(ctx, actor, refused != nil); err != nil {
			s.writeError(ctx, err)
			return
		}
		if refused != nil {
			s.refuseAuth(ctx, refused)
			return
		}
		ctx.SetUserValue(userActor, boxActor(actor))
		if err := s.authorize(ctx, actor, route); err != nil {
			// A role's refusal is audited, reads included (LibreFang's
			// PermissionDenied), and changes nothing.
			s.writeError(ctx, err)
			s.auditRequest(ctx)
			return
		}
		if o.maxBody > 0 && len(ctx.Request.Body()) > o.maxBody {
			s.writeError(ctx, &apiError{fasthttp.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("request body exceeds %d bytes", o.maxBody)})
			return
		}
		err := h(ctx)
		endRequest(ctx)
		if err != nil && s.hosts != nil {
			err = s.routeHosted(ctx, s.agentHost(ctx, route, err))
		}
		if err != nil {
			s.writeError(ctx, err)
		}
		if isMutating(ctx) && (!o.platformCallback || ctx.Response.StatusCode() >= 400) && ctx.UserValue(userAuthRefused) == nil && ctx.UserValue(userAuditedBelow) == nil {
			s.auditRequest(ctx)
		}
		s.awaitPendingWrites(ctx)
	}
}

// Response headers set on every request, as canonical byte slices so that
// fasthttp stores them without re-normalising the names each time.
var (
	headerRequestID = []byte("X-Request-Id")
	commonHeaders   = [][2][]byte{
		{[]byte("X-Api-Version"), []byte("v1")},
		{[]byte("Cache-Control"), []byte("no-store")},
	}
	securityHeaders = [][2][]byte{
		{[]byte("X-Content-Type-Options"), []byte("nosniff")},
		{[]byte("X-Frame-Options"), []byte("DENY")},
		{[]byte("Referrer-Policy"), []byte("no-referrer")},
		{[]byte("Content-Security-Policy"), []byte("default-src 'none'; frame-ancestors 'none'")},
		{[]byte("Strict-Transport-Security"), []byte("max-age=63072000; includeSubDomains")},
		{[]byte("Cross-Origin-Resource-Policy"), []byte("same-origin")},
	}
)

// startRequest sets the request id and the headers every response carries.
// The response's X-Request-Id header is the one place the id is kept (see
// requestID); a fresh id is formatted on the stack, so this allocates
// nothing.
func (s *Server) startRequest(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	if id := ctx.Request.Header.PeekBytes(headerRequestID); validRequestID(id) {
		h.SetCanonical(headerRequestID, id)
	} else {
		var buf [36]byte
		h.SetCanonical(headerRequestID, formatUUID(&buf, uuid.New()))
	}
	for _, kv := range commonHeaders {
		h.SetCanonical(kv[0], kv[1])
	}
	if s.cfg.SecurityHeaders {
		for _, kv := range securityHeaders {
			h.SetCanonical(kv[0], kv[1])
		}
	}
}

// formatUUID writes u in its canonical 36-character form into buf.
func formatUUID(buf *[36]byte, u uuid.UUID) []byte {
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], u[10:16])
	return buf[:]
}

// validRequestID accepts a caller's id only if it is short and plain, so it
// is safe to echo and to log.
func validRequestID[T string | []byte](id T) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// requestID is the id startRequest put on the response.
func requestID(ctx *fasthttp.RequestCtx) string {
	return string(ctx.Response.Header.PeekBytes(headerRequestID))
}

func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx) {
	if r := recover(); r != nil {
		s.log.Error().Str("request_id", requestID(ctx)).Str("path", string(ctx.Path())).
			Str("panic", fmt.Sprint(r)).Stack().Msg("handler panicked")
		s.fail(ctx, fasthttp.StatusInternalServerError, "internal_error", "internal server error")
	}
}

// rateLimit spends the request's cells in the bucket of its client
// address and actor (bucketKey). The key is built only when the request is
// limited at all: with the limiter off or the client exempt, building it
// was one of the three allocations of a GET /api/health (docs/bench.md).
func (s *Server) rateLimit(ctx *fasthttp.RequestCtx, actor string, authFailed bool) error {
	l := s.limits.Load()
	if l.g == nil || (l.ExemptLoopback && loopbackClient(ctx)) {
		return nil
	}
	cost := routeCost(string(ctx.Method()), string(ctx.Path()))
	ok, wait := l.g.allow(bucketKey(clientIP(ctx).String(), actor, authFailed), cost)
	if ok {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	ctx.Response.Header.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	s.metrics.rateLimited.Inc()
	return &apiError{fasthttp.StatusTooManyRequests, "rate_limited", "rate limit exceeded; retry after " + strconv.Itoa(max(secs, 1)) + "s"}
}

// The actors authenticate answers most, boxed once: storing a string as a
// user value boxes it, an allocation per request otherwise.
var (
	boxedAnonymous any = "anonymous"
	boxedLoopback  any = "loopback"
	boxedAPIKey    any = "api_key"
)

func boxActor(actor string) any {
	switch actor {
	case "anonymous":
		return boxedAnonymous
	case "loopback":
		return boxedLoopback
	case "api_key":
		return boxedAPIKey
	}
	return actor
}

func hashKey(k string) [32]byte { return sha256.Sum256([]byte(k)) }

// authRefusal is why a caller was not let in: the reason audited, the
// WWW-Authenticate challenge (if any) and the error answered.
type authRefusal struct {
	reason    string
	challenge string
	err       *apiError
}

var (
	refusedNotLoopback = &authRefusal{"no API key is configured and the caller is not on loopback", "",
		&apiError{fasthttp.StatusUnauthorized, "unauthorized", "only loopback callers are allowed when no API key is configured"}}
	refusedMissing = &authRefusal{"missing credentials", `Bearer realm="fangd"`,
		&apiError{fasthttp.StatusUnauthorized, "unauthorized", "missing credentials: send Authorization: Bearer <api_key> or X-API-Key"}}
	refusedInvalid = &authRefusal{"invalid API key", `Bearer realm="fangd", error="invalid_token"`,
		&apiError{fasthttp.StatusUnauthorized, "unauthorized", "invalid API key"}}
)

// authenticate says who the caller is: "anonymous" on public routes,
// "peer:<name>" for an A2A peer token, "api_key" for a matching API key
// (Bearer or X-API-Key, compared in constant time over hashes so length
// leaks nothing), or, with no key configured, "loopback" for loopback
// callers. Otherwise it says why not; the chain rate-limits first and
// then answers and audits the refusal (refuseAuth).
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, o routeOpts) (string, *authRefusal) {
	if o.public || o.ownAuth {
		return "anonymous", nil
	}
	if o.peers {
		if name, ok := s.peerToken(bearer(ctx)); ok {
			return "peer:" + name, nil
		}
	}
	presented := bearer(ctx)
	// A signed-in user's session (bearer or cookie), a paired device's
	// token, then a [[users]] key: each has its own role (authorize),
	// whether or not an API key is set.
	if sess, fromCookie := s.sessionOf(ctx, presented); sess != nil {
		if fromCookie && isMutating(ctx) && !csrfOK(ctx, sess) {
			return "", refusedCSRF
		}
		ctx.SetUserValue(userRoleKey, sess.Role)
		return sess.Identity(), nil
	}
	if presented != nil {
		if id, ok := s.deps.Pairing.Authenticate(presented); ok {
			return "device:" + id, nil
		}
	}
	var sum [32]byte
	if presented != nil && len(s.cfg.Users) > 0 {
		sum = sha256.Sum256(presented)
		if u, ok := s.userKey(sum); ok {
			return "user:" + u.Name, nil
		}
	}
	if s.cfg.APIKey == "" {
		if loopbackClient(ctx) {
			return "loopback", nil
		}
		return "", refusedNotLoopback
	}
	if presented == nil {
		return "", refusedMissing
	}
	sum = sha256.Sum256(presented)
	if subtle.ConstantTimeCompare(sum[:], s.keyHash[:]) != 1 {
		return "", refusedInvalid
	}
	return "api_key", nil
}

// refuseAuth answers a refused caller with 401 and counts the failure for
// the aggregated auth_failed audit entry of its address.
func (s *Server) refuseAuth(ctx *fasthttp.RequestCtx, r *authRefusal) {
	if r.challenge != "" {
		ctx.Response.Header.Set("WWW-Authenticate", r.challenge)
	}
	s.auditAuthFailure(ctx, r.reason)
	s.writeError(ctx, r.err)
}

// auditAuthFailure counts a failed authentication for the aggregated
// auth_failed entry of the client's address (authFailures). The refused
// request gets no api_request entry of its own: that would be the one
// synced entry per failure the aggregation exists to avoid.
func (s *Server) auditAuthFailure(ctx *fasthttp.RequestCtx, why string) {
	ctx.SetUserValue(userAuthRefused, true)
	s.authFailures.record(clientIP(ctx).String(), string(ctx.Method())+" "+string(ctx.Path()), why)
}

// peerToken finds the [[a2a.peers]] entry whose token was presented,
// comparing hashes in constant time and visiting every entry.
func (s *Server) peerToken(presented []byte) (string, bool) {
	if presented == nil || len(s.peerHashes) == 0 {
		return "", false
	}
	sum := sha256.Sum256(presented)
	found := ""
	for _, p := range s.peerHashes {
		if subtle.ConstantTimeCompare(sum[:], p.hash[:]) == 1 {
			found = p.name
		}
	}
	return found, found != ""
}

func bearer(ctx *fasthttp.RequestCtx) []byte {
	if v := ctx.Request.Header.Peek("Authorization"); len(v) > 7 && (string(v[:7]) == "Bearer " || string(v[:7]) == "bearer ") {
		return v[7:]
	}
	if v := ctx.Request.Header.Peek("X-Api-Key"); len(v) > 0 {
		return v
	}
	return nil
}

func isMutating(ctx *fasthttp.RequestCtx) bool {
	switch string(ctx.Method()) {
	case "POST", "PUT", "PATCH", "DELETE":
		return true
	}
	return false
}

// auditDetails lets a handler describe what its mutating call changed; the
// chain records it with the outcome.
func auditDetails(ctx *fasthttp.RequestCtx, details string) { ctx.SetUserValue(userAudit, details) }

// auditRequest records a mutating call and waits until the entry is
// durable, so an acknowledged change is never missing from the log.
func (s *Server) auditRequest(ctx *fasthttp.RequestCtx) {
	status := ctx.Response.StatusCode()
	outcome := "ok"
	switch {
	case status >= 500:
		outcome = "error"
	case status == 401 || status == 403:
		outcome = "denied"
	case status >= 400:
		outcome = "rejected"
	}
	details := fmt.Sprintf("%s %s -> %d", ctx.Method(), ctx.Path(), status)
	if d, ok := ctx.UserValue(userAudit).(string); ok && d != "" {
		details += ": " + d
	}
	actor, _ := ctx.UserValue(userActor).(string)
	ev := audit.Event{EventType: "api_request", Details: details, Outcome: outcome,
		Actor: actor, SourceIP: clientIP(ctx).String()}
	var err error
	if first, _ := ctx.UserValue(userAuditFirst).([]audit.Event); len(first) > 0 {
		err = s.appendAuditAll(append(first, ev)...)
	} else {
		err = s.appendAudit(ev)
	}
	if err != nil && status < 400 {
		// The change happened but could not be recorded: do not report
		// success for something the audit log does not show.
		s.writeError(ctx, err)
	}
}

func (s *Server) appendAudit(ev audit.Event) error { return s.appendAuditAll(ev) }

// appendAuditAll records evs, in order, in one synced commit and returns
// once they are durable.
func (s *Server) appendAuditAll(evs ...audit.Event) error {
	c, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
	defer cancel()
	_, err := s.deps.Audit.AppendAll(c, evs...)
	return err
}
