package telegram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"
)

// The Bot API client. An idle bot is one getUpdates long poll that stays
// open for up to poll_interval_secs, and a daemon may run a thousand of
// them, so what one open poll holds is what matters. net/http gives every
// HTTP/1.1 connection a read goroutine and a write goroutine next to the
// caller's, each with its own stack (about two thirds of an idle bot's
// memory was those stacks). This client does the request on the caller's
// goroutine with fasthttp's request/response codec and connection pool:
//
//   - the request is written through a pooled buffer that goes back to the
//     pool as soon as it is flushed;
//   - the caller then waits for the first byte of the answer with a 1-byte
//     read straight from the connection, holding no buffer and no parser
//     state; only when the server answers does it take a pooled reader
//     and a pooled response to parse it;
//   - cancelling the context (the channel stops or reconnects) makes the
//     blocked read or write fail at once, through a deadline in the past
//     set by context.AfterFunc (no goroutine per call), and that
//     connection is closed rather than pooled.
//
// So a waiting bot costs its one goroutine and a socket. Connections to one
// Bot API server are pooled across all bots of the daemon, idle ones are
// closed after maxIdle, and the proxy comes from HTTPS_PROXY/HTTP_PROXY/
// NO_PROXY as with net/http. What this client does not do: HTTP/2 (every
// poll holds its own HTTP/1.1 connection, as net/http does when the server
// does not offer h2, which a local Bot API server does not) and
// compressed responses (Bot API answers are small).
type botClient struct {
	mu    sync.Mutex
	hosts map[string]*fasthttp.HostClient // by scheme://host:port
	// dial, when set, connects through the network policy (the channel
	// runtime's); the environment's proxy is not used then, since a proxy
	// would make the policy's view of the address meaningless.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newBotClient is a client of its own for an adapter that dials through
// a network policy.
func newBotClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *botClient {
	return &botClient{hosts: map[string]*fasthttp.HostClient{}, dial: dial}
}

const (
	// readBufferSize bounds a response's header block (fasthttp parses it
	// inside the buffer). Readers are pooled and held only while an answer
	// is parsed, not while a poll waits, so they may be roomy.
	readBufferSize  = 16 << 10
	writeBufferSize = 4 << 10
	maxBody         = 16 << 20
	dialTimeout     = 30 * time.Second
	// maxIdle closes pooled connections nobody used for this long. A
	// connection of a polling bot is in use again within a second.
	maxIdle = 30 * time.Second
)

var client = &botClient{hosts: map[string]*fasthttp.HostClient{}}

// errCanceled is returned when the context ended while the call waited.
var errCanceled = errors.New("request canceled")

func (c *botClient) host(uri *fasthttp.URI) *fasthttp.HostClient {
	tls := string(uri.Scheme()) == "https"
	addr := string(uri.Host())
	if _, _, err := net.SplitHostPort(addr); err != nil {
		if tls {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	key := string(uri.Scheme()) + "://" + addr
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc := c.hosts[key]; hc != nil {
		return hc
	}
	d := &fasthttpproxy.Dialer{Timeout: dialTimeout, ConnectTimeout: dialTimeout, DialDualStack: true}
	dial, err := d.GetDialFuncForTLS(true, tls)
	if err != nil {
		dial = func(string) (net.Conn, error) { return nil, fmt.Errorf("proxy from the environment: %w", err) }
	}
	if c.dial != nil {
		dial = func(addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			defer cancel()
			return c.dial(ctx, "tcp", addr)
		}
	}
	hc := &fasthttp.HostClient{Addr: addr, IsTLS: tls, Dial: dial, DialDualStack: true,
		MaxConns: 1 << 30, MaxIdleConnDuration: maxIdle, ReadBufferSize: readBufferSize,
		WriteBufferSize: writeBufferSize, MaxResponseBodySize: maxBody, NoDefaultUserAgentHeader: true}
	c.hosts[key] = hc
	return hc
}

// reply is a parsed answer: the status, the Retry-After header and the body.
type reply struct {
	status     int
	retryAfter string
	body       []byte
}

// post sends body as JSON to url and returns the answer, or an error once
// ctx ends or the deadline passes. A request that fails on a pooled
// connection the server had already closed is sent again on a new one,
// unless the server may have seen it (a sendMessage whose answer was cut).
//
// heavy runs the steps that need stack (writing the request, parsing the
// answer); the calling goroutine itself only waits for the answer's first
// byte. A long poll passes offStack, so that the goroutine parked in it
// for the bot's whole life keeps a minimal stack.
func (c *botClient) post(ctx context.Context, url string, body []byte, deadline time.Time, heavy func(func())) (*reply, error) {
	idempotent := !strings.HasSuffix(url, "/sendMessage")
	for attempt := 0; ; attempt++ {
		x := &exchange{c: c, ctx: ctx, url: url, body: body, deadline: deadline}
		heavy(x.send)
		if x.err == nil {
			x.wait()
		}
		if x.err == nil {
			heavy(x.finish)
		} else {
			x.done()
		}
		if x.err != nil && x.reused && attempt == 0 && ctx.Err() == nil && staleConn(x.err) && (!x.wrote || idempotent) {
			continue
		}
		return x.reply, x.err
	}
}

// inline runs fn on the calling goroutine.
func inline(fn func()) { fn() }

// offStack runs fn on a new goroutine and waits for it, so that whatever
// stack fn needs is given back when it returns instead of staying with the
// caller. A panic in fn is raised again in the caller.
func offStack(fn func()) {
	var p any
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { p = recover() }()
		fn()
	}()
	<-done
	if p != nil {
		panic(p)
	}
}

// exchange is one request and its answer on one connection.
type exchange struct {
	c        *botClient
	ctx      context.Context
	url      string
	body     []byte
	deadline time.Time

	hc      *fasthttp.HostClient
	release func(close bool) // gives the connection back or closes it
	conn    net.Conn
	stop    func() bool // unregisters the cancel hook
	close   bool        // the connection must not be pooled
	first   firstByteConn
	reused  bool // the connection came from the pool
	wrote   bool // the whole request went out
	reply   *reply
	err     error
}

// send takes a connection and writes the request.
func (x *exchange) send() {
	left := time.Until(x.deadline)
	if left <= 0 {
		x.err = fasthttp.ErrTimeout
		return
	}
	if x.err = x.ctx.Err(); x.err != nil {
		return
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI(x.url)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(x.body)
	x.hc = x.c.host(req.URI())
	for {
		cc, err := x.hc.AcquireConn(left, false)
		if err != nil {
			x.err = err
			return
		}
		x.conn = cc.Conn()
		x.reused = !cc.LastUseTime().Before(cc.CreatedTime())
		if !x.reused || !peerClosed(x.conn) {
			hc := x.hc
			x.release = func(close bool) {
				if close {
					hc.CloseConn(cc)
				} else {
					hc.ReleaseConn(cc)
				}
			}
			break
		}
		// net/http would have seen this in its read goroutine and dropped
		// the connection from the pool; without one, look before use.
		x.hc.CloseConn(cc)
	}
	conn := x.conn
	x.stop = context.AfterFunc(x.ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	if x.err = conn.SetDeadline(x.deadline); x.err != nil {
		x.close = true
		return
	}
	bw := x.hc.AcquireWriter(conn)
	x.err = req.Write(bw)
	if x.err == nil {
		x.err = bw.Flush()
	}
	x.hc.ReleaseWriter(bw)
	x.wrote = x.err == nil
	x.close = !x.wrote || req.ConnectionClose()
}

// wait blocks until the answer's first byte arrives, holding nothing but
// the connection.
func (x *exchange) wait() {
	if _, err := io.ReadFull(x.conn, x.first.b[:]); err != nil {
		x.err = err
		return
	}
	x.first.Conn, x.first.has = x.conn, true
}

// finish parses the answer and gives the connection back.
func (x *exchange) finish() {
	br := x.hc.AcquireReader(&x.first)
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(res)
	x.err = res.ReadLimitBody(br, maxBody)
	br.Reset(nil) // the pool must not keep this connection alive
	x.hc.ReleaseReader(br)
	if x.err == nil {
		x.close = x.close || res.ConnectionClose()
		x.reply = &reply{status: res.StatusCode(), retryAfter: string(res.Header.Peek("Retry-After")),
			body: append([]byte(nil), res.Body()...)}
	}
	x.done()
}

// done gives the connection back to the pool, or closes it after an error
// or a cancel.
func (x *exchange) done() {
	if x.release == nil {
		return
	}
	// stop reports false once the cancel hook ran (or is running): the
	// connection's deadline is then ruined, never pool it.
	if !x.stop() {
		x.close = true
		if err := x.ctx.Err(); err != nil {
			x.err, x.reply = fmt.Errorf("%w: %w", errCanceled, err), nil
		}
	}
	x.release(x.close || x.err != nil)
	x.release, x.conn, x.first.Conn = nil, nil, nil
}

// staleConn reports an error that a pooled connection the server closed
// while it sat idle gives on its next use.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, fasthttp.ErrConnectionClosed)
}

// firstByteConn gives back the byte read while waiting, then reads on.
type firstByteConn struct {
	net.Conn
	b   [1]byte
	has bool
}

func (f *firstByteConn) Read(p []byte) (int, error) {
	if f.has && len(p) > 0 {
		p[0] = f.b[0]
		f.has = false
		return 1, nil
	}
	return f.Conn.Read(p)
}
