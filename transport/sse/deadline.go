package sse

import (
	"net"
	nethttp "net/http"
	"time"
)

// Deadline keeps a long-lived response's connection writable. fasthttp
// sets one write deadline per response (Server.WriteTimeout), counted from
// when the handler returns, so a stream that outlives it is cut at its
// first write after that. Extend pushes the deadline to now+timeout before
// each write instead: the timeout then bounds one stuck write (a client
// that stopped reading), not the life of the stream.
//
// Every long-lived stream goes through this one helper: the SSE Writer
// below (comms events, logs) and, through ResponseWriter, the net/http
// handlers of the A2A and MCP SDKs mounted with fasthttpadaptor.
type Deadline struct {
	conn    net.Conn
	timeout time.Duration
}

// NewDeadline returns nil (a no-op) when conn is nil or timeout is not
// positive.
func NewDeadline(conn net.Conn, timeout time.Duration) *Deadline {
	if conn == nil || timeout <= 0 {
		return nil
	}
	return &Deadline{conn: conn, timeout: timeout}
}

// Extend gives the next write the whole timeout. It re-arms the deadline
// every time (a runtime timer update, no system call): skipping it while
// "ours" had time left would miss that fasthttp re-arms its own one-shot
// deadline once the handler returns, after the stream's first write.
// Safe for concurrent use (an SDK's keep-alive goroutine writes too).
func (d *Deadline) Extend() {
	if d != nil {
		_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	}
}

// ResponseWriter wraps a net/http ResponseWriter (one fasthttpadaptor
// gave a net/http handler) so that every Write and Flush extends the
// deadline first. It keeps http.Flusher and unwraps for
// http.ResponseController. With a nil Deadline it returns w.
func (d *Deadline) ResponseWriter(w nethttp.ResponseWriter) nethttp.ResponseWriter {
	f, ok := w.(nethttp.Flusher)
	if d == nil || !ok {
		return w
	}
	return &deadlineWriter{ResponseWriter: w, flusher: f, d: d}
}

type deadlineWriter struct {
	nethttp.ResponseWriter
	flusher nethttp.Flusher
	d       *Deadline
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.d.Extend()
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) Flush() {
	w.d.Extend()
	w.flusher.Flush()
}

func (w *deadlineWriter) Unwrap() nethttp.ResponseWriter { return w.ResponseWriter }
