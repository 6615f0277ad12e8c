package http

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"
)

// Operator-facing observation beside /api/health: readiness, and the
// optional access log.

// readyTimeout bounds each readiness check: a root actor that does not
// answer within it is not ready.
const readyTimeout = 2 * time.Second

// ready serves GET /api/ready: 200 when the daemon can serve, 503 when a
// check fails or it is shutting down. Public like /api/health and as
// redacted: each check is "ok" or "failed", never the error text.
func (s *Server) ready(ctx *fasthttp.RequestCtx) error {
	checks := map[string]string{}
	ok := true
	check := func(name string, fn func(context.Context) error) {
		c, cancel := context.WithTimeout(s.reqCtxWait(ctx), readyTimeout)
		defer cancel()
		if err := fn(c); err != nil {
			checks[name], ok = "failed", false
			return
		}
		checks[name] = "ok"
	}
	check("shutting_down", func(context.Context) error {
		select {
		case <-s.closing:
			return context.Canceled
		default:
			return nil
		}
	})
	check("store", func(context.Context) error {
		_, _, err := s.deps.Store.QuarantinedKeys(0)
		return err
	})
	check("audit", func(context.Context) error {
		_, err := s.deps.Audit.Recent(s.reqCtx(ctx), 0)
		return err
	})
	if s.deps.Agents != nil {
		check("agents", func(context.Context) error {
			_, err := s.deps.Agents.List(s.reqCtx(ctx))
			return err
		})
	}
	status := fasthttp.StatusOK
	if !ok {
		status = fasthttp.StatusServiceUnavailable
	}
	writeJSON(ctx, status, map[string]any{"ready": ok, "checks": checks, "version": s.cfg.Version})
	return nil
}

// accessLog writes one line per request when [log] access_log is on:
// what an operator greps for, units in the field names, never a body or
// a credential.
func (s *Server) accessLog(ctx *fasthttp.RequestCtx, route string, start time.Time) {
	actor, _ := ctx.UserValue(userActor).(string)
	s.log.Info().Str("method", string(ctx.Method())).Str("route", route).Str("path", string(ctx.Path())).
		Int("status", ctx.Response.StatusCode()).
		Float64("duration_ms", float64(time.Since(start).Microseconds())/1000).
		Int("bytes_in", len(ctx.Request.Body())).Int("bytes_out", len(ctx.Response.Body())).
		Str("identity", actor).Str("client_ip", clientIP(ctx).String()).Str("request_id", requestID(ctx)).
		Msg("request")
}
