package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/neterr"
)

// callLine lets a tool call reach a connected server without a hop
// through its connection actor. The actor stays the owner of the
// connection: after every message it handles it publishes what a call
// needs (the session, the callable tools, the quarantined ones) as an
// immutable callTarget, or nil while it has no session, and callers read
// it without a message. The SDK's ClientSession takes concurrent calls,
// so the call runs in the caller's goroutine.
//
// Why: the mcp-gateway bench's profiles (docs/bench.md) showed each call
// paying two mailbox runs of the actor (the request, then callDone), a
// goroutine started per call, and the stack growth of both (copystack,
// ~7% of the daemon's CPU at one client), for state that changes only
// when the connection does.
//
// What the actor still hears: every failed call (the failure count forces
// a reconnect, as before), and successes only when it is counting
// failures or at most once per lastOKEvery (its LastOK is shown only in
// reports, which it sends when its state changes).
type callLine struct {
	target atomic.Pointer[callTarget]
	// lastOK is when a success was last reported to the actor (unix ns).
	lastOK atomic.Int64
	// failed is set when a failure is reported and cleared by the next
	// success, which is then reported too: the actor's count is of
	// consecutive failures in the order its reports arrive, and a caller's
	// reports arrive in the order it sent them. (The published target's
	// failing flag alone would miss a success that starts before the
	// actor has handled the failure before it.)
	failed atomic.Bool
}

// lastOKEvery is how often, at most, a success is reported to the actor
// when nothing is failing (a variable for a test that must not depend on
// how long a call takes).
var lastOKEvery = time.Second

// callTarget is one published state of a connected server.
type callTarget struct {
	server      string
	gen         uint64
	session     *sdk.ClientSession
	timeout     time.Duration
	tools       map[string]struct{}
	quarantined map[string]struct{}
	failing     bool // the actor counts consecutive failures
	self        *actor.PID
	sys         *actor.ActorSystem
}

func (l *callLine) load() *callTarget {
	if l == nil {
		return nil
	}
	return l.target.Load()
}

// publish records the actor's current state for callers (nil: no session,
// calls go to the actor, which answers why).
func (a *conn) publish(c actor.Context) {
	if a.line == nil {
		return
	}
	if a.session == nil || a.stopping {
		a.line.target.Store(nil)
		return
	}
	t := &callTarget{server: a.spec.Name, gen: a.gen, session: a.session, timeout: a.spec.Timeout(),
		tools: make(map[string]struct{}, len(a.tools)), failing: a.st.ConsecutiveFailures > 0,
		self: a.self, sys: c.ActorSystem()}
	for n := range a.tools {
		t.tools[n] = struct{}{}
	}
	if a.env.opts.QuarantineChanged && len(a.pins.Changed) > 0 {
		t.quarantined = make(map[string]struct{}, len(a.pins.Changed))
		for n := range a.pins.Changed {
			t.quarantined[n] = struct{}{}
		}
	}
	a.line.target.Store(t)
}

// call runs one call in the caller's goroutine.
func (l *callLine) call(ctx context.Context, t *callTarget, tool string, args json.RawMessage) (*sdk.CallToolResult, error) {
	if _, ok := t.tools[tool]; !ok {
		return nil, unknownTool(t.server, tool)
	}
	if _, q := t.quarantined[tool]; q {
		return nil, quarantined(t.server, tool)
	}
	res, err, failure := callSession(ctx, t.session, t.server, tool, args, t.timeout)
	report := failure != nil
	if report {
		l.failed.Store(true)
	} else {
		now := time.Now().UnixNano()
		if l.failed.Swap(false) || t.failing || now-l.lastOK.Load() >= int64(lastOKEvery) {
			l.lastOK.Store(now)
			report = true
		}
	}
	if report {
		t.sys.Root.Send(t.self, &callDone{gen: t.gen, failure: failure})
	}
	return res, err
}

func unknownTool(server, tool string) error {
	return kernel.Errorf(kernel.KindNotFound, "unknown_tool", "mcp server %s has no tool %q", server, tool)
}

func quarantined(server, tool string) error {
	return kernel.Errorf(kernel.KindForbidden, "tool_quarantined",
		"tool %s of mcp server %s changed since it was pinned and is quarantined until accepted (POST /api/mcp/servers/%s/tools/accept)",
		tool, server, server)
}

// callSession makes one call on a session and classifies how it ended:
// err is what the caller gets, failure what counts against the server's
// health (a transport failure or a timeout; nil when the server answered,
// even with an error, or when the caller gave up).
func callSession(ctx context.Context, session *sdk.ClientSession, server, tool string, args json.RawMessage, timeout time.Duration) (res *sdk.CallToolResult, err, failure error) {
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err = session.CallTool(c, &sdk.CallToolParams{Name: tool, Arguments: args})
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		failure = fmt.Errorf("tool call timed out after %s", timeout)
		err = kernel.Errorf(kernel.KindUpstream, "mcp_timeout", "mcp server %s did not answer %s within %s", server, tool, timeout)
	case ctx.Err() != nil:
		// The caller went away; says nothing about the server.
	default:
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) {
			failure = err
		}
		if neterr.Network(err) {
			err = neterr.Classify(err, fmt.Sprintf("mcp server %s: %s", server, tool))
			break
		}
		err = &kernel.Error{Kind: kernel.KindUpstream, Code: "mcp_call_failed",
			Msg: fmt.Sprintf("mcp server %s: %s: %v", server, tool, err)}
	}
	return res, err, failure
}
