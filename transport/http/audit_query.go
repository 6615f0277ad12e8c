package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/sse"
)

// GET /api/audit/query and GET /api/audit/export take LibreFang's filters
// (routes/audit.rs: user, action, agent, from, to, limit; export's format)
// plus fangd's outcome, offset and id cursors. Both walk the chain in
// bounded pages (audit.Walker): neither ever holds the chain in memory.

// Page sizes after LibreFang: query 200 (at most 5000), export 5000. An
// export streams, so it has no maximum of its own.
const (
	auditQueryDefault = 200
	auditQueryMax     = 5000
	auditExportLimit  = 5000
	maxFilterLen      = 256
)

// auditFilter reads the filters query and export share; bad input is a
// 400 invalid_query naming the parameter.
func auditFilter(ctx *fasthttp.RequestCtx) (audit.Filter, error) {
	var f audit.Filter
	args := ctx.QueryArgs()
	if args.Has("channel") {
		// LibreFang's entries carry the channel a request came through;
		// fangd's do not, so the filter could only ever match nothing.
		return f, badRequest("unsupported_filter", `query parameter "channel" is not supported: fangd's audit entries carry no channel (filter by "user", "agent", "action" or "outcome")`)
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"user", &f.Actor}, {"action", &f.Action}, {"agent", &f.AgentID}, {"outcome", &f.Outcome}} {
		v := string(args.Peek(p.name))
		if len(v) > maxFilterLen || !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return f, badRequest("invalid_query", fmt.Sprintf("query parameter %q must be at most %d printable characters", p.name, maxFilterLen))
		}
		*p.dst = v // empty = no filter, as a dashboard sends an unset field
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := string(args.Peek(p.name))
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, badRequest("invalid_query", fmt.Sprintf("query parameter %q must be an RFC 3339 timestamp (2026-12-07T10:00:00Z), got %q", p.name, truncateText(v, 40)))
		}
		*p.dst = t
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.From.After(f.To) {
		return f, badRequest("invalid_query", `query parameter "from" is after "to"`)
	}
	for _, p := range []struct {
		dst   *uint64
		names []string
	}{{&f.AfterID, []string{"after_id", "since_id"}}, {&f.BeforeID, []string{"before_id"}}} {
		for _, name := range p.names {
			if !args.Has(name) {
				continue
			}
			raw := string(args.Peek(name))
			id, err := strconv.ParseUint(raw, 10, 64)
			if err != nil {
				return f, badRequest("invalid_query", fmt.Sprintf("query parameter %q must be a non-negative integer (an audit entry id), got %q", name, truncateText(raw, 40)))
			}
			*p.dst = id
			break
		}
	}
	return f, nil
}

// lfEntry appends one stored entry with LibreFang's names alongside
// fangd's: seq (= id), action (= event_type), detail (= details), user_id
// (the actor when it is a user id, a UUID; else null) and channel (null:
// fangd records none).
func lfEntry(dst []byte, m *audit.Match) []byte {
	raw := m.Raw
	dst = append(dst, raw[:len(raw)-1]...)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Entry.ID, 10)
	dst = append(dst, `,"action":`...)
	dst = store.AppendJSONString(dst, m.Entry.EventType)
	dst = append(dst, `,"detail":`...)
	dst = store.AppendJSONString(dst, m.Entry.Details)
	dst = append(dst, `,"user_id":`...)
	if u, err := uuid.Parse(m.Entry.Actor); err == nil && len(m.Entry.Actor) == 36 {
		dst = strconv.AppendQuote(dst, u.String())
	} else {
		dst = append(dst, "null"...)
	}
	return append(dst, `,"channel":null}`...)
}

// checkStored refuses a stored entry that is not a JSON object: it is
// spliced into the answer as it is.
func checkStored(m *audit.Match) error {
	if r := m.Raw; len(r) < 2 || r[0] != '{' || r[len(r)-1] != '}' {
		return fmt.Errorf("audit entry %d is not a JSON object", m.Entry.ID)
	}
	return nil
}

