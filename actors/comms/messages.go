// Package comms is fangd's event bus and inter-agent messaging layer.
//
// The bus (root actor "comms") gives every event the daemon produces a
// monotonic id, keeps the last N in a persisted bounded log, and fans
// committed events out to SSE subscribers (bounded buffers; a slow one is
// cut, the bus never waits) and to watching actors (the webhook engine).
// An event becomes visible to anyone only once it is durable, so an id a
// client has seen is never reused after a crash.
//
// The router (root actor "comms-router") routes messages to agents and
// channels, dispatches tasks, records the routes it observes (the
// topology's edges) and runs the loop guard.
package comms

import (
	"encoding/json"

	"github.com/asynkron/protoactor-go/actor"
)

// Event is one thing that happened, as stored, served and streamed.
type Event struct {
	ID        uint64          `json:"id"`
	Timestamp string          `json:"timestamp"` // RFC 3339, UTC
	Type      string          `json:"type"`      // dot-separated, see types.go
	Source    string          `json:"source"`    // "agent:<id>", "channel:<name>:<chat>", "webhook:<id>", "system"...
	Target    string          `json:"target"`
	Detail    json.RawMessage `json:"detail"`
}

// Record is a committed event as the bus holds it: the stored JSON plus
// the fields it filters and counts on.
type Record struct {
	ID     uint64
	Type   string
	Source string
	Target string
	// Edge is the route kind for message.routed events ("agent_message",
	// "channel_message", "task", "hook"), empty otherwise.
	Edge string
	JSON []byte
}

// --- what the bus accepts ---

// publish records one event. done, when set, is answered once the event is
// durable (with its id) or failed.
type publish struct {
	typ, source, target, edge string
	detail                    json.RawMessage
	done                      chan publishResult
}

type publishResult struct {
	id  uint64
	err error
}

// Query asks for committed events, newest first. Type is an exact type, a
// prefix "agent.*", or "" / "*" for all; only events with id > SinceID.
type Query struct {
	Limit   int
	Type    string
	SinceID uint64
	// Target, when set, keeps only events with exactly this target
	// ("agent:<id>").
	Target string
}

// QueryReply answers Query. Last is the newest committed id.
type QueryReply struct {
	Events []*Record
	// Matched counts every held event that passes the filter (not only
	// the Limit returned).
	Matched int
	Last    uint64
	Oldest  uint64
}

// Subscribe opens a live subscription. With Resume set, events with id >
// After that the log still holds are returned for replay first; Gap
// reports what the log no longer holds. Key identifies the caller for the
// per-key stream cap.
type Subscribe struct {
	Resume bool
	After  uint64
	Type   string
	Key    string
	Buffer int
}

// SubscribeReply answers Subscribe (or the bus answers a rate-limited
// *kernel.Error when Key has too many streams).
type SubscribeReply struct {
	Sub    *Subscription
	Replay []*Record
	Gap    *Gap
}

// Gap is what a resuming subscriber missed for good: its resync event.
type Gap struct {
	Reason          string `json:"reason"` // "trimmed": older than the log; "unknown_id": ahead of the log
	RequestedAfter  uint64 `json:"requested_after"`
	OldestAvailable uint64 `json:"oldest_available"`
	Latest          uint64 `json:"latest"`
	Missed          uint64 `json:"missed"`
}

type unsubscribe struct{ sub *Subscription }

// Watch makes the bus send every committed batch (*Batch) to PID, in
// order. Watchers are actors: their mailboxes never block the bus.
type Watch struct{ PID *actor.PID }

// Watching confirms a Watch: events up to Latest are in the stored log,
// later ones will arrive as batches.
type Watching struct{ Latest uint64 }

// Batch is a run of committed events sent to watchers.
type Batch struct{ Records []*Record }

// EdgesQuery asks for the routes observed in the retained log.
type EdgesQuery struct{}

// Edge is one observed route.
type Edge struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Kind     string `json:"kind"`
	Messages int    `json:"messages"`
}

// EdgesReply answers EdgesQuery.
type EdgesReply struct{ Edges []Edge }

// --- what the router accepts (see router.go) ---

// SendMessage routes Content to To ("agent:<id|name>" or
// "channel:<name>:<chat_id>") on behalf of From. The router answers on
// Reply with a *SendResult or an error.
type SendMessage struct {
	From, To, Content string
	Reply             chan SendOutcome
}

// SendOutcome is the router's answer to SendMessage.
type SendOutcome struct {
	Result *SendResult
	Err    error
}

// SendResult is what POST /api/comms/send returns.
type SendResult struct {
	MessageID string  `json:"message_id"`
	Status    string  `json:"status"` // "delivered" (agent answered), "queued" (channel)
	To        string  `json:"to"`
	AgentID   string  `json:"agent_id,omitempty"`
	Response  *string `json:"response,omitempty"`
	// Tokens and cost are what this node spent on the send, always
	// present as in POST /api/agents/{id}/message's answer (a client
	// reading cost_usd gets 0, not nothing, for a free turn): 0 for a
	// channel send, which runs no model, and for a "peer:" send, whose
	// turn the other node meters.
	InputTokens  int     `json:"input_tokens"`
	OutputTokens int     `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	// Node is the node that answered a "peer:" message.
	Node *RemoteNode `json:"node,omitempty"`
}

// DispatchTask assigns a task to an agent and runs it. The router answers
// on Reply with the task as created (status "running").
type DispatchTask struct {
	Title, Description, AssignTo string
	Tags                         []string
	Reply                        chan TaskOutcome
}

// TaskOutcome is the router's answer to DispatchTask and GetTask.
type TaskOutcome struct {
	Task *Task
	Err  error
}

// GetTask asks for one task by id.
type GetTask struct {
	ID    string
	Reply chan TaskOutcome
}

// Wake is an inbound wake hook: publish hook.wake and, when an agent is
// named, wake it now (run a turn) or at its next routed turn.
type Wake struct {
	Text, Mode, Agent, Via string
	Reply                  chan WakeOutcome
}

// WakeOutcome answers Wake.
type WakeOutcome struct {
	Result *WakeResult
	Err    error
}

// WakeResult is what POST /api/hooks/wake returns.
type WakeResult struct {
	Status  string `json:"status"`
	Mode    string `json:"mode"`
	EventID uint64 `json:"event_id"`
	AgentID string `json:"agent_id,omitempty"`
}

// resolved, taskReady, turnDone are sent by the router's own goroutines.
type resolved struct {
	req    *SendMessage
	target target
	agent  *Agent
	err    error
}
