package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// errorBody is the one error envelope every 4xx/5xx carries.
type errorBody struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

// apiError is a transport-level failure (bad JSON, bad query, auth) that
// never reaches an actor.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(code, msg string) error { return &apiError{fasthttp.StatusBadRequest, code, msg} }

// statusOf is the one place that maps domain error kinds to HTTP statuses.
var statusOf = map[kernel.Kind]int{
	kernel.KindInvalid:             fasthttp.StatusBadRequest,
	kernel.KindUnauthorized:        fasthttp.StatusUnauthorized,
	kernel.KindPaymentRequired:     fasthttp.StatusPaymentRequired,
	kernel.KindForbidden:           fasthttp.StatusForbidden,
	kernel.KindNotFound:            fasthttp.StatusNotFound,
	kernel.KindConflict:            fasthttp.StatusConflict,
	kernel.KindGone:                fasthttp.StatusGone,
	kernel.KindPreconditionFailed:  fasthttp.StatusPreconditionFailed,
	kernel.KindTooLarge:            fasthttp.StatusRequestEntityTooLarge,
	kernel.KindRateLimited:         fasthttp.StatusTooManyRequests,
	kernel.KindUnsupported:         fasthttp.StatusNotImplemented,
	kernel.KindUpstream:            fasthttp.StatusBadGateway,
	kernel.KindUnavailable:         fasthttp.StatusServiceUnavailable,
	kernel.KindInsufficientStorage: fasthttp.StatusInsufficientStorage,
}

// storageError is the domain error of a write the store refused below its
// free-space reserve, however an actor wrapped it on the way up.
func storageError(err error) *kernel.Error {
	msg := "insufficient storage: the disk is below fangd's free-space reserve; writes resume when space is freed"
	var se *store.StorageError
	if errors.As(err, &se) {
		msg = fmt.Sprintf("insufficient storage: %s free, below the %s reserve (min_free_disk_bytes); reads work, writes resume when space is freed", humanBytes(se.Free), humanBytes(se.Reserve))
	}
	return kernel.Errorf(kernel.KindInsufficientStorage, "insufficient_storage", "%s", msg)
}

func humanBytes(n uint64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// writeError answers with the envelope for err. Internal errors are logged
// with their cause and shown to the caller only as "internal server error".
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		s.fail(ctx, ae.status, ae.code, ae.msg)
		return
	}
	if errors.Is(err, store.ErrInsufficientStorage) {
		// Checked before the domain kind: an actor may have wrapped the
		// store's refusal in an internal error.
		err = storageError(err)
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) && ra.RetryAfter() > 0 {
		// An upstream asked us to wait (a provider's 429): pass it on.
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(ra.RetryAfter().Seconds())))))
	}
	status, code, msg := s.describeError(err, requestID(ctx), string(ctx.Path()))
	s.fail(ctx, status, code, msg)
}

// describeError is the status, code and message a domain error answers
// with (writeError's, and a streamed answer's error event's). Causes are
// logged, never shown; anything unknown is an internal error.
func (s *Server) describeError(err error, reqID, path string) (status int, code, msg string) {
	if de := kernel.AsError(err); de != nil {
		if status, ok := statusOf[de.Kind]; ok {
			if de.Err != nil {
				s.log.Warn().Err(de.Err).Str("code", de.Code).Str("request_id", reqID).Msg(de.Msg)
			}
			return status, de.Code, de.Msg
		}
	}
	s.log.Error().Err(err).Str("request_id", reqID).Str("path", path).Msg("request failed")
	return fasthttp.StatusInternalServerError, "internal_error", "internal server error"
}

// fail writes the error envelope with status, or on a JSON-RPC route the
// JSON-RPC error object (the HTTP status stays, the body is the binding's).
func (s *Server) fail(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.Response.ResetBody()
	if rpc, _ := ctx.UserValue(userRPC).(bool); rpc {
		writeJSON(ctx, status, a2aRPCError(status, code, msg, requestID(ctx)))
		return
	}
	writeJSON(ctx, status, errorBody{Error: msg, Code: code, RequestID: requestID(ctx)})
}

// reply ends a handler that answers v with 200, or err for writeError: the
// tail every read-or-write-then-answer handler shares.
func reply(ctx *fasthttp.RequestCtx, v any, err error) error {
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, v)
	return nil
}

// replyAudited is reply for a call that changed something: once it has
// succeeded, detail (which may read v) says what in the request's audit
// entry, before the 200 goes out.
func replyAudited(ctx *fasthttp.RequestCtx, v any, err error, detail func() string) error {
	if err != nil {
		return err
	}
	auditDetails(ctx, detail())
	writeJSON(ctx, fasthttp.StatusOK, v)
	return nil
}

// replyNoContent is replyAudited for a call that answers no body (a
// removal): once it has succeeded, detail says what in the request's
// audit entry, then 204.
func replyNoContent(ctx *fasthttp.RequestCtx, err error, detail func() string) error {
	if err != nil {
		return err
	}
	auditDetails(ctx, detail())
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	enc := json.NewEncoder(ctx)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		ctx.ResetBody()
		ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		ctx.SetBodyString(`{"error":"internal server error","code":"internal_error"}`)
	}
}
