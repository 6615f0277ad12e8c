// Package sse writes Server-Sent Events on fasthttp streams: ids for
// resumption, per-write deadlines so a stuck client is cut instead of
// holding a goroutine forever, and Last-Event-ID parsing.
package sse

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Writer writes events to one stream.
type Writer struct {
	w        *bufio.Writer
	deadline *Deadline
}

// Begin sets the stream's response headers. Call it in the handler, before
// SetBodyStreamWriter.
func Begin(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
}

// NewWriter wraps the stream writer. conn (from ctx.Conn() in the handler)
// gets its write deadline extended (see Deadline) before every event and
// flush, which replaces the server's one-shot write timeout: a stream lives
// as long as its client keeps reading. Before the event too, not only the
// flush: an event larger than the buffer is written through at once.
func NewWriter(w *bufio.Writer, conn net.Conn, writeTimeout time.Duration) *Writer {
	return &Writer{w: w, deadline: NewDeadline(conn, writeTimeout)}
}

// Event writes one event. data may span lines; each becomes a data: line.
func (s *Writer) Event(id uint64, event string, data []byte) error {
	s.deadline.Extend()
	if id > 0 {
		s.w.WriteString("id: ")
		s.w.WriteString(strconv.FormatUint(id, 10))
		s.w.WriteByte('\n')
	}
	if event != "" {
		s.w.WriteString("event: ")
		s.w.WriteString(event)
		s.w.WriteByte('\n')
	}
	for {
		line, rest, more := bytes.Cut(data, []byte{'\n'})
		s.w.WriteString("data: ")
		s.w.Write(bytes.TrimSuffix(line, []byte{'\r'}))
		s.w.WriteByte('\n')
		if !more {
			break
		}
		data = rest
	}
	_, err := s.w.WriteString("\n")
	return err
}

// Raw writes bytes that are already framed as events (a stream relayed
// from another server), with the same deadline as Event.
func (s *Writer) Raw(p []byte) error {
	s.deadline.Extend()
	_, err := s.w.Write(p)
	return err
}

// Comment writes a comment line (used as heartbeat).
func (s *Writer) Comment(text string) error {
	s.deadline.Extend()
	_, err := s.w.WriteString(": " + text + "\n\n")
	return err
}

// Retry tells the client how long to wait before reconnecting.
func (s *Writer) Retry(d time.Duration) error {
	_, err := s.w.WriteString("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n")
	return err
}

// Flush sends what is buffered, within the write timeout.
func (s *Writer) Flush() error {
	s.deadline.Extend()
	return s.w.Flush()
}

// LastEventID reads the resume point from the Last-Event-ID header or the
// last_event_id query parameter (for clients that cannot set headers).
// ok is false when neither is present; a present but non-numeric value is
// an error.
func LastEventID(ctx *fasthttp.RequestCtx) (id uint64, ok bool, err error) {
	raw := ctx.Request.Header.Peek("Last-Event-ID")
	if len(raw) == 0 {
		raw = ctx.QueryArgs().Peek("last_event_id")
	}
	if len(raw) == 0 {
		return 0, false, nil
	}
	id, err = strconv.ParseUint(string(raw), 10, 64)
	return id, err == nil, err
}

// Follow streams what arrives on ch until it closes, the server closes
// (closing), or a write fails: event writes one item, and whatever else is
// already queued goes out in the same write; a "ping" comment is sent
// every heartbeat so proxies and clients see a live connection. When ch
// closes, closed writes the stream's last words (and flushes them).
func Follow[T any](w *Writer, ch <-chan T, heartbeat time.Duration, closing <-chan struct{}, event func(T), closed func()) {
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				closed()
				return
			}
			event(v)
			for n := len(ch); n > 0; n-- {
				v, ok := <-ch
				if !ok {
					break
				}
				event(v)
			}
		case <-tick.C:
			w.Comment("ping")
		case <-closing:
			return
		}
		if w.Flush() != nil {
			return
		}
	}
}
