package a2a

import (
	"slices"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// Task directions.
const (
	Inbound  = "inbound"  // a peer asked one of our agents
	Outbound = "outbound" // we asked a peer
)

// Store collections (keys are "<collection>/<id>").
const (
	tasksCollection  = "a2a_tasks"
	agentsCollection = "a2a_agents"
	idemCollection   = "a2a_idem"
)

// taskRecord is the persisted state of one task. Messages and artifacts
// use the SDK's types, so the record is also what the protocol serves.
type taskRecord struct {
	ID        string        `json:"id"`
	Direction string        `json:"direction"`
	AgentID   string        `json:"agent_id"` // local agent (inbound) or external agent (outbound)
	AgentName string        `json:"agent_name,omitempty"`
	ContextID string        `json:"context_id"`
	State     a2a.TaskState `json:"state"`
	// Reason says why a task failed, was rejected or canceled.
	Reason    string          `json:"reason,omitempty"`
	History   []*a2a.Message  `json:"history"`
	Artifacts []*a2a.Artifact `json:"artifacts,omitempty"`
	// Caller is who created the task: "api_key", "loopback" or "peer:<name>".
	Caller    string    `json:"caller,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Usage     *Usage    `json:"usage,omitempty"`

	// Inbound only: push-notification targets (their secrets are in the
	// vault).
	Push []PushTarget `json:"push,omitempty"`

	// Outbound only.
	RemoteTaskID    string `json:"remote_task_id,omitempty"`
	RemoteContextID string `json:"remote_context_id,omitempty"`
	Attempts        int    `json:"attempts,omitempty"`
	LastError       string `json:"last_error,omitempty"`
	Streaming       bool   `json:"streaming,omitempty"`
}

// Usage is what an inbound task's turn cost.
type Usage struct {
	Model        string  `json:"model,omitempty"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
}

// PushTarget is one push-notification configuration of a task as shown
// to callers: the token and credentials are kept in the vault and only
// their presence is shown.
type PushTarget struct {
	ID         string `json:"id"`
	URL        string `json:"url"`
	AuthScheme string `json:"auth_scheme,omitempty"`
	HasToken   bool   `json:"has_token"`
	HasAuth    bool   `json:"has_credentials"`
	// Token and Credentials travel only from a request to the vault.
	Token       string `json:"-"`
	Credentials string `json:"-"`
}

// idemRecord remembers an outbound send made with an Idempotency-Key, so
// that the same key with the same body replays the first answer and with
// another body is a conflict.
type idemRecord struct {
	BodyHash  string        `json:"body_hash"`
	TaskID    string        `json:"task_id"`
	AgentID   string        `json:"agent_id"`
	State     a2a.TaskState `json:"state"`
	CreatedAt time.Time     `json:"created_at"`
}

// idemReplay is the supervisor's answer to a createTask whose idempotency
// key was already used with the same body.
type idemReplay struct {
	TaskID  string
	AgentID string
	State   a2a.TaskState
}

// ack is the answer to a request that succeeded with nothing to say.
type ack struct{}

// clone copies the record deeply enough that the copy can leave the actor:
// slices are copied, messages and artifacts are never mutated once stored.
func (r *taskRecord) clone() taskRecord {
	c := *r
	c.History = slices.Clone(r.History)
	c.Artifacts = slices.Clone(r.Artifacts)
	c.Push = slices.Clone(r.Push)
	if r.Usage != nil {
		u := *r.Usage
		c.Usage = &u
	}
	return c
}

// snapshot returns an immutable copy.
func (r *taskRecord) snapshot() *TaskSnapshot { return &TaskSnapshot{rec: r.clone()} }

// ID is the task id.
func (s *TaskSnapshot) ID() string { return s.rec.ID }

// State is the task's A2A state.
func (s *TaskSnapshot) State() a2a.TaskState { return s.rec.State }

// Direction is Inbound or Outbound.
func (s *TaskSnapshot) Direction() string { return s.rec.Direction }

// Terminal reports whether the task has finished.
func (s *TaskSnapshot) Terminal() bool { return s.rec.State.Terminal() }

// AgentID is the local agent (inbound) or external agent (outbound).
func (s *TaskSnapshot) AgentID() string { return s.rec.AgentID }

// A2A renders the task as the protocol's Task, keeping the last
// historyLength messages when it is set.
func (s *TaskSnapshot) A2A(historyLength *int) *a2a.Task {
	r := &s.rec
	ts := r.UpdatedAt
	t := &a2a.Task{
		ID:        a2a.TaskID(r.ID),
		ContextID: r.ContextID,
		History:   slices.Clone(r.History),
		Artifacts: slices.Clone(r.Artifacts),
		Status:    a2a.TaskStatus{State: r.State, Timestamp: &ts},
	}
	if r.Direction == Outbound && r.RemoteContextID != "" {
		t.ContextID = r.RemoteContextID
	}
	if r.Reason != "" && (r.State == a2a.TaskStateFailed || r.State == a2a.TaskStateRejected || r.State == a2a.TaskStateCanceled) {
		t.Status.Message = statusMessage(r, r.Reason)
	}
	if historyLength != nil {
		switch n := *historyLength; {
		case n <= 0:
			t.History = []*a2a.Message{}
		case n < len(t.History):
			t.History = t.History[len(t.History)-n:]
		}
	}
	return t
}

// statusMessage is the agent-role message that explains a state.
func statusMessage(r *taskRecord, text string) *a2a.Message {
	return &a2a.Message{
		ID:        "status-" + r.ID,
		Role:      a2a.MessageRoleAgent,
		TaskID:    a2a.TaskID(r.ID),
		ContextID: r.ContextID,
		Parts:     a2a.ContentParts{a2a.NewTextPart(text)},
	}
}

// result is the last message from the agent (or peer), or nil.
func (r *taskRecord) result() *a2a.Message {
	for i := len(r.History) - 1; i >= 0; i-- {
		if r.History[i].Role == a2a.MessageRoleAgent {
			return r.History[i]
		}
	}
	// A peer may answer with artifacts only.
	if len(r.Artifacts) > 0 {
		var parts a2a.ContentParts
		for _, a := range r.Artifacts {
			parts = append(parts, a.Parts...)
		}
		return &a2a.Message{Role: a2a.MessageRoleAgent, Parts: parts}
	}
	return nil
}

// scope limits what a caller may see: a per-agent endpoint sees only that
// agent's tasks, and a peer authenticated by its own token sees only the
// tasks it created. The API key and loopback callers see everything.
type scope struct {
	direction string // the protocol sees inbound tasks, the management API outbound ones
	agentID   string
	caller    string
	admin     bool
}

func (sc scope) allows(r *taskRecord) bool {
	if sc.direction != "" && r.Direction != sc.direction {
		return false
	}
	if sc.agentID != "" && r.AgentID != sc.agentID {
		return false
	}
	return sc.admin || r.Caller == sc.caller
}

// update is one step of a task as a subscriber sees it: the protocol event
// and the whole task after it.
type update struct {
	Event a2a.Event
	Task  *a2a.Task
	// durable, when set, is the write this update is ahead of: a reader
	// shows the update to nobody before it is done (fence.wait).
	durable *fence
}

// subscriberBuffer is how many updates a subscriber may fall behind before
// it is cut off. A task produces a handful, so only a stuck client hits it.
const subscriberBuffer = 32

// subscriber receives a task's updates. The task actor owns the channel and
// closes it when the task finishes or the subscriber falls behind.
type subscriber struct {
	ch chan update
}

func newSubscriber() *subscriber { return &subscriber{ch: make(chan update, subscriberBuffer)} }

// C is the channel of updates; it is closed after the last one.
func (s *subscriber) C() <-chan update { return s.ch }
