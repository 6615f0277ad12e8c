// Package webhook is fangd's durable outbound webhook engine. The root
// actor "webhooks" owns the subscriptions (both kinds: event webhooks and
// outbound webhooks) and watches the comms bus; each endpoint is a child
// actor "webhooks/webhook/<id>" that owns its outbox in Badger and
// delivers it in order with Standard Webhooks signatures, retries with
// jittered backoff, dead letters and replay. The recipe is in
// docs/webhooks.md.
package webhook

import (
	"context"
	"encoding/json"
	"time"
)

// --- accepted by the supervisor ("webhooks") ---

// create persists a new endpoint and starts its actor.
type create struct {
	ep      Endpoint
	secret  []byte
	headers map[string]string
	latest  uint64 // bus id at creation: history before it is not sent
}

// update applies a validated patch to an endpoint.
type update struct {
	id, kind string
	patch    Patch
	latest   uint64
}

// remove deletes an endpoint, its outbox, dead letters and history.
type remove struct{ id, kind string }

// get returns one endpoint's view.
type get struct{ id, kind string }

// list returns all endpoints of a kind.
type list struct{ kind string }

// forward asks for an endpoint's actor, to talk to it directly.
type forward struct {
	id  string
	msg any
}

// stats is sent by an endpoint actor whenever its counts change.
type stats struct {
	id              string
	pending, dead   int
	enabled         bool
	disabledReason  string
	consecutiveDead int
}

// --- accepted by an endpoint actor ("webhooks/webhook/<id>") ---

// deliver hands an endpoint the committed events that match it.
type deliver struct{ events []event }

// event is what an endpoint needs of a bus record.
type event struct {
	id   uint64
	typ  string
	json []byte
}

// reconfigure replaces the endpoint's configuration (and secrets when
// set). latest is the bus id to resume from if the endpoint is re-enabled.
type reconfigure struct {
	ep         Endpoint
	secret     []byte
	headers    map[string]string
	setSecret  bool
	setHeaders bool
	latest     uint64
}

// Deliveries asks for the most recent attempts, newest first.
type Deliveries struct{ Limit int }

// DeadLetters asks for the dead-letter list, newest first.
type DeadLetters struct{ Limit int }

// Replay moves dead letters (all, or those whose message ids are listed)
// back to the outbox tail.
type Replay struct{ IDs []string }

// ReplayResult answers Replay.
type ReplayResult struct {
	Replayed int      `json:"replayed"`
	Missing  []string `json:"missing,omitempty"`
}

// Test sends a signed test event now, outside the queue.
type Test struct{}

// TestResult answers Test.
type TestResult struct {
	Status         string `json:"status"`
	ResponseStatus int    `json:"response_status"`
	LatencyMS      int64  `json:"latency_ms"`
	WebhookID      string `json:"webhook_id"`
	MessageID      string `json:"message_id"`
}

// Attempt is one delivery attempt, as listed by GET .../deliveries.
type Attempt struct {
	ID            uint64 `json:"id"`
	MessageID     string `json:"message_id"`
	EventID       uint64 `json:"event_id,omitempty"`
	EventType     string `json:"event_type"`
	Attempt       int    `json:"attempt"`
	StatusCode    int    `json:"status_code"`
	LatencyMS     int64  `json:"latency_ms"`
	Outcome       string `json:"outcome"` // delivered, retrying, dead_lettered, disabled
	Error         string `json:"error,omitempty"`
	At            string `json:"at"`
	NextAttemptAt string `json:"next_attempt_at,omitempty"`
}

// DeadLetter is a message that exhausted its retries.
type DeadLetter struct {
	MessageID  string          `json:"id"`
	EventID    uint64          `json:"event_id,omitempty"`
	EventType  string          `json:"event_type"`
	Attempts   int             `json:"attempts"`
	LastStatus int             `json:"last_status"`
	LastError  string          `json:"last_error"`
	DeadAt     string          `json:"dead_at"`
	Payload    json.RawMessage `json:"payload"`
}

// message is one outbox entry, as stored. Body is exactly the bytes that
// are signed and sent; MsgID is the webhook-id, stable across retries.
type message struct {
	Seq     uint64          `json:"seq"`
	MsgID   string          `json:"msg_id"`
	EventID uint64          `json:"event_id,omitempty"`
	Type    string          `json:"type"`
	Body    json.RawMessage `json:"body"`
	// Raw, when set, is sent instead of Body, with Headers added to the
	// endpoint's (a Web Push message: encrypted bytes, its own
	// Content-Encoding and VAPID authorization).
	Raw        []byte            `json:"raw,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Attempts   int               `json:"attempts"`
	NextAt     time.Time         `json:"next_at"`
	LastStatus int               `json:"last_status,omitempty"`
	LastError  string            `json:"last_error,omitempty"`
	Enqueued   time.Time         `json:"enqueued"`
}

// meta is an endpoint's bookkeeping, stored beside its outbox.
type meta struct {
	// Cursor is the last bus event id considered for this endpoint.
	Cursor          uint64 `json:"cursor"`
	NextSeq         uint64 `json:"next_seq"`
	NextAttempt     uint64 `json:"next_attempt"`
	ConsecutiveDead int    `json:"consecutive_dead"`
}

// attempted is sent by a delivery goroutine with its outcome.
type attempted struct {
	gen        context.Context
	msg        *message
	attempt    Attempt
	outcome    outcome
	err        error
	retryAfter time.Duration
}

type tick struct{}
