// Package channel connects chat platforms to agents. Each configured bot
// account is a supervised actor, channel/<name>, under the root actor
// "channels": it runs its platform Adapter in a goroutine it owns,
// reconnects with the kernel's capped exponential backoff, watches for a
// link that has gone quiet, routes inbound messages to the bound agent and
// delivers replies through a durable per-channel outbox.
//
// Adapters live one per package under actors/channel/<platform>/ and are
// listed in actors/channel/adapters; README.md explains how to add one.
package channel

import (
	"context"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// --- what the "channels" supervisor accepts (Service wraps these) ---

// configure creates or changes a channel. The Service has already
// validated the fields, resolved the agent and built the adapter once.
type configure struct {
	rec     record
	secrets map[string]string // the full set after merging, in memory only
	account string            // account fingerprint ("" when none)
}

type configureResult struct {
	activated bool
	created   bool
	err       error
}

// remove stops a channel and deletes its configuration, secrets and queues.
type remove struct {
	name string
}

// listChannels asks for every configured channel's record and status.
type listChannels struct{}

// getChannel asks for one configured channel (ok false when unknown).
type getChannel struct {
	name string
}

type snapshotResult struct {
	snap snapshot
	ok   bool
}

// reload reconciles the channels defined in config.toml with the running
// ones. Each entry is a fully validated desired configuration.
type reload struct {
	desired []desiredChannel
}

type desiredChannel struct {
	rec     record
	secrets map[string]string
	account string
}

// ReloadResult is the answer to POST /api/channels/reload.
type ReloadResult struct {
	Status    string   `json:"status"`
	Started   []string `json:"started"`
	Stopped   []string `json:"stopped"`
	Restarted []string `json:"restarted"`
	Unchanged []string `json:"unchanged"`
	Errors    []string `json:"errors,omitempty"`
}

// statusChanged is sent by a channel actor to the supervisor whenever its
// status changes, so listing never has to ask a thousand actors.
type statusChanged struct {
	name   string
	status Status
}

// --- what a channel actor accepts ---

// reconfigure tells a running channel its record changed: reload it and
// restart the adapter.
type reconfigure struct{}

// sendRequest queues text for chatID in the durable outbox (comms/send).
// The answer comes once the message is on disk.
type sendRequest struct {
	chatID, text, from string
	// replyTo and threadID place the message under an inbound one (the
	// answer to a chat command); empty for a fresh message.
	replyTo, threadID string
	reply             kernel.Replier // set from the asker on receipt
}

type sendResult struct {
	ids []string
	err error
}

// testRequest sends a real test message to chatID, or probes the platform
// identity when chatID is empty.
type testRequest struct {
	chatID string
	reply  kernel.Replier // set from the asker on receipt
}

type testResult struct {
	res *TestResult
	err error
}

// TestResult is the answer to POST /api/channels/{name}/test.
type TestResult struct {
	Status    string    `json:"status"`
	Message   string    `json:"message"`
	Channel   string    `json:"channel"`
	ChatID    string    `json:"chat_id,omitempty"`
	MessageID string    `json:"message_id,omitempty"`
	Identity  *Identity `json:"identity,omitempty"`
}

// webhookCall is a platform callback for this channel.
type webhookCall struct {
	req   *WebhookRequest
	reply kernel.Replier // set from the asker on receipt
}

type webhookResult struct {
	resp *WebhookResponse
	err  error
}

// --- sent by a channel actor's own goroutines and timers ---

type connected struct {
	gen int
	id  Identity
}

type runEnded struct {
	gen int
	err error
}

type alive struct{ gen int }

// degraded is Host.Degraded: msg is what is not working ("" when it works
// again).
type degraded struct {
	gen int
	msg string
}

// inbound carries messages from Run (done answers once they are durable)
// or from a webhook.
type inbound struct {
	gen    int
	msgs   []Inbound
	cursor *Cursor // saved with msgs, when set
	done   chan error
}

// inboxFailed says n accepted messages could not be stored (they were not
// acknowledged, so the platform sends them again).
// inboxStored says accepted inbound messages are on disk.
type inboxStored struct{ items []*inItem }

type inboxFailed struct {
	items []*inItem
	err   error
}

type reconnectNow struct{ gen int }

type watchdogTick struct{}

type probeDone struct {
	gen int
	err error
}

// turnDone: an agent turn finished; out are the reply chunks now in the
// outbox (nil on failure or no reply).
type turnDone struct {
	item  *inItem
	out   []*outItem
	retry bool // transient failure: run the turn again after a pause
	err   error
}

// enqueued: messages were written to the outbox by a goroutine.
type enqueued struct{ items []*outItem }

type sendDone struct {
	item      *outItem
	messageID string
	err       error
}

type kick struct{}

// --- the domain's collaborators, small so tests can fake them ---

// Agents is the agent runtime as channels see it. Errors are kernel domain
// errors (NotFound for an unknown agent; Unavailable/Upstream are retried).
type Agents interface {
	// Resolve finds an agent by id or name and returns its id and name.
	Resolve(ctx context.Context, ref string) (id, name string, err error)
	// Turn runs one turn of agentID on message within the conversation
	// session and returns the agent's answer.
	Turn(ctx context.Context, agentID, session, message string) (string, error)
}

// Commands handles chat commands meant for fangd rather than for the
// agent (/approve and /reject). A matching message skips the agent's
// queue, so a command is answered even while the chat's turn waits (for
// the very approval the command decides).
type Commands interface {
	// Match reports whether text is a command; it runs on every inbound
	// message, in the channel actor, so it must be cheap and not block.
	Match(text string) bool
	// Handle runs the command (in a goroutine) and returns the answer for
	// the same chat ("" for none).
	Handle(ctx context.Context, channel string, m Inbound) string
}

// Bus is the comms event bus as channels see it. Publish must not block:
// events are a record of what happened, and a message's path to its agent
// and back does not wait for them to be durable (the inbox and outbox
// are what keeps a message safe).
type Bus interface {
	Publish(ev Event)
}

// Event is one event for the bus. Source and Target use comms addresses
// ("channel:<name>:<chat_id>", "agent:<id>").
type Event struct {
	Type   string
	Source string
	Target string
	Detail any
}

// Event types channels publish (registered in the comms bus's type table).
const (
	EventReceived = "channel.message.received"
	EventSent     = "channel.message.sent"
)

// Status is a channel's live state.
type Status struct {
	State     string `json:"status"`
	LastError string `json:"last_error"`
	// LastErrorCode is the network failure's code (host_not_found,
	// connection_refused, upstream_timeout, tls_failed, url_not_allowed
	// ...) when the last error was one.
	LastErrorCode  string     `json:"last_error_code,omitempty"`
	ConnectedSince *time.Time `json:"connected_since"`
	LastMessageAt  *time.Time `json:"last_message_at"`
	NextRetryAt    *time.Time `json:"next_retry_at,omitempty"`
	MessagesIn     uint64     `json:"messages_in"`
	MessagesOut    uint64     `json:"messages_out"`
	MessagesFailed uint64     `json:"messages_failed"`
	Filtered       uint64     `json:"messages_filtered"`
	Restarts       uint64     `json:"restarts"`
	OutboxPending  int        `json:"outbox_pending"`
	InboxPending   int        `json:"inbox_pending"`
	Identity       *Identity  `json:"identity,omitempty"`
	// Node is the cluster node hosting the channel (cluster mode only;
	// "" while no node holds it).
	Node string `json:"node,omitempty"`
}

// States a channel can be in.
const (
	StateConnected = "connected"
	// StateDegraded is connected with part of the configuration not
	// working (Host.Degraded); last_error says what.
	StateDegraded     = "degraded"
	StateConnecting   = "connecting"
	StateBackoff      = "backoff"
	StateError        = "error"
	StateStopped      = "stopped"
	StateUnconfigured = "unconfigured"
	StateUnsupported  = "unsupported"
)