// auditQuery serves GET /api/audit/query: the matching entries newest
// first, a page at a time (?offset=&limit=, or the ?before_id= cursor the
// answer's next_before_id gives, which stays put while the chain grows),
// with total counting every match.
func (s *Server) auditQuery(ctx *fasthttp.RequestCtx) error {
	f, err := auditFilter(ctx)
	if err != nil {
		return err
	}
	offset, limit, err := pageParams(ctx, auditQueryDefault, auditQueryMax)
	if err != nil {
		return err
	}
	trimmed, err := s.deps.Audit.HistoryTrimmed()
	if err != nil {
		return err
	}
	w, err := s.deps.Audit.Walk(s.reqCtx(ctx), f, true)
	if err != nil {
		return err
	}
	total, counted := w.Count()
	var items []byte
	seen, kept := uint64(0), 0
	var lastID uint64
	for !w.Done() {
		ms, err := w.Next(s.reqCtxWait(ctx))
		if err != nil {
			return err
		}
		for i := range ms {
			seen++
			if seen <= uint64(offset) || kept == limit {
				continue
			}
			if err := checkStored(&ms[i]); err != nil {
				return err
			}
			if kept > 0 {
				items = append(items, ',')
			}
			items = lfEntry(items, &ms[i])
			kept++
			lastID = ms[i].Entry.ID
		}
		if counted && kept == limit {
			break // the total is known without reading the rest
		}
	}
	if !counted {
		total = seen
	}
	more := uint64(offset)+uint64(kept) < total
	b := make([]byte, 0, 2*len(items)+256)
	b = append(b, `{"items":[`...)
	b = append(b, items...)
	b = append(b, `],"entries":[`...)
	b = append(b, items...)
	b = append(b, `],"total":`...)
	b = strconv.AppendUint(b, total, 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(offset), 10)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(limit), 10)
	b = append(b, `,"next_offset":`...)
	if more {
		b = strconv.AppendInt(b, int64(offset+kept), 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"next_before_id":`...)
	if more && kept > 0 {
		b = strconv.AppendUint(b, lastID, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"history_truncated":`...)
	b = strconv.AppendBool(b, trimmed)
	b = append(b, "}\n"...)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	return nil
}

// exportFormats are the ?format= values: LibreFang's json (the default, one
// JSON array) and csv, and JSON Lines (jsonl, or ndjson).
var exportFormats = map[string]struct{ contentType, ext string }{
	"json":   {"application/json", "json"},
	"jsonl":  {"application/x-ndjson", "jsonl"},
	"ndjson": {"application/x-ndjson", "jsonl"},
	"csv":    {"text/csv; charset=utf-8", "csv"},
}

