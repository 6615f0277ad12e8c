package channel

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/transport/httpretry"
)

// Adapter is one chat platform, seen from the runtime. A channel actor
// builds one Adapter per configuration (through the Builder registered for
// its platform), runs it in a goroutine it owns, and cancels it on stop.
//
// Run, Send, Probe and Webhook may be called concurrently with each other:
// an adapter guards whatever connection state they share.
type Adapter interface {
	// Run connects to the platform, calls host.Connected once the link is
	// up and authenticated, then hands every inbound message to
	// host.Deliver until ctx is cancelled (return nil or ctx.Err()) or the
	// link fails (return the error, classified with Permanent or
	// RetryAfter; an unclassified error is transient and the runtime
	// reconnects with capped exponential backoff). Run must not retry on
	// its own: reconnecting is the runtime's job, so that backoff and
	// status stay in one place.
	Run(ctx context.Context, host Host) error

	// Send delivers one message (already split to MaxMessageLength) and
	// returns the platform's id for it. Classify failures: Permanent for
	// bad credentials (the channel goes to status "error"), Rejected for a
	// message the platform will never accept (it is dropped), RetryAfter
	// for 429s; anything else is retried from the durable outbox.
	Send(ctx context.Context, msg Outbound) (messageID string, err error)

	// Probe asks the platform who we are (getMe, auth.test, whoami...). It
	// is the "test" endpoint without a target and the watchdog's check of a
	// link that has gone quiet.
	Probe(ctx context.Context) (Identity, error)

	// Capabilities are static facts about the platform.
	Capabilities() Capabilities
}

// WebhookReceiver is implemented by adapters that take platform callbacks at
// POST (or GET, for verification challenges) /channels/<name>/webhook.
// Webhook verifies the request's signature first: a bad or missing
// signature returns an error wrapping ErrBadSignature (answered 401, nothing
// routed). It returns the HTTP answer to give the platform and the inbound
// messages the request carried, which the runtime routes like those from
// Run. It must not block on the network.
type WebhookReceiver interface {
	Webhook(ctx context.Context, req *WebhookRequest) (*WebhookResponse, []Inbound, error)
}

// LinkFreeSender is implemented by adapters whose Send needs nothing Run
// set up (email: replies go over SMTP, a server separate from the IMAP link
// Run watches). The runtime then drains their outbox also while Run is
// connecting or backing off, so an outage of the inbound link does not hold
// outgoing messages back. A channel in "error" or "stopped" still sends
// nothing.
type LinkFreeSender interface {
	LinkFreeSender()
}

// Builder makes an Adapter from a configuration that already passed the
// registry's schema checks (required fields present, types right). It
// checks what only the adapter knows (URL syntax, enum values) and returns
// an error naming the field (use FieldError), and it does no I/O: it runs
// when the configuration is submitted, before anything is stored.
type Builder func(cfg *Config) (Adapter, error)

// Host is the runtime as an adapter's Run sees it.
type Host interface {
	// Connected reports that the link is up and authenticated as id.
	// Called again on the same link, it only changes the identity (an
	// IRC bot that regained its nick).
	Connected(id Identity)
	// Deliver hands inbound messages to the runtime and returns once they
	// are durably accepted: only then may the adapter acknowledge them to
	// the platform (advance an update offset, a sync token, a UID). It
	// also counts as traffic for the watchdog.
	Deliver(ctx context.Context, msgs ...Inbound) error
	// DeliverAndSave is Deliver that also saves an adapter cursor in the
	// same durable write (an update offset that acknowledges exactly
	// these messages): one sync instead of two, and never one without the
	// other. It saves the cursor also when msgs is empty.
	DeliverAndSave(ctx context.Context, cursor Cursor, msgs ...Inbound) error
	// Degraded reports that the link is up but part of what was configured
	// does not work (an XMPP room the bot could not join): the channel's
	// status becomes "degraded" with msg as last_error, until Degraded("")
	// or a reconnect clears it.
	Degraded(msg string)
	// Alive notes traffic from the platform that carried no message (a
	// long poll that came back empty, a sync response, a server PING), so
	// the "linked but deaf" watchdog knows the link still works.
	Alive()
	// Cursor and SaveCursor keep small durable adapter state (an update
	// offset, a sync token, the last IMAP UID) across restarts. Keys are
	// the adapter's own; values are opaque strings.
	Cursor(key string) (string, error)
	SaveCursor(key, value string) error
	// Log is the channel's logger. Never log a secret.
	Log() *zerolog.Logger
}

// Cursor is one key of an adapter's durable state and its new value.
type Cursor struct{ Key, Value string }

// Identity is who the adapter is logged in as.
type Identity struct {
	ID          string `json:"id"`
	Name        string `json:"name"`                   // username / handle / nick
	DisplayName string `json:"display_name,omitempty"` // human name, when the platform has one
}

