package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/audit"
)

// POST /mcp's fast path: a session-less (2026-07-28) tools/call of a
// proxied tool answered without the SDK's server. The SDK serves such a
// request by building a server connection for it, decoding the body
// several times over (every decode allocates and zeroes a 32 KiB buffer
// inside the SDK), running the call in a goroutine of its own and encoding
// the answer through its stream machinery: most of fangd's CPU per call in
// the mcp-gateway bench (docs/bench.md, "Fifth pass"). transport/http
// checks the request as the SDK would (headers, envelope, _meta) and hands
// the call here; everything the exposer decides (which tool, the approval
// gate, the audit entry) is decided by the same code as on the SDK path,
// and anything this path does not reproduce exactly goes to the SDK.

// metaServerInfo is the key under which a 2026-07-28 result names the
// server that made it (the SDK's MetaKeyServerInfo, SEP-2575).
const metaServerInfo = sdk.MetaKeyServerInfo

// DirectAnswer is the JSON-RPC answer to a direct call: Result (the
// encoded result member) or Err, and the call's tool_invoked entry, which
// the caller must make durable before it answers.
type DirectAnswer struct {
	Result json.RawMessage
	Err    *jsonrpc.Error
	Audit  audit.Event
}

// CallDirect runs a tools/call of the proxied tool name for a session-less
// client and encodes its result as the SDK's server would for the
// 2026-07-28 protocol. ok is false when the call is not one this path
// serves exactly, and then nothing was called: not a proxied tool (an
// unknown name, a built-in), a tool the approval policy holds for a person
// (the SDK path reports the wait as progress), a caller restricted to an
// agent's tools, a tool whose schema binds arguments to x-mcp-header
// headers (the SDK checks those), or an exposer without an audit log.
func (x *Exposer) CallDirect(ctx context.Context, name string, args json.RawMessage, caller Caller) (ans DirectAnswer, ok bool) {
	if x.opts.Manager == nil || x.opts.Audit == nil || caller.AgentID != "" {
		return ans, false
	}
	x.mu.Lock()
	t, proxied := x.proxied[name]
	x.mu.Unlock()
	if !proxied || bytes.Contains(t.InputSchema, []byte("x-mcp-header")) ||
		(x.opts.Approvals != nil && x.opts.Approvals.Gated(name)) {
		return ans, false
	}
	// What the middleware records, from the same index.
	server, tool := "fangd", name
	if it, ok := x.opts.Manager.index.Load().byName[name]; ok {
		server, tool = it.Server, it.Info.OriginalName
	}
	start := time.Now()
	res, _, _, err := x.opts.Manager.callProxied(ctx, name, args)
	var callErr error
	if err != nil {
		ans.Err, res = rpcError(err), nil
		callErr = ans.Err
	} else {
		if res == nil {
			res = &sdk.CallToolResult{}
		}
		// The SDK server's own checks of a handler's result (Server.callTool,
		// handleMultiRoundTripResult).
		if res.InputRequests != nil && (len(res.Content) > 0 || res.StructuredContent != nil) {
			ans.Err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "server bug: result has both content and inputRequests"}
			callErr, res = ans.Err, nil
		}
	}
	ans.Audit = ToolCallEvent(caller, server, tool, args, callOutcome(res, callErr), time.Since(start))
	if ans.Err != nil {
		return ans, true
	}
	raw, err := x.encodeResult(res)
	if err != nil {
		ans.Err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
		return ans, true
	}
	ans.Result = raw
	return ans, true
}

// callOutcome is the tool_invoked outcome of a call that ended with res or
// err (a JSON-RPC error): a refusal of the tool or its arguments is
// "denied", as Outcome says of a domain refusal.
func callOutcome(res *sdk.CallToolResult, err error) string {
	outcome := Outcome(res, err)
	var rpcErr *jsonrpc.Error
	if errors.As(err, &rpcErr) && (rpcErr.Code == jsonrpc.CodeInvalidParams || rpcErr.Code == CodeToolDenied) {
		outcome = "denied"
	}
	return outcome
}

// plainResult is CallToolResult without its methods, so that it encodes
// field by field.
type plainResult sdk.CallToolResult

// encodeResult is what the SDK's server puts in the result member of a
// 2026-07-28 tools/call answer: the result with content [] rather than
// null, its resultType ("input_required" when it carries input requests,
// else "complete"), and the server's identity in _meta unless the result
// names one already (ServerSession.handle, annotateServerInfo). The
// encoding mirrors CallToolResult.MarshalJSON, whose resultType field is
// not settable from outside the SDK; TestMCPFastToolCallMatchesTheSDK
// holds the two answers equal.
func (x *Exposer) encodeResult(res *sdk.CallToolResult) (json.RawMessage, error) {
	out := plainResult(*res)
	rt := "complete"
	if res.InputRequests != nil {
		rt = "input_required"
	} else if out.Content == nil {
		out.Content = []sdk.Content{}
	}
	if _, named := out.Meta[metaServerInfo]; !named {
		meta := make(sdk.Meta, len(out.Meta)+1)
		for k, v := range out.Meta {
			meta[k] = v
		}
		meta[metaServerInfo] = x.impl
		out.Meta = meta
	}
	wire := struct {
		plainResult
		ResultType    string          `json:"resultType,omitempty"`
		InputRequests json.RawMessage `json:"inputRequests,omitempty"`
	}{plainResult: out, ResultType: rt}
	if res.InputRequests != nil {
		ir, err := json.Marshal(res.InputRequests)
		if err != nil {
			return nil, err
		}
		wire.InputRequests = ir
	}
	return json.Marshal(wire)
}
