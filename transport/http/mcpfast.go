package http

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"mime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/mcp"
)

// The fast path of POST /mcp: the session-less (2026-07-28) tools/call of
// a proxied tool, the request an MCP gateway serves all day, answered by
// fangd's own code instead of the SDK's streamable HTTP server.
//
// Why: with the Go SDK client (which speaks 2026-07-28 by default) every
// call was served by a fresh SDK server connection, decoded six to nine
// times inside the SDK (each decode allocating and zeroing a 32 KiB
// buffer: ~0.9 MB per proxied call) and passed through the fasthttp ⇄
// net/http adaptor; docs/bench.md ("Fifth pass") has the profile rows.
//
// How it stays the SDK's answer: fastToolCall applies every check the SDK
// applies to this request (method, media types, the protocol version
// header against _meta, the _meta triple, Mcp-Method and Mcp-Name, the
// JSON-RPC id) and takes the request only when all of them pass and it can
// reproduce the answer exactly; anything else, including every request the
// SDK would refuse, goes to the SDK untouched. The exposer (CallDirect)
// decides as on the SDK path and hands the tool_invoked entry over, which
// the chain commits with the request's entry before the answer goes out.
// TestMCPFastToolCallMatchesTheSDK sends the same requests both ways and
// compares the answers field for field.

// mcpFastVersion is the protocol the fast path serves: the newest, the
// one with no session (older versions keep the SDK).
const mcpFastVersion = "2026-07-28"

// Keys of a 2026-07-28 request's _meta (SEP-2575).
const (
	metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"
	metaClientInfo      = "io.modelcontextprotocol/clientInfo"
	metaCapabilities    = "io.modelcontextprotocol/clientCapabilities"
)

// fastToolCall answers rpc's tools/call and reports true, or reports
// false having written and called nothing.
func (e *mcpEndpoint) fastToolCall(ctx *fasthttp.RequestCtx, rpc rpcShape) bool {
	if e.x == nil || e.audits == nil || e.noFast.Load() || rpc.msg == nil || rpc.method != "tools/call" || rpc.progress {
		return false
	}
	h := &ctx.Request.Header
	if string(h.Peek("Mcp-Protocol-Version")) != mcpFastVersion || len(h.PeekAll("Mcp-Protocol-Version")) != 1 ||
		len(h.PeekAll("Last-Event-ID")) > 0 || len(h.PeekAll("Mcp-Session-Id")) > 0 ||
		len(h.PeekAll(mcp.HeaderAgentID)) > 0 || string(h.Peek("Mcp-Method")) != "tools/call" ||
		!jsonMediaType(h.ContentType()) || !acceptsJSONAndStream(h.PeekAll("Accept")) {
		return false
	}
	id, ok := fastID(rpc.msg["id"])
	if !ok {
		return false
	}
	name, args, ok := fastParams(rpc.msg["params"], &e.metas)
	if !ok || string(h.Peek("Mcp-Name")) != name || len(h.PeekAll("Mcp-Name")) != 1 {
		return false
	}
	actor, _ := ctx.UserValue(userActor).(string)
	// The SDK path runs the handler on a context of its own too (ownContext):
	// a call is bounded by the server's timeout, not by the client.
	ans, ok := e.x.CallDirect(context.Background(), name, args, mcp.Caller{Via: "mcp_http", Actor: actor, SourceIP: clientIP(ctx).String()})
	if !ok {
		return false
	}
	ctx.SetUserValue(userAuditFirst, []audit.Event{ans.Audit})
	writeRPCAnswer(ctx, id, ans)
	e.fastCalls.Add(1)
	return true
}

