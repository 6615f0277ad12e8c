package http

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/kernel"
)

// DefaultRequestTimeout is [http] request_timeout_secs' default: the time
// a request's domain calls get, all together. It is kernel's
// DefaultAskTimeout, the bound every handler's ask had before requests
// carried a context, so no handler waits less than it did.
const DefaultRequestTimeout = kernel.DefaultAskTimeout

// userReqCtx holds a request's contexts (*reqCtxs), made on first use.
const userReqCtx = "fangd.reqctx"

// reqCtxs are one request's contexts. Every domain call of a handler gets
// one of them, never the *fasthttp.RequestCtx (docs/architecture.md,
// "Asking an actor"): the domain packages do not know fasthttp.
type reqCtxs struct {
	base, timed, wait       context.Context
	cancelTimed, cancelWait context.CancelFunc
}

// reqCtx is the context for rc's domain calls: its deadline is
// request_timeout after the request arrived, and it is cancelled when the
// handler returns or the server shuts down. It is built here and only
// here; chain ends it.
func (s *Server) reqCtx(rc *fasthttp.RequestCtx) context.Context {
	r := s.reqCtxsOf(rc)
	if r.timed == nil {
		r.timed, r.cancelTimed = context.WithDeadline(r.base, rc.Time().Add(s.cfg.RequestTimeout))
	}
	return r.timed
}

// reqCtxWait is reqCtx without request_timeout, for the handlers that wait
// longer by design (an agent turn, an approval long poll, an A2A send, an
// MCP tool call, a channel's platform check): the domain call's own limit,
// or the handler's explicit one, bounds them as before. It is cancelled
// when the handler returns or the server shuts down.
func (s *Server) reqCtxWait(rc *fasthttp.RequestCtx) context.Context {
	r := s.reqCtxsOf(rc)
	if r.wait == nil {
		r.wait, r.cancelWait = context.WithCancel(r.base)
	}
	return r.wait
}

func (s *Server) reqCtxsOf(rc *fasthttp.RequestCtx) *reqCtxs {
	if r, ok := rc.UserValue(userReqCtx).(*reqCtxs); ok {
		return r
	}
	r := &reqCtxs{base: s.baseCtx}
	// The A2A caller, authenticated by the middleware, is the one request
	// value a domain package reads (a2a.CallerFrom).
	if c, ok := rc.UserValue(a2a.CallerKey).(a2a.Caller); ok {
		r.base = context.WithValue(r.base, a2a.CallerKey, c)
	}
	rc.SetUserValue(userReqCtx, r)
	return r
}

// endRequest cancels rc's contexts once its handler returned. A body
// stream writer runs after that: it uses streamCtx, not these.
func endRequest(rc *fasthttp.RequestCtx) {
	r, ok := rc.UserValue(userReqCtx).(*reqCtxs)
	if !ok {
		return
	}
	if r.cancelTimed != nil {
		r.cancelTimed()
	}
	if r.cancelWait != nil {
		r.cancelWait()
	}
}

// streamCtx is the context of a stream (SSE) that outlives its handler:
// cancelled by cancel, which the stream calls when a write to the client
// fails (the client is gone) or the stream ends, and by shutdown.
func (s *Server) streamCtx() (ctx context.Context, cancel context.CancelFunc) {
	return context.WithCancel(s.baseCtx)
}

// requestTimeout is cfg's request timeout, or the default.
func requestTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultRequestTimeout
	}
	return d
}
