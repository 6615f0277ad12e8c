package a2a

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The A2A actors need three things from the rest of fangd. Each is a small
// interface so that the package can be tested with fakes and wired to the
// real subsystem in cmd/fangd.

// Agent is a local agent as the A2A server shows it.
type Agent struct {
	ID          string
	Name        string
	Description string
	Tags        []string
	Tools       []string
	// Available is false for an agent that exists but cannot take work
	// (suspended, terminated); tasks for it are rejected.
	Available bool
}

// TurnRequest is one agent turn.
type TurnRequest struct {
	AgentID string
	// SessionID keeps the conversation: every task of one A2A context
	// shares one agent session ("a2a:<contextId>").
	SessionID string
	Text      string
	// Caller names who asked (for the agent's audit trail).
	Caller string
}

// TurnResult is what the agent answered.
type TurnResult struct {
	Text         string
	Model        string
	InputTokens  int64
	OutputTokens int64
	CostUSD      float64
}

// Agents is the agent runtime as the A2A server needs it.
type Agents interface {
	// Resolve finds a local agent by id or name; a kernel not-found error
	// when there is none.
	Resolve(ctx context.Context, idOrName string) (Agent, error)
	// List returns every local agent.
	List(ctx context.Context) ([]Agent, error)
	// Turn runs one turn of the agent. Cancelling ctx must stop the turn,
	// down to the provider call, and make Turn return.
	Turn(ctx context.Context, req TurnRequest) (TurnResult, error)
}

// Guard is the outbound URL policy (SSRF protection). transport/ssrf.Guard
// satisfies it.
type Guard interface {
	// Check parses and resolves a URL now and refuses it if it points where
	// fangd must not go; the error's text is safe to show.
	Check(ctx context.Context, raw string) (*url.URL, error)
	// Client returns an HTTP client that checks every dial again, follows
	// no redirect and gives up after timeout.
	Client(timeout time.Duration) *http.Client
}

// Events publishes what the A2A side does on the comms bus, as observed
// routes (they become edges of the topology). It must not block.
type Events interface {
	Route(typ, source, target, edge string, detail map[string]string)
}

// PushDelivery is one task update for a client's push-notification URL.
type PushDelivery struct {
	// ID is stable for this update (retries reuse it) so receivers can
	// deduplicate.
	ID string
	// Endpoint groups deliveries that must arrive in order (one push
	// target of one task).
	Endpoint string
	URL      string
	// Type names the update ("a2a.task.status", "a2a.task.artifact").
	Type string
	// Headers are the A2A authentication the client asked for
	// (Authorization, A2A-Notification-Token).
	Headers map[string]string
	// Body is the StreamResponse JSON the A2A spec says to POST.
	Body []byte
}

// Pusher hands push notifications to the webhook delivery engine, which
// signs, retries and SSRF-checks them. Push returns once the delivery is
// durably queued.
type Pusher interface {
	Push(ctx context.Context, d PushDelivery) error
	// Forget releases what the engine keeps for one push target (its
	// queue, its endpoint) once the target is deleted or its task swept.
	Forget(ctx context.Context, endpoint string) error
}