// Inbound is one message from a user.
type Inbound struct {
	// ChatID is where the reply goes (a chat, channel, room, mailbox
	// address, IRC channel or nick).
	ChatID string
	// Space is the container above ChatID where the platform has one (a
	// Discord guild, a Slack team), used by space allow-lists.
	Space    string
	UserID   string
	UserName string
	Text     string
	// MessageID is the platform's id of the message, used to reply to it
	// or thread under it.
	MessageID string
	// ThreadID is the thread the message was in, when the platform has
	// threads; replies go there.
	ThreadID string
	// Subject is the email subject (replies use "Re: <subject>").
	Subject string
	// Direct is true for a one-to-one conversation.
	Direct bool
	At     time.Time
}

// Outbound is one message to send.
type Outbound struct {
	ChatID string
	Text   string
	// ReplyTo is the platform message id to answer, ThreadID the thread
	// to post in; both empty for a fresh message. Adapters whose platform
	// has neither ignore them.
	ReplyTo  string
	ThreadID string
	Subject  string
	// Key is stable across retries of the same message
	// ("<channel>-<seq>"): platforms with idempotent sends (Matrix
	// transaction ids) use it so a retry is not a duplicate.
	Key string
}

// Capabilities describe what a platform supports.
type Capabilities struct {
	// MaxMessageLength is the most characters (runes) one message may
	// carry; longer text is split before Send. 0 means no limit.
	MaxMessageLength int
	// LengthInUTF16 counts MaxMessageLength in UTF-16 code units (an emoji
	// is two), as Telegram does.
	LengthInUTF16 bool
	Threads       bool
	Edits         bool
	Buttons       bool
	// Markdown is the formatting dialect the platform renders: "none",
	// "markdown", "markdownv2", "mrkdwn", "html" or "discord".
	Markdown string
	// Pace is the platform's documented outbound rate limit.
	Pace Pace
}

// Pace is an outbound rate limit: a token bucket over the whole account and
// one per chat. Zero rates mean unlimited.
type Pace struct {
	PerSecond    float64 // messages per second across all chats
	Burst        int
	ChatInterval time.Duration // spacing of messages to one chat, after ChatBurst
	ChatBurst    int
}

// WebhookRequest is a platform callback as received by the HTTP layer.
type WebhookRequest struct {
	Method   string
	Query    url.Values
	Header   http.Header
	Body     []byte
	RemoteIP string
}

// WebhookResponse is what to answer the platform. A nil response is 200
// with an empty JSON object.
type WebhookResponse struct {
	Status      int
	ContentType string
	Body        []byte
}

// ErrBadSignature marks a webhook whose signature did not verify.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Error classes an adapter attaches to a failure.
type errorClass int

const (
	classTransient errorClass = iota
	classPermanent
	classRejected
)

type classified struct {
	err        error
	class      errorClass
	retryAfter time.Duration
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

// Permanent marks err as one that retrying cannot fix: bad credentials
// (401/403, an invalid token) or an invalid configuration. The channel stops
// with status "error" and this message until it is reconfigured.
func Permanent(err error) error { return &classified{err: err, class: classPermanent} }

// Rejected marks a Send failure for a message the platform will never take
// (unknown chat, message refused): the message is dropped from the outbox,
// the channel stays up.
func Rejected(err error) error { return &classified{err: err, class: classRejected} }

// RetryAfter marks a transient failure that names when to retry (a 429's
// Retry-After or retry_after). The wait is capped at httpretry.MaxWait
// whatever its source (a header, a JSON retry_after, retry_after_ms), so
// that a hostile or buggy hint cannot park the channel.
func RetryAfter(err error, d time.Duration) error {
	return &classified{err: err, class: classTransient, retryAfter: min(d, httpretry.MaxWait)}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool { return classOf(err) == classPermanent }

// IsRejected reports whether err was marked Rejected.
func IsRejected(err error) bool { return classOf(err) == classRejected }

// RetryHint is the wait a RetryAfter error asked for, or 0.
func RetryHint(err error) time.Duration {
	var c *classified
	if errors.As(err, &c) {
		return c.retryAfter
	}
	return 0
}

func classOf(err error) errorClass {
	var c *classified
	if errors.As(err, &c) {
		return c.class
	}
	return classTransient
}

// HTTPStatusError classifies an HTTP failure status the way most platform
// APIs mean it: 401/403 are permanent (credentials), 429 is transient with
// retryAfter, other 4xx are rejections of this request, 5xx are transient.
// desc is the platform's own message (never a secret).
func HTTPStatusError(status int, desc string, retryAfter time.Duration) error {
	err := &StatusError{Status: status, Description: desc}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return Permanent(err)
	case status == http.StatusTooManyRequests:
		return RetryAfter(err, retryAfter)
	case status >= 400 && status < 500:
		return Rejected(err)
	}
	return err
}

// StatusError is a platform's HTTP error answer.
type StatusError struct {
	Status      int
	Description string
}

func (e *StatusError) Error() string {
	if e.Description == "" {
		return http.StatusText(e.Status)
	}
	return e.Description
}

// FieldError is a configuration error about one field; the API answers it
// with 400 naming the field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "field " + e.Field + ": " + e.Msg }
