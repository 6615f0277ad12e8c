package mcp

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// HeaderAuditToken is set by the HTTP layer on a POST /mcp that carries one
// tools/call (the client's own value is removed first, like HeaderActor):
// the exposer reports through CallAudits that it made that call's durable
// tool_invoked entry.
const HeaderAuditToken = "X-Fangd-Internal-Audit-Token"

// CallAudits tells the HTTP layer whether the exposer durably audited the
// tools/call of a request. When it did, the request's own api_request entry
// ("POST /mcp -> 200") says nothing the tool_invoked entry does not (the
// same actor and source address, plus the tool, outcome and duration), and
// writing it would make every call wait for a second synced commit in
// series: the profiles of the mcp-gateway bench put the two appends at
// ~63% of a call's wait (docs/bench.md). Anything the exposer did not
// confirm keeps the api_request entry.
type CallAudits struct {
	next    atomic.Uint64
	pending sync.Map // token -> *atomic.Bool
}

// Begin opens a token for one request.
func (c *CallAudits) Begin() string {
	t := strconv.FormatUint(c.next.Add(1), 36)
	c.pending.Store(t, new(atomic.Bool))
	return t
}

// End closes the token and says whether its call's entry is durable.
func (c *CallAudits) End(token string) bool {
	v, ok := c.pending.LoadAndDelete(token)
	return ok && v.(*atomic.Bool).Load()
}

// audited records that the call of token has its durable entry. Unknown
// tokens (none set, or already ended) are ignored.
func (c *CallAudits) audited(token string) {
	if token == "" {
		return
	}
	if v, ok := c.pending.Load(token); ok {
		v.(*atomic.Bool).Store(true)
	}
}