// auditExport serves GET /api/audit/export: every matching entry (up to
// ?limit=, default 5000 as LibreFang) streamed, newest first (?order=asc for
// chain order). The body is produced a store page at a time as the client
// reads it.
func (s *Server) auditExport(ctx *fasthttp.RequestCtx) error {
	f, err := auditFilter(ctx)
	if err != nil {
		return err
	}
	format := string(ctx.QueryArgs().Peek("format"))
	if format == "" {
		format = "json"
	}
	ft, ok := exportFormats[format]
	if !ok {
		return badRequest("invalid_query", fmt.Sprintf(`query parameter "format" must be json, jsonl, ndjson or csv, got %q`, truncateText(format, 40)))
	}
	limit, err := intQuery(ctx, auditExportLimit, 1, 1<<31-1, "limit")
	if err != nil {
		return err
	}
	newest := true
	switch o := string(ctx.QueryArgs().Peek("order")); o {
	case "", "desc":
	case "asc":
		newest = false
	default:
		return badRequest("invalid_query", fmt.Sprintf(`query parameter "order" must be asc or desc, got %q`, truncateText(o, 40)))
	}
	trimmed, err := s.deps.Audit.HistoryTrimmed()
	if err != nil {
		return err
	}
	w, err := s.deps.Audit.Walk(s.reqCtx(ctx), f, newest)
	if err != nil {
		return err
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(ft.contentType)
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="audit.`+ft.ext+`"`)
	ctx.Response.Header.Set("X-Librefang-Audit-History-Truncated", strconv.FormatBool(trimmed))
	sctx, cancel := s.streamCtx()
	ctx.Response.SetBodyStream(&exportStream{w: w, ctx: sctx, cancel: cancel, format: ft.ext, left: limit, closing: s.closing,
		deadline: sse.NewDeadline(ctx.Conn(), s.cfg.StreamWriteTimeout)}, -1)
	return nil
}

// exportStream is an export's body: fasthttp reads it chunk by chunk as the
// client takes the bytes, and each time its buffer is empty it reads one
// more page of the store. A store error mid-way is returned from Read, so
// fasthttp cuts the chunked body without its final chunk: the client sees
// a failed transfer, never a short file that looks complete (which a body
// stream writer, with no way to fail, would give for JSON Lines and CSV).
type exportStream struct {
	w        *audit.Walker
	ctx      context.Context // the walk's: ends with Close or shutdown
	cancel   context.CancelFunc
	format   string
	left     int
	closing  <-chan struct{}
	deadline *sse.Deadline
	buf      []byte
	off      int
	started  bool
	finished bool
	wrote    bool // an entry is out (the json array's commas)
	// maxBuf is the largest buffer one fill made (tests).
	maxBuf int
}

var errExportClosing = errors.New("audit export: the server is shutting down")

func (x *exportStream) Read(p []byte) (int, error) {
	for x.off == len(x.buf) {
		if x.finished {
			return 0, io.EOF
		}
		if err := x.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, x.buf[x.off:])
	x.off += n
	return n, nil
}

// Close ends the walk (fasthttp closes the stream when the response is
// written, or when the client went away).
func (x *exportStream) Close() error {
	x.cancel()
	x.finished = true
	x.buf = nil
	return nil
}

// fill refills the buffer with the next page of output.
func (x *exportStream) fill() error {
	select {
	case <-x.closing:
		return errExportClosing
	default:
	}
	x.buf, x.off = x.buf[:0], 0
	if !x.started {
		x.started = true
		switch x.format {
		case "json":
			x.buf = append(x.buf, '[')
		case "csv":
			x.buf = append(x.buf, "seq,timestamp,agent_id,action,detail,outcome,user_id,channel,hash,prev_hash,actor,source_ip\n"...)
		}
	}
	if x.left > 0 && !x.w.Done() {
		ms, err := x.w.Next(x.ctx)
		if err != nil {
			return err
		}
		for i := range ms {
			if x.left == 0 {
				break
			}
			x.left--
			if err := x.entry(&ms[i]); err != nil {
				return err
			}
		}
	}
	if x.left == 0 || x.w.Done() {
		if x.format == "json" {
			x.buf = append(x.buf, "]\n"...)
		}
		x.finished = true
	}
	x.maxBuf = max(x.maxBuf, len(x.buf))
	// The whole export outlives the server's one-shot write timeout; the
	// timeout bounds each write instead.
	x.deadline.Extend()
	return nil
}

func (x *exportStream) entry(m *audit.Match) error {
	if err := checkStored(m); err != nil {
		return err
	}
	switch x.format {
	case "json":
		if x.wrote {
			x.buf = append(x.buf, ',')
		}
		x.buf = lfEntry(x.buf, m)
	case "jsonl":
		x.buf = append(lfEntry(x.buf, m), '\n')
	case "csv":
		e := &m.Entry
		user := ""
		if _, err := uuid.Parse(e.Actor); err == nil && len(e.Actor) == 36 {
			user = e.Actor
		}
		x.buf = strconv.AppendUint(x.buf, e.ID, 10)
		for _, cell := range []string{e.Timestamp, e.AgentID, e.EventType, e.Details, e.Outcome, user, "", e.Hash, e.PrevHash, e.Actor, e.SourceIP} {
			x.buf = appendCSVCell(append(x.buf, ','), cell)
		}
		x.buf = append(x.buf, '\n')
	}
	x.wrote = true
	return nil
}

// appendCSVCell writes one RFC 4180 cell: quoted when it holds a comma,
// quote, CR or LF (quotes doubled). A cell a spreadsheet would run as a
// formula (starting with = + - @, TAB or CR) is quoted with a leading '
// (OWASP's CSV-injection advice, as LibreFang does); the cell's text is
// then the value after that quote.
func appendCSVCell(dst []byte, s string) []byte {
	formula := s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0]))
	if !formula && !strings.ContainsAny(s, ",\"\r\n") {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	if formula {
		dst = append(dst, '\'')
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}
