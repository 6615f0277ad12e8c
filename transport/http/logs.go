package http

import (
	"bufio"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/transport/sse"
)

// DefaultMaxLogStreams is [log] max_streams' default.
const DefaultMaxLogStreams = 32

// streamBuffer is how many lines a log stream subscriber may fall behind
// before it is dropped.
const streamBuffer = 1024

// LogBackfill is how many recent lines GET /api/logs/stream replays when
// the client names no starting point (LibreFang's backfill is 200).
const LogBackfill = 200

// logStream serves GET /api/logs/stream: the daemon's log lines as SSE.
// ?level= filters (trace|debug|info|warn|error), Last-Event-ID (or
// ?last_event_id=) resumes from what the ring still holds, ?tail=N starts
// with the last N lines. With neither a cursor nor ?tail=, the stream
// starts with the last LogBackfill lines, as LibreFang's does, so a client
// that cannot pass a query sees something at once.
func (s *Server) logStream(ctx *fasthttp.RequestCtx) error {
	minLevel := zerolog.TraceLevel
	if raw := ctx.QueryArgs().Peek("level"); len(raw) > 0 {
		l, err := parseLevel(string(raw))
		if err != nil {
			return err
		}
		minLevel = l
	}
	after, resume, err := sse.LastEventID(ctx)
	if err != nil {
		return badRequest("invalid_last_event_id", "Last-Event-ID must be a non-negative integer")
	}
	def := 0
	if !resume {
		def = min(LogBackfill, s.deps.Logs.Size())
	}
	tail, err := intQuery(ctx, def, 0, s.deps.Logs.Size(), "tail")
	if err != nil {
		return err
	}
	if n := s.logStreams.Add(1); s.cfg.MaxLogStreams > 0 && n > int64(s.cfg.MaxLogStreams) {
		s.logStreams.Add(-1)
		ctx.Response.Header.Set("Retry-After", "5")
		return &apiError{fasthttp.StatusTooManyRequests, "log_stream_limit",
			fmt.Sprintf("%d log streams are open, the most allowed ([log] max_streams)", s.cfg.MaxLogStreams)}
	}
	sub, replay := s.deps.Logs.Subscribe(after, tail, minLevel, streamBuffer)
	conn, heartbeat, closing := ctx.Conn(), s.cfg.SSEHeartbeat, s.closing
	sse.Begin(ctx)
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer s.logStreams.Add(-1)
		defer sub.Close()
		w := sse.NewWriter(bw, conn, s.cfg.StreamWriteTimeout)
		w.Retry(2 * time.Second)
		if replay.Missed > 0 {
			w.Event(0, "gap", []byte(fmt.Sprintf(`{"missed":%d}`, replay.Missed)))
		}
		for _, l := range replay.Lines {
			w.Event(l.ID, "log", l.JSON)
		}
		if w.Flush() != nil {
			return
		}
		sse.Follow(w, sub.Lines(), heartbeat, closing, func(l logs.Line) { w.Event(l.ID, "log", l.JSON) }, func() {
			w.Comment("dropped: client too slow")
			w.Flush()
		})
	})
	return nil
}

func parseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(s)
	if err != nil || s == "" || l == zerolog.NoLevel || l == zerolog.Disabled {
		return 0, badRequest("invalid_level", "level must be one of trace, debug, info, warn, error")
	}
	return l, nil
}

type levelBody struct {
	Level string `json:"level"`
}

// LogLevel is a log level that can change while the daemon runs.
type LogLevel interface {
	Level() zerolog.Level
	SetLevel(zerolog.Level)
}

// globalLevel is zerolog's process-wide level.
type globalLevel struct{}

func (globalLevel) Level() zerolog.Level     { return zerolog.GlobalLevel() }
func (globalLevel) SetLevel(l zerolog.Level) { zerolog.SetGlobalLevel(l) }

func (s *Server) level() LogLevel {
	if s.deps.LogLevel == nil {
		return globalLevel{}
	}
	return s.deps.LogLevel
}

// logLevel serves GET /api/logs/level.
func (s *Server) logLevel(ctx *fasthttp.RequestCtx) error {
	writeJSON(ctx, fasthttp.StatusOK, levelBody{s.level().Level().String()})
	return nil
}

// setLogLevel serves PUT /api/logs/level {"level": "debug"}: the running
// daemon's log level, until restart.
func (s *Server) setLogLevel(ctx *fasthttp.RequestCtx) error {
	var b levelBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	l, err := parseLevel(b.Level)
	if err != nil {
		return err
	}
	prev := s.level().Level()
	s.level().SetLevel(l)
	auditDetails(ctx, "log level "+prev.String()+" -> "+l.String())
	s.log.Info().Str("from", prev.String()).Str("to", l.String()).Msg("log level changed")
	writeJSON(ctx, fasthttp.StatusOK, levelBody{l.String()})
	return nil
}
