package webhook

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
)

// Push endpoints carry A2A push notifications (docs/a2a.md). The A2A
// service creates one per push target a client registers for a task and
// deletes it when the target or the task goes. They subscribe to no bus
// event; instead each task update is handed over with Push, and its body —
// the A2A StreamResponse JSON the spec says to POST — is sent exactly as
// given. Everything else is the engine's: durable in-order outbox, signing
// (when created with a secret), retries with backoff and Retry-After,
// dead letters, 410 disables, the SSRF guard on every dial.

// KindPush is the kind of A2A push endpoints. The /api/webhooks routes
// list only their own kinds, so push endpoints stay out of their way.
const KindPush = "a2a_push"

// MaxPushEndpoints bounds push endpoints apart from MaxEndpoints: there is
// one per push target of a live or kept task.
const MaxPushEndpoints = 10_000

// push is handed to a push endpoint's actor: one message with its body.
// Answered true once it is in the outbox durably.
type push struct {
	msgID, typ string
	body       []byte
	raw        bool
	headers    map[string]string
}

// CreatePush adds a push endpoint named name (the caller's key for it)
// for url, with headers sent on every delivery (the client's A2A
// authentication) and, when secret is set, Standard Webhooks signatures
// with that key. It returns the endpoint's id.
func (e *Engine) CreatePush(ctx context.Context, name, url, secret string, headers map[string]string) (string, error) {
	evs := []string{}
	p := Patch{Name: &name, URL: &url, Events: &evs, Headers: &headers}
	if secret != "" {
		p.Secret = &secret
	}
	v, err := e.Create(ctx, KindPush, p)
	if err != nil {
		return "", err
	}
	return v.ID, nil
}

// Push queues one message for push endpoint id and returns once it is
// durable. msgID is the webhook-id: stable for one update, so a receiver
// can drop a repeat.
func (e *Engine) Push(ctx context.Context, id, msgID, typ string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, kernel.DefaultAskTimeout)
	defer cancel()
	_, err := kernel.Ask[bool](ctx, e.k, e.pid, &forward{id: id, msg: &push{msgID: msgID, typ: typ, body: body}})
	return err
}

// PushRaw is Push for a body that is not JSON (a Web Push message's
// encrypted bytes), sent with headers added to the endpoint's for this
// message only. Such a message is not replayable from the dead-letter list.
func (e *Engine) PushRaw(ctx context.Context, id, msgID, typ string, body []byte, headers map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, kernel.DefaultAskTimeout)
	defer cancel()
	_, err := kernel.Ask[bool](ctx, e.k, e.pid, &forward{id: id, msg: &push{msgID: msgID, typ: typ, body: body, raw: true, headers: headers}})
	return err
}

// DeletePush removes push endpoint id with its queued messages.
func (e *Engine) DeletePush(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, kernel.DefaultAskTimeout)
	defer cancel()
	_, err := kernel.Ask[bool](ctx, e.k, e.pid, &remove{id: id, kind: KindPush})
	return err
}

// enqueuePush puts one pushed message at the tail of the outbox and
// answers the sender once the write is durable.
func (o *outbox) enqueuePush(c actor.Context, m *push) {
	if o.ep.Kind != KindPush {
		c.Respond(kernel.Errorf(kernel.KindConflict, "not_a_push_endpoint", "webhook %s does not take pushed messages", o.ep.ID))
		return
	}
	if !o.ep.Enabled {
		c.Respond(kernel.Errorf(kernel.KindUnavailable, "webhook_disabled", "the push endpoint is disabled: %s", o.ep.DisabledReason))
		return
	}
	if o.pending >= o.sh.opts.MaxPending {
		c.Respond(kernel.Errorf(kernel.KindRateLimited, "outbox_full", "the push endpoint has %d messages waiting", o.pending))
		return
	}
	t := time.Now().UTC()
	msg := &message{MsgID: m.msgID, Type: m.typ, Body: m.body, NextAt: t, Enqueued: t}
	if m.raw {
		msg.Body, msg.Raw, msg.Headers = nil, m.body, m.headers
	}
	sender, sys := c.Sender(), o.sys
	o.queueMessages([]*message{msg}, nil, func() {
		if sender != nil {
			sys.Root.Send(sender, true)
		}
	})
}
