// Package a2a makes fangd an Agent2Agent (A2A) server and client on top of
// the official Go SDK (github.com/a2aproject/a2a-go/v2, spec 1.0, with its
// a2acompat/a2av0 layer for 0.3 peers).
//
// Every task, inbound (a peer asks one of our agents) or outbound (one of
// our agents or an operator asks a peer), is a supervised actor
// "a2a-task/<id>" under the "a2a" supervisor. A task actor owns its
// persisted record, runs the work in a goroutine it cancels on cancel or
// stop, fans its updates out to subscribers (streams, waiting callers) and
// push-notification targets, and passivates once it reaches a terminal
// state: finished tasks live only in the store until retention deletes
// them. The supervisor re-spawns unfinished tasks from the store when it
// starts, so a process restart and a crash restart behave the same.
//
// The SDK supplies the wire: Service implements a2asrv.RequestHandler by
// asking these actors, and the SDK's JSON-RPC handlers (1.0 and 0.3) turn
// that into HTTP. Outbound tasks use the SDK client.
//
// This file lists what the actors accept and answer.
package a2a

import (
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// Messages the "a2a" supervisor accepts. Requests about one task are
// forwarded to its actor while it is live (the actor answers the original
// asker) and answered from the store once it has finished.

// createTask spawns the actor for a new task whose record has not been
// stored yet; the actor stores it before its first update. sub, when set,
// is attached before anything can happen. Answer: *TaskSnapshot (the
// record as created) or an error. For an outbound task with an idempotency
// key the supervisor answers a replay or a conflict instead of creating.
type createTask struct {
	rec *taskRecord
	sub *subscriber
	// idem is the idempotency record to store with an outbound task.
	idem *idemEntry
	// blocking is set for an inbound task whose creator is told of it
	// only by its final state (a blocking send): its first write may be
	// held back (firstWriteDelay).
	blocking bool
}

// idemEntry is an idempotency record and its key (a hash of the header).
type idemEntry struct {
	key string
	rec idemRecord
}

// getTask asks for a task's current state. Answer: *TaskSnapshot or a
// not-found error (also for tasks outside scope).
type getTask struct {
	id    string
	scope scope
}

// cancelTask cancels a task that has not finished: its running work is
// cancelled through its context. Answer: *TaskSnapshot (state canceled),
// errTaskNotCancelable for a finished task, or not found.
type cancelTask struct {
	id    string
	scope scope
}

// subscribeTask attaches sub to a live task. Answer: *TaskSnapshot; for a
// finished task the snapshot comes from the store and sub is closed at once.
type subscribeTask struct {
	id    string
	scope scope
	sub   *subscriber
}

// unsubscribe detaches sub (a stream whose client went away). No answer.
type unsubscribe struct {
	id  string
	sub *subscriber
}

// listTasks pages through tasks, newest first. Answer: *TaskPage.
type listTasks struct {
	filter ListFilter
	scope  scope
}

// setPush adds or replaces a push-notification target of an inbound task.
// Answer: *PushTarget (secrets redacted) or an error.
type setPush struct {
	id     string
	scope  scope
	target PushTarget
}

// getPush, listPush and deletePush read and remove push targets. Answers:
// *PushTarget, []PushTarget, nil.
type getPush struct {
	id, configID string
	scope        scope
}
type listPush struct {
	id    string
	scope scope
}
type deletePush struct {
	id, configID string
	scope        scope
}

// Messages about external agents (the outbound side's registry), also
// owned by the supervisor.

// putAgent stores a discovered external agent (its token, if any, goes to
// the vault first). Answer: *putAgentReply.
type putAgent struct {
	agent ExternalAgent
	token []byte // wiped after use; nil keeps the stored token
}

type putAgentReply struct {
	Agent   ExternalAgent
	Created bool
}

// getAgent, listAgents, deleteAgent: answers *ExternalAgent, []ExternalAgent, nil.
type getAgent struct{ id string }
type listAgents struct{}
type deleteAgent struct{ id string }

// Messages between the supervisor and its children.

// taskFinished tells the supervisor a task reached a terminal state and
// its record is stored: the supervisor forgets the actor and poisons it, so
// requests already forwarded to it are still answered.
type taskFinished struct{ id string }

// sweep (timer) deletes finished tasks older than the retention and
// expired idempotency records; sweepDone reports what a sweep removed.
type sweep struct{}
type sweepDone struct {
	tasks, idem int
	err         error
}

// Messages a task actor sends itself from the goroutine that does its work.

// turnDone carries the result of an inbound task's agent turn.
type turnDone struct {
	gen    int // which run produced it; stale runs are ignored
	result TurnResult
	err    error
}

// remoteEvent is an update an outbound task received from the peer.
type remoteEvent struct {
	gen   int
	event a2a.Event
}

// remoteAttempt reports a failed attempt to reach the peer (the goroutine
// retries transient failures itself and reports each so the record shows
// them).
type remoteAttempt struct {
	gen int
	err error
}

// remoteDone ends an outbound run: err is nil when the peer reported a
// terminal state, otherwise why the task failed.
type remoteDone struct {
	gen int
	err error
}

// TaskSnapshot is an immutable copy of a task's state handed out of an actor.
type TaskSnapshot struct {
	rec taskRecord
}

// TaskPage is one page of listTasks.
type TaskPage struct {
	Tasks     []*TaskSnapshot
	Total     int
	NextToken string
}

// ListFilter narrows listTasks.
type ListFilter struct {
	ContextID string
	State     a2a.TaskState
	AgentID   string // local agent (scope of a per-agent endpoint)
	Direction string
	After     time.Time // only tasks updated after
	PageSize  int
	PageToken string
}
