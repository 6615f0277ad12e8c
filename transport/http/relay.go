package http

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/transport/sse"
)

// Streams through a node that does not host them (docs/cluster.md
// "Request routing"): an agent turn's SSE stream (POST
// /api/agents/{id}/message/stream) and A2A's streaming JSON-RPC methods
// are forwarded to the hosting node and relayed event by event as the
// host writes them. forward.go's buffered forward would hold every event
// until the host's answer ended, so a client would see a turn only once
// it was over.

// relayClient carries relayed streams: no overall timeout (a stream lasts
// as long as its turn or task), bounded dial and wait for the host's
// first answer.
var relayClient = &nethttp.Client{
	Transport: &nethttp.Transport{
		DialContext:           (&net.Dialer{Timeout: forwardDialTimeout}).DialContext,
		ResponseHeaderTimeout: forwardTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
	},
	CheckRedirect: func(*nethttp.Request, []*nethttp.Request) error { return nethttp.ErrUseLastResponse },
}

// relayedStream is one stream to forward to the node hosting its entity.
type relayedStream struct {
	what, node string // "agent sh", the hosting node: for errors and logs
	// idle, when positive: a host that sends nothing (no event, no
	// keep-alive comment) for this long is taken as gone. It catches a
	// host whose machine vanished without closing the connection.
	idle time.Duration
	// lost writes the stream's last event when the host's stream broke
	// off before its end (the host died, the network went, idle ran
	// out); msg says so, for the client. Nil: the stream just ends.
	lost func(w *sse.Writer, msg string)
}

// errEventTooLarge ends a relay whose host sends an event larger than any
// stream of ours writes.
var errEventTooLarge = errors.New("an event larger than 16 MiB")

// relayStream forwards ctx's request to r.node and relays the answer: an
// SSE stream event by event, each flushed to the client as soon as its
// last line arrived; anything else (an error answered before a stream
// began) whole, with its status. A client that goes away ends the
// upstream request, and with it the host's stream (the host sees its
// client gone at its next write). A host that breaks off the stream ends
// it with r.lost's event. The error is the answer when the host could not
// be asked (503 host_unreachable: nothing reached it).
func (s *Server) relayStream(ctx *fasthttp.RequestCtx, r relayedStream) error {
	c, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	base, err := s.hosts.nodeURL(c, r.node)
	cancel()
	if err != nil {
		s.log.Warn().Err(err).Str("node", r.node).Str("path", string(ctx.Path())).Msg("cluster: hosting node not found; stream not forwarded")
		return &apiError{fasthttp.StatusServiceUnavailable, "host_unreachable",
			fmt.Sprintf("%s is hosted on cluster node %s, which is not reachable now; nothing was changed, try again", r.what, r.node)}
	}
	sctx, stop := s.streamCtx()
	req, err := nethttp.NewRequestWithContext(sctx, string(ctx.Method()), base+string(ctx.Request.RequestURI()), bytes.NewReader(ctx.Request.Body()))
	if err != nil {
		stop()
		return err
	}
	for _, h := range forwardHeaders {
		if v := ctx.Request.Header.Peek(h); len(v) > 0 {
			req.Header.Set(h, string(v))
		}
	}
	req.Header.Set(forwardedHeader, s.hosts.self)
	res, err := relayClient.Do(req)
	if err != nil {
		stop()
		s.log.Warn().Err(err).Str("node", r.node).Str("url", base).Str("path", string(ctx.Path())).Msg("cluster: forwarding a stream to the hosting node failed")
		return &apiError{fasthttp.StatusServiceUnavailable, "host_unreachable",
			fmt.Sprintf("%s is hosted on cluster node %s, which did not answer; nothing was changed, try again", r.what, r.node)}
	}
	auditDetails(ctx, "forwarded to cluster node "+r.node)
	ctx.Response.ResetBody()
	ctx.SetStatusCode(res.StatusCode)
	ctx.SetContentType(res.Header.Get("Content-Type"))
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		// An error answered before any stream: relayed whole.
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		stop()
		ctx.SetBody(body)
		return nil
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	conn, writeTimeout, log, path := ctx.Conn(), s.cfg.StreamWriteTimeout, s.log, string(ctx.Path())
	shutdown := s.baseCtx
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer stop()
		defer res.Body.Close()
		w := sse.NewWriter(bw, conn, writeTimeout)
		var body io.Reader = res.Body
		var idled atomic.Bool
		if r.idle > 0 {
			t := time.AfterFunc(r.idle, func() { idled.Store(true); stop() })
			defer t.Stop()
			body = readerFunc(func(p []byte) (int, error) {
				n, err := res.Body.Read(p)
				if n > 0 {
					t.Reset(r.idle)
				}
				return n, err
			})
		}
		gone, err := relayEvents(body, w)
		if gone || err == nil {
			return
		}
		var msg string
		switch {
		case idled.Load():
			msg = fmt.Sprintf("cluster node %s, which hosts %s, sent nothing for %s; the stream was cut and may have ended there without this node seeing it", r.node, r.what, r.idle)
		case shutdown.Err() != nil:
			msg = fmt.Sprintf("this node is shutting down; the stream from cluster node %s (%s) was cut", r.node, r.what)
		default:
			msg = fmt.Sprintf("cluster node %s, which hosts %s, broke off the stream before its end (%v); what it did after the last event is unknown here", r.node, r.what, err)
		}
		log.Warn().Err(err).Str("node", r.node).Str("path", path).Bool("idle", idled.Load()).Msg("cluster: a relayed stream from the hosting node broke off")
		if r.lost != nil {
			r.lost(w, msg)
			w.Flush()
		}
	})
	return nil
}

// readerFunc is an io.Reader made of a function.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// relayEvents copies src's events to w, flushing after each one (an
// event ends at a blank line; a keep-alive comment is an event too, so
// the client's connection stays live with the host's). It returns gone
// when a write to the client failed, else nil when src ended cleanly or
// the read error. An event src broke off in the middle of is dropped, so
// the stream's last event (lost) is not glued onto half of one.
func relayEvents(src io.Reader, w *sse.Writer) (gone bool, err error) {
	br := bufio.NewReaderSize(src, 16<<10)
	var ev []byte
	whole := true // the last read ended a line: the next one starts one
	for {
		line, err := br.ReadSlice('\n')
		start := len(ev)
		ev = append(ev, line...)
		switch {
		case err == bufio.ErrBufferFull:
			if len(ev) > sse.MaxLine {
				return false, errEventTooLarge
			}
			whole = false
			continue
		case errors.Is(err, io.EOF):
			// The host's stream ended where the chunked body said so;
			// an unterminated event is dropped, as an EventSource does.
			return false, nil
		case err != nil:
			return false, err
		}
		blank := whole && (len(ev)-start == 1 || (len(ev)-start == 2 && ev[start] == '\r'))
		whole = true
		if !blank {
			continue
		}
		if w.Raw(ev) != nil || w.Flush() != nil {
			return true, nil
		}
		ev = ev[:0]
	}
}
