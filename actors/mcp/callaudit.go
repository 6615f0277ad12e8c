package mcp

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fangd/fangd/actors/audit"
)

// HeaderAuditToken is set by the HTTP layer on a POST /mcp that carries one
// tools/call (the client's own value is removed first, like HeaderActor):
// the exposer hands that call's tool_invoked entry to the request through
// CallAudits instead of committing it on its own.
const HeaderAuditToken = "X-Fangd-Internal-Audit-Token"

// CallAudits carries the tool_invoked entry of a POST /mcp tools/call from
// the exposer to the HTTP layer, which appends it together with the
// request's own api_request entry ("POST /mcp -> 200") in one synced
// commit (audit.Log.AppendAll) before the answer goes out. Committed one
// after the other, the two entries made every call wait for two group
// commits in series: the profiles of the mcp-gateway bench put them at
// ~63% of a call's wait at one client (docs/bench.md). The chain is the
// same either way: the same two entries, in the same order.
//
// The hand-over only happens while the request is still open (between
// Begin and End). A call that ends after its request was closed (the
// client went away) is committed by the exposer itself, as is every call
// without a token.
type CallAudits struct {
	next    atomic.Uint64
	pending sync.Map // token -> *callSlot
}

type callSlot struct {
	mu     sync.Mutex
	closed bool
	events []audit.Event
}

// Begin opens a token for one request.
func (c *CallAudits) Begin() string {
	t := strconv.FormatUint(c.next.Add(1), 36)
	c.pending.Store(t, &callSlot{})
	return t
}

// End closes the token and returns the entries handed over for it, in
// the order they were made. The caller must make them durable before it
// answers: the exposer left that to it.
func (c *CallAudits) End(token string) []audit.Event {
	v, ok := c.pending.LoadAndDelete(token)
	if !ok {
		return nil
	}
	s := v.(*callSlot)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.events
}

// handOver gives ev to the open request of token. False (no token, or its
// request already ended): the caller must commit ev itself.
func (c *CallAudits) handOver(token string, ev audit.Event) bool {
	if token == "" {
		return false
	}
	v, ok := c.pending.Load(token)
	if !ok {
		return false
	}
	s := v.(*callSlot)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.events = append(s.events, ev)
	return true
}
