package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/kernel"
)

// POST /mcp under the approval policy: a tools/call of a gated tool makes
// an approval request like an agent's call and waits for its decision in
// the JSON-RPC call itself (up to the policy's longest wait). Approved,
// the tool runs and its result is the answer; rejected, expired or
// cancelled, the answer is a tool result with isError naming the approval
// and the decision.

// ProgressInterval is how often a call waiting for a decision sends a
// notifications/progress, when its client asked for progress.
const ProgressInterval = 10 * time.Second

// gated reports whether a call of name waits for a decision. Only tools
// that exist are gated: a call of an unknown name fails as such.
func (x *Exposer) gated(name string) bool {
	if x.opts.Approvals == nil {
		return false
	}
	x.mu.Lock()
	_, builtin := x.builtins[name]
	_, proxied := x.proxied[name]
	x.mu.Unlock()
	return (builtin || proxied) && x.opts.Approvals.Gated(name)
}

// awaitApproval asks for a decision on the call and waits for it; the
// caller's identity goes into the record (requested_by "mcp:<identity>",
// the agent of X-Fangd-Agent-Id or "mcp:<identity>" as its agent).
func (x *Exposer) awaitApproval(ctx context.Context, call *sdk.CallToolRequest, caller Caller, name string, args json.RawMessage) (*approval.Approval, error) {
	who := caller.Actor
	if who == "" {
		who = "anonymous"
	}
	agentID, agentName := caller.AgentID, caller.AgentID
	if agentID == "" {
		agentID, agentName = "mcp:"+who, "MCP client"
	}
	if len(strings.TrimSpace(string(args))) == 0 {
		args = json.RawMessage("{}")
	}
	if len(args) > approval.MaxPayloadBytes {
		return nil, &jsonrpc.Error{Code: CodeToolDenied, Message: fmt.Sprintf("tool %s needs human approval and its arguments are too large to show to a person (over 64 KiB)", name)}
	}
	req := approval.Request{AgentID: agentID, AgentName: agentName, Action: name, Payload: args,
		Description: fmt.Sprintf("An MCP client (%s from %s) wants to call the tool %s through POST /mcp.", who, orUnknown(caller.SourceIP), name),
		RequestedBy: "mcp:" + who, SourceIP: caller.SourceIP}
	var token any
	if call != nil && call.Params != nil {
		token = call.Params.GetProgressToken()
	}
	total := x.opts.Approvals.MaxWait()
	start := time.Now()
	tick := func(id string) {
		if token == nil || call.Session == nil {
			return
		}
		// A client that cannot take notifications (plain JSON answers)
		// simply does not get them.
		_ = call.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{ProgressToken: token,
			Progress: time.Since(start).Seconds(), Total: total.Seconds(),
			Message: fmt.Sprintf("waiting for approval %s of %s (POST /api/approvals/%s/approve or /reject)", id, name, id)})
	}
	wctx, cancel := context.WithTimeout(ctx, total+time.Minute)
	defer cancel()
	rec, err := x.opts.Approvals.GateCall(wctx, req, ProgressInterval, tick)
	if err != nil {
		if de := kernel.AsError(err); de != nil {
			return nil, rpcError(err)
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("tool %s needs human approval and the request failed: %v", name, err)}
	}
	return rec, nil
}

// notRun is the tool result of a call a decision did not let run.
func notRun(rec *approval.Approval) *sdk.CallToolResult {
	var msg string
	switch rec.Status {
	case approval.StatusRejected:
		msg = fmt.Sprintf("Not run: approval %s was rejected by %s.", rec.ID, rec.DecidedBy)
		if rec.Reason != "" {
			msg += " Reason given: " + rec.Reason
		}
	case approval.StatusModified:
		msg = fmt.Sprintf("Not run: approval %s was sent back for changes by %s. Feedback: %s", rec.ID, rec.DecidedBy, rec.Reason)
	case approval.StatusExpired:
		msg = fmt.Sprintf("Not run: approval %s expired; nobody approved the call in time.", rec.ID)
	default:
		msg = fmt.Sprintf("Not run: approval %s was %s.", rec.ID, rec.Status)
	}
	res := text(msg)
	res.IsError = true
	return res
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown address"
	}
	return s
}