// writeRPCAnswer writes one JSON-RPC response as the SDK's streamable
// server does for a 2026-07-28 call answered in JSON: 200 with the result,
// or the error with the status SEP-2575 gives its code (404 for an unknown
// method, 400 for invalid params, 200 for the rest; extractErrorStatus).
func writeRPCAnswer(ctx *fasthttp.RequestCtx, id json.RawMessage, ans mcp.DirectAnswer) {
	status, member, value := fasthttp.StatusOK, "result", ans.Result
	if ans.Err != nil {
		switch ans.Err.Code {
		case jsonrpc.CodeMethodNotFound:
			status = fasthttp.StatusNotFound
		case jsonrpc.CodeInvalidParams:
			status = fasthttp.StatusBadRequest
		}
		member = "error"
		value, _ = json.Marshal(ans.Err)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	// Written into the response's own buffer: no copy of the answer.
	r := &ctx.Response
	r.ResetBody()
	r.AppendBodyString(`{"jsonrpc":"2.0","id":`)
	r.AppendBody(id)
	r.AppendBodyString(`,"`)
	r.AppendBodyString(member)
	r.AppendBodyString(`":`)
	r.AppendBody(value)
	r.AppendBodyString("}")
}

// fastID is the request's id when the SDK would echo it byte for byte: a
// string, or an integer it holds exactly (it decodes numbers as float64);
// anything else is left to the SDK.
func fastID(raw json.RawMessage) (json.RawMessage, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	if raw[0] == '"' {
		_, ok := jsonString(raw)
		return raw, ok
	}
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 || (digits[0] == '0' && len(raw) > 1) {
		return nil, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	return raw, true
}

// fastParams reads a tools/call's params when the SDK would read the same
// from them: exactly the keys _meta, name and arguments or the first two
// (a key the SDK matches differently, or one that asks for more, such as
// inputResponses, is left to it), the arguments an object, and a _meta
// that passes the
// SDK's 2026-07-28 checks (the protocol version, the client's capabilities
// and, when given, its identity).
func fastParams(raw json.RawMessage, metas *metaMemo) (name string, args json.RawMessage, ok bool) {
	var p map[string]json.RawMessage
	if json.Unmarshal(raw, &p) != nil {
		return "", nil, false
	}
	meta, hasMeta := p["_meta"]
	rawName, hasName := p["name"]
	args, hasArgs := p["arguments"]
	// Without arguments (a tool that takes none) the SDK passes none on.
	want := 2
	if hasArgs {
		want = 3
	}
	if len(p) != want || !hasMeta || !hasName || (hasArgs && args[0] != '{') {
		return "", nil, false
	}
	if name, ok = jsonString(rawName); !ok || name == "" || !metas.valid(meta) {
		return "", nil, false
	}
	return name, args, true
}

// jsonString decodes a JSON string value; one without escapes (every tool
// name fangd exposes) is its bytes between the quotes, the body having
// decoded as JSON already in checkJSONRPC (encoding/json would replace
// invalid UTF-8).
func jsonString(raw json.RawMessage) (s string, ok bool) {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), true
	}
	return s, json.Unmarshal(raw, &s) == nil
}

// metaMemo remembers _meta values that passed fastMeta, so that a client
// sending the same _meta on every call (the Go SDK client does: its
// protocol version, capabilities and identity) has it checked once.
// fastMeta is a function of the bytes alone, so a remembered value is
// exactly one it would pass again. Why: its four encoding/json decodes were
// ~30 of the ~45 allocations fastParams made per call (docs/bench.md,
// "Sixth pass"). Bounded: past metaMemoMax values it checks every call.
type metaMemo struct {
	mu   sync.Mutex // serialises writers; readers load seen
	seen atomic.Pointer[map[string]struct{}]
}

const metaMemoMax = 32

func (m *metaMemo) valid(raw json.RawMessage) bool {
	if seen := m.seen.Load(); seen != nil {
		if _, ok := (*seen)[string(raw)]; ok {
			return true
		}
	}
	if !fastMeta(raw) {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.seen.Load()
	if old != nil && len(*old) >= metaMemoMax {
		return true
	}
	// Copy on write: at most metaMemoMax copies of a map this small, ever.
	next := map[string]struct{}{}
	if old != nil {
		next = maps.Clone(*old)
	}
	next[string(raw)] = struct{}{}
	m.seen.Store(&next)
	return true
}

// fastMeta checks a request's _meta as the SDK does for a 2026-07-28
// call (servePOST, validateRequestMeta): the protocol version matching the
// header, the client's capabilities present and well-formed, its identity
// well-formed if present. A progress token is the SDK's (it streams).
func fastMeta(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	if _, progress := m["progressToken"]; progress {
		return false
	}
	var version string
	if json.Unmarshal(m[metaProtocolVersion], &version) != nil || version != mcpFastVersion {
		return false
	}
	caps, ok := m[metaCapabilities]
	if !ok || !isJSONObject(caps) {
		return false
	}
	var c mcpClientCapabilities
	if json.Unmarshal(caps, &c) != nil {
		return false
	}
	if info, ok := m[metaClientInfo]; ok {
		var impl sdk.Implementation
		if !isJSONObject(info) || json.Unmarshal(info, &impl) != nil {
			return false
		}
	}
	return true
}

// mcpClientCapabilities (and sdk.Implementation) have the shapes the SDK
// decodes _meta's capabilities and client identity into, so that a value
// it would refuse is refused here too (the SDK's decoder matches keys by
// case, encoding/json also without: it sees every key the SDK sees).
type mcpClientCapabilities struct {
	sdk.ClientCapabilities
	// Roots has sdk.RootCapabilities' shape (the type is deprecated).
	Roots *struct {
		ListChanged bool `json:"listChanged,omitempty"`
	} `json:"roots,omitempty"`
}

func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

// jsonMediaType reports whether a Content-Type's media type is
// application/json, as the SDK's check parses it.
func jsonMediaType(ct []byte) bool {
	if string(ct) == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(string(ct))
	return err == nil && mt == "application/json"
}

// acceptsJSONAndStream is the SDK's check of Accept (streamableAccepts):
// both application/json and text/event-stream, or wildcards covering them.
func acceptsJSONAndStream(values [][]byte) bool {
	var jsonOK, streamOK bool
	for _, v := range values {
		for _, tok := range strings.Split(string(v), ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(tok), ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK && streamOK
}
