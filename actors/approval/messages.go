// Package approval runs fangd's human approvals: an agent (or any caller of
// POST /api/approvals) asks before a sensitive action, a person decides
// from the API or from a chat, and the waiting action proceeds or halts.
//
// The root actor "approvals" is the supervisor of every request: it keeps
// the index (pending requests and the most recent decisions), enforces the
// per-agent cap and, for a pending request nobody is waiting on, is the
// request's only live state: a few fields in the index and its place in
// one expiry heap (the record stays in the store). When something needs a
// request — a waiter (a gated tool call, a long poll), a decision, its
// expiry — the supervisor starts its actor approval/<id>, which reads the
// record, persists every change before anyone hears of it, runs the expiry
// timer (measured from requested_at, so a restart does not extend it) and
// answers the waiters; it runs until the request is decided. A second root
// actor, "approvals-totp", owns the TOTP enrolment (secret and recovery
// codes in the vault), replay protection and the failure lockout.
//
// The messages below are what the actors accept and answer; Approvals
// wraps them for callers that are not actors.
package approval

import (
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Statuses a request moves through: pending, then exactly one of the others.
const (
	StatusPending   = "pending"
	StatusApproved  = "approved"
	StatusRejected  = "rejected"
	StatusExpired   = "expired"
	StatusCancelled = "cancelled"
	// StatusModified: a person sent the call back with feedback (LibreFang's
	// modify_and_retry): it does not run, and the agent is told to change
	// it as the feedback (Reason) says and try again.
	StatusModified = "modified"
)

// How a decision was made (decided_via).
const (
	ViaAPI     = "api"
	ViaChannel = "channel"
	ViaPush    = "push"
	// ViaTimeout: the policy decided when nobody answered in time.
	ViaTimeout = "timeout"
	// ViaSystem: fangd cancelled the request (its agent was deleted).
	ViaSystem = "system"
)

// Second factors a decision can carry (second_factor).
const (
	FactorNone     = "none"
	FactorTOTP     = "totp"
	FactorRecovery = "recovery_code"
)

// Approval is one request, as stored and as the API shows it. A record is
// never changed in place once built: a change makes a new one, so the
// supervisor and the request's actor can share the pointer.
type Approval struct {
	ID        string `json:"id"`
	AgentID   string `json:"agent_id"`
	AgentName string `json:"agent_name"`
	Action    string `json:"action"`
	// ToolName repeats Action under LibreFang's name for it.
	ToolName      string          `json:"tool_name"`
	Description   string          `json:"description"`
	ActionSummary string          `json:"action_summary"`
	Payload       json.RawMessage `json:"payload"`
	RiskLevel     string          `json:"risk_level"`
	Status        string          `json:"status"`
	RequestedAt   time.Time       `json:"requested_at"`
	// CreatedAt repeats RequestedAt (LibreFang sends both).
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	TimeoutSecs int        `json:"timeout_secs"`
	DecidedAt   *time.Time `json:"decided_at"`
	DecidedBy   string     `json:"decided_by"`
	DecidedVia  string     `json:"decided_via"`
	// SecondFactor is what the decision was confirmed with.
	SecondFactor string `json:"second_factor"`
	Reason       string `json:"reason"`
	SessionID    string `json:"session_id"`
	// RequestedBy is "agent:<id>" for a gated tool call, or the API
	// caller's identity for POST /api/approvals.
	RequestedBy string `json:"requested_by"`
	Escalations int    `json:"escalations"`
	// SecondFactorRequired says the policy wants a TOTP code to approve
	// this action (it is asked for once an enrolment is confirmed).
	SecondFactorRequired bool `json:"second_factor_required"`
	// Node is, in cluster mode, the node that raised a request another
	// node shows (its agent waits there); empty for this node's own.
	Node string `json:"node,omitempty"`
	// Truncated says, for another node's request, that its description
	// or payload was cut to what the cluster store keeps (docs/cluster.md);
	// the origin shows them whole.
	Truncated bool `json:"truncated,omitempty"`
}

// Pending reports whether the request still waits for a decision.
func (a *Approval) Pending() bool { return a.Status == StatusPending }

// Request is what a new approval is made from.
type Request struct {
	// ID is set by agents, which persist their waiting turn under it
	// before asking; empty for API callers (a new UUID is drawn).
	ID            string
	AgentID       string
	AgentName     string
	Action        string
	Description   string
	ActionSummary string
	Payload       json.RawMessage
	RiskLevel     string // optional; can only raise the policy's level
	SessionID     string
	RequestedBy   string
	SourceIP      string
}

// Decider is who decides, for the approver check and the audit log.
type Decider struct {
	// Identity is the API caller's identity ("api_key", "loopback") or
	// "<channel>:<user>" for a chat user.
	Identity string
	Via      string // ViaAPI, ViaChannel
	SourceIP string
	// chat is the chat a channel decision came from; it hears the outcome
	// as the command's answer, so the announcement skips it.
	chat NotifyTarget
}

// ---- what the "approvals" supervisor accepts ----

// Create makes a new request. Answered with *Approval once it is durable
// and audited; 429 when the agent has too many waiting.
type Create struct{ Req Request }

// Gate makes the request Req.ID unless it exists, then answers with the
// decided *Approval once it is decided (however long that takes). Agents
// send it with RequestFuture and wait with ReenterAfter; sending it again
// after a restart is safe.
type Gate struct{ Req Request }

// Get answers *Approval, or 404.
type Get struct{ ID string }

// List answers *Page: pending requests first (oldest first), then
// decided ones, newest first.
type List struct {
	Status        string // "" for all
	Offset, Limit int
}

// Page is the answer to List.
type Page struct {
	Approvals []*Approval `json:"approvals"`
	Total     int         `json:"total"`
	Offset    int         `json:"offset"`
	Limit     int         `json:"limit"`
}

// Await answers *Approval when the request is decided, or never if it is
// not decided by Until (the caller's future times out and it reads the
// current state instead).
type Await struct {
	ID    string
	Until time.Time
}

// Decide approves or rejects. Answered with the decided *Approval, or:
// 404 unknown, 409 already decided, 410 expired, 403 not an approver,
// 400 totp_required / totp_invalid / totp_replayed, 429 TOTP locked.
type Decide struct {
	ID      string
	Approve bool
	// Modify sends the call back with Reason as feedback (StatusModified)
	// instead of rejecting it; Approve must be false.
	Modify bool
	Code   string // TOTP or recovery code, for approvals that need one
	Reason string
	By     Decider
}

// Cancel withdraws a pending request (its agent was deleted). Answered
// with the cancelled *Approval.
type Cancel struct {
	ID     string
	Reason string
}

// Resolve finds the pending request whose id starts with Prefix (at least
// 8 characters), for chat commands. Answered with the full id.
type Resolve struct{ Prefix string }

// ---- between the supervisor and approval/<id> ----

// announced tells the supervisor a new request's creation is audited, so
// the decisions it held back may go to the request's actor (the audit
// chain then shows the request before its decision).
type announced struct{ id string }

// persisted reports an asynchronous save (env.saveThen) to the actor that
// made it, which continues with then.
type persisted struct {
	then func(c actor.Context, err error)
	err  error
}

// expire is the request's timer firing; gen tells a stale timer apart.
type expire struct{ gen int }

// changed tells the supervisor a request's record changed (escalation).
type changed struct{ rec *Approval }

// decided tells the supervisor a request is decided and durable; the
// supervisor updates its index and poisons the request's actor.
type decided struct{ rec *Approval }

// waiter is a caller waiting for a decision.
type waiter struct {
	pid   *actor.PID
	until time.Time // zero: until decided
}
