package stdio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// responseConn is the SDK's stdio connection (sdk.IOTransport) with one
// kind of message read outside it: a plain successful response, the
// answer to each of fangd's tool calls. Everything else the server sends
// (requests, notifications, error responses, batches, anything unusual)
// is handed to the SDK's connection frame by frame, through a pipe, and
// read as the SDK reads it; writes and the batching of answers are the
// SDK's.
//
// Why: the SDK decodes every message it reads twice with a decoder that
// allocates and zeroes a 32 KiB buffer per decode (first as a batch, then
// as one message), 64 KiB per tool call: 6.5% of fangd's CPU in the
// mcp-gateway bench, and a third of the garbage per call that drives the
// GC (docs/bench.md, "Sixth pass"). A response's envelope is three keys;
// it is decoded here once, with encoding/json, only when it has exactly
// the shape the SDK would turn into the same Response (jsonrpc "2.0", an
// integer id, a result), and the result is passed on as the same raw
// bytes. A plain response may overtake a message handed to the SDK just
// before it; the JSON-RPC layer matches responses by id, and fangd asks
// servers for no progress notifications that could then come late.
type responseConn struct {
	sdk.Connection // the SDK's connection, reading the frames piped to it
	stdout         io.Closer
	msgs           chan readResult
	closed         chan struct{}
	stop           context.CancelFunc
	once           sync.Once
}

type readResult struct {
	msg jsonrpc.Message
	err error
}

// maxFrame is the SDK's bound on one inbound frame (sdk.DefaultMaxLineLength).
const maxFrame = sdk.DefaultMaxLineLength

func newResponseConn(ctx context.Context, stdout io.ReadCloser, stdin io.WriteCloser) (sdk.Connection, error) {
	pr, pw := io.Pipe()
	inner, err := (&sdk.IOTransport{Reader: pr, Writer: stdin}).Connect(ctx)
	if err != nil {
		return nil, err
	}
	pctx, stop := context.WithCancel(context.Background())
	c := &responseConn{Connection: inner, stdout: stdout, msgs: make(chan readResult), closed: make(chan struct{}), stop: stop}
	go c.split(stdout, pw)
	go c.pump(pctx)
	return c, nil
}

func (c *responseConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	default:
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-c.msgs:
		return r.msg, r.err
	case <-c.closed:
		return nil, io.EOF
	}
}

func (c *responseConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		c.stop()
		err = c.Connection.Close()
		c.stdout.Close()
	})
	return err
}

// split reads the server's frames as the SDK's reader does (one JSON value
// at a time, at most maxFrame bytes, nothing but a line end after it) and
// sends each to Read directly or through the SDK's connection. A read
// error goes to the SDK's connection, which reports it after the frames
// before it.
func (c *responseConn) split(stdout io.Reader, pipe *io.PipeWriter) {
	limit := &frameLimit{r: stdout}
	dec := json.NewDecoder(limit)
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if err == nil {
			err = trailing(dec.Buffered())
		}
		if err != nil {
			pipe.CloseWithError(err)
			return
		}
		limit.n = 0
		if msg := plainResponse(raw); msg != nil {
			select {
			case c.msgs <- readResult{msg: msg}:
			case <-c.closed:
				pipe.Close()
				return
			}
			continue
		}
		if _, err := pipe.Write(append(raw, '\n')); err != nil {
			return // the SDK's connection is closed
		}
	}
}

// pump passes on what the SDK's connection reads, errors included (not
// every one ends its stream: a malformed batch does not); after the last
// one its Read waits for Close.
func (c *responseConn) pump(ctx context.Context) {
	for {
		msg, err := c.Connection.Read(ctx)
		select {
		case c.msgs <- readResult{msg: msg, err: err}:
		case <-c.closed:
			return
		}
	}
}

var errTrailing = errors.New("invalid trailing data at the end of stream")

// trailing is the SDK's check after a frame: the next byte, if one is
// buffered already, ends the line.
func trailing(rest io.Reader) error {
	var b [1]byte
	n, err := rest.Read(b[:])
	switch {
	case n > 0 && b[0] != '\n' && b[0] != '\r':
		return errTrailing
	case n == 0 && err != nil && err != io.EOF:
		return err
	}
	return nil
}

var errFrameTooLarge = errors.New("inbound JSON-RPC frame exceeded the configured maximum line length")

// frameLimit bounds the bytes read for one frame (n is reset after each).
type frameLimit struct {
	r io.Reader
	n int
}

func (f *frameLimit) Read(p []byte) (int, error) {
	if f.n >= maxFrame {
		return 0, errFrameTooLarge
	}
	if len(p) > maxFrame-f.n {
		p = p[:maxFrame-f.n]
	}
	n, err := f.r.Read(p)
	f.n += n
	return n, err
}

// plainResponse is the Response the SDK would decode from raw when raw is
// exactly {"jsonrpc":"2.0","id":<integer>,"result":<value>} in any key
// order (the keys matched by case, as the SDK's decoder matches them), or
// nil for anything else.
func plainResponse(raw json.RawMessage) *jsonrpc.Response {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || tooDeep(raw) {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || len(m) != 3 || string(m["jsonrpc"]) != `"2.0"` {
		return nil
	}
	result, ok := m["result"]
	if !ok {
		return nil
	}
	n, ok := integerID(m["id"])
	if !ok {
		return nil
	}
	// The SDK decodes a number id as a float64 and keeps its integer part.
	id, err := jsonrpc.MakeID(float64(n))
	if err != nil {
		return nil
	}
	return &jsonrpc.Response{ID: id, Result: result}
}

// maxDepth is the SDK decoder's bound on nesting: a message nested deeper
// is refused as a whole, which the SDK's connection reports.
const maxDepth = 1000

// tooDeep is the SDK's nesting check (brackets outside strings).
func tooDeep(raw []byte) bool {
	depth, inString, escaped := 0, false, false
	for _, b := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			if depth++; depth > maxDepth {
				return true
			}
		case b == '}' || b == ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return false
}

// integerID reads a plain JSON integer a float64 holds exactly (the SDK's
// client numbers its calls 1, 2, 3...).
func integerID(raw json.RawMessage) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}
