package channel

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
)

// The inbox: inbound messages (from Run through the host, or from a
// webhook call) are filtered by the channel's allow-lists, chat commands
// are answered, and the rest are stored durably and handed to the turn
// scheduler (turns.go). The platform is acknowledged only once they are
// durable.

// allowed applies the channel's allow-lists.
func (a *channelActor) allowed(m *Inbound) bool {
	f := a.cfg.Spec.Filters
	match := func(key string, vals ...string) bool {
		if key == "" {
			return true
		}
		list := a.cfg.List(key)
		if len(list) == 0 {
			return true
		}
		for _, allowed := range list {
			for _, v := range vals {
				if v != "" && (strings.EqualFold(allowed, v) || strings.EqualFold(strings.TrimPrefix(allowed, "@"), v)) {
					return true
				}
			}
		}
		return false
	}
	return match(f.Users, m.UserID, m.UserName) && match(f.Chats, m.ChatID) && match(f.Spaces, m.Space)
}

// accept filters msgs and stores the allowed ones in the inbox, with cur
// when set; done is called (from a goroutine) once they, and the answers
// to any chat commands among them, are durable.
func (a *channelActor) accept(msgs []Inbound, cur *Cursor, done func(error)) {
	items, cmds := a.sort(msgs)
	now := time.Now()
	if n := len(items) + len(cmds); n > 0 {
		a.status.MessagesIn += uint64(n)
		a.status.LastMessageAt = &now
		a.rt.metrics.in.WithLabelValues(a.rec.Adapter).Add(float64(n))
	}
	write := len(items) > 0 || cur != nil
	if !write && len(cmds) == 0 {
		done(nil)
		return
	}
	if write && len(cmds) > 0 {
		done = joinDone(2, done) // both before the adapter acknowledges
	}
	if len(cmds) > 0 {
		a.runCommands(cmds, done)
	}
	if write {
		a.store(items, cur, done)
	}
}

// sort keeps the messages the channel takes: agent work for the inbox,
// and chat commands.
func (a *channelActor) sort(msgs []Inbound) (items []*inItem, cmds []Inbound) {
	now := time.Now()
	for i := range msgs {
		m := msgs[i]
		if a.cfg == nil || !a.allowed(&m) {
			a.status.Filtered++
			a.rt.metrics.filtered.WithLabelValues(a.rec.Adapter).Inc()
			continue
		}
		if strings.TrimSpace(m.Text) == "" || m.ChatID == "" {
			continue
		}
		if m.At.IsZero() {
			m.At = now
		}
		if a.rt.commands != nil && a.rt.commands.Match(m.Text) {
			cmds = append(cmds, m)
			continue
		}
		items = append(items, &inItem{Seq: a.seq.next(), Msg: m})
	}
	return items, cmds
}

// store writes items to the inbox (and cur) and starts their turns while
// the write syncs: it is ordered before anything a turn writes later (its
// finishTurn drops the item), the adapter acknowledges the batch to the
// platform only once it is durable, and a reply waits for it too. A crash
// before that is a redelivery, never a loss, and nothing was answered.
func (a *channelActor) store(items []*inItem, cur *Cursor, done func(error)) {
	for _, it := range items {
		it.pending = true
	}
	a.turns.add(items...)
	a.status.InboxPending = a.turns.pending
	self, root := a.self, a.rt.k.Root
	a.wg.Add(1)
	a.rt.queues.putInbox(a.name, items, cur, func(err error) {
		defer a.wg.Done()
		switch {
		case len(items) == 0:
		case err != nil:
			// Not accepted: the adapter must not acknowledge them, so the
			// platform delivers them again.
			root.Send(self, &inboxFailed{items: items, err: err})
		default:
			root.Send(self, &inboxStored{items: items})
		}
		done(err)
	})
	a.startTurns()
}

// joinDone calls done once n calls of the returned func came in, with the
// first error among them.
func joinDone(n int, done func(error)) func(error) {
	var mu sync.Mutex
	var first error
	return func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if n--; n == 0 {
			done(first)
		}
	}
}

// inboxFailed withdraws the messages of a batch that could not be stored
// and have not started their turn yet: the platform delivers them again.
// A turn already running finishes (its answer may then come twice).
func (a *channelActor) inboxFailed(c actor.Context, m *inboxFailed) {
	for _, it := range m.items {
		it.pending = false // a reply already made goes out
	}
	dropped := a.turns.withdraw(m.items)
	a.status.MessagesIn -= uint64(dropped)
	a.status.InboxPending = a.turns.pending
	a.status.LastError = "storing inbound messages failed: " + m.err.Error()
	a.publish(c)
}

func (a *channelActor) webhook(c actor.Context, m *webhookCall) {
	if a.adapter == nil {
		m.reply.Respond(webhookResult{err: kernel.Errorf(kernel.KindUnavailable, "channel_not_running",
			"channel %s is not running: %s", a.name, a.status.LastError)})
		return
	}
	wr, ok := a.adapter.(WebhookReceiver)
	if !ok {
		m.reply.Respond(webhookResult{err: kernel.NotFound("channel %s (%s) does not take webhooks", a.name, a.rec.Adapter)})
		return
	}
	if !a.cfg.Enabled() {
		m.reply.Respond(webhookResult{err: kernel.Errorf(kernel.KindUnavailable, "channel_disabled", "channel %s is disabled", a.name)})
		return
	}
	ctx, cancel := context.WithTimeout(a.base, 5*time.Second)
	resp, msgs, err := wr.Webhook(ctx, m.req)
	cancel()
	if err != nil {
		if errors.Is(err, ErrBadSignature) {
			a.log.Warn().Str("remote", m.req.RemoteIP).Msg("webhook with a bad signature refused")
			err = kernel.Errorf(kernel.KindUnauthorized, "bad_signature", "%s", err.Error())
		} else if kernel.AsError(err) == nil {
			err = kernel.Invalid("%s", err.Error())
		}
		m.reply.Respond(webhookResult{err: err})
		return
	}
	a.traffic = time.Now()
	a.accept(msgs, nil, func(err error) {
		if err != nil {
			m.reply.Respond(webhookResult{err: err})
			return
		}
		m.reply.Respond(webhookResult{resp: resp})
	})
	a.publish(c)
}

// runCommands answers chat commands in a goroutine: each answer goes to
// the outbox (durably) before done is called, so the platform is not told
// a command was taken before its answer is safe. A command is not kept in
// the inbox: after a crash between the two it is simply not answered, and
// the user sends it again.
// commandStoreTimeout bounds the wait for a command's answer to be queued.
const commandStoreTimeout = time.Minute

func (a *channelActor) runCommands(cmds []Inbound, done func(error)) {
	cmd, name, self, k, base := a.rt.commands, a.name, a.self, a.rt.k, a.base
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		var first error
		for _, m := range cmds {
			ctx, cancel := context.WithTimeout(base, 30*time.Second)
			answer := cmd.Handle(ctx, name, m)
			cancel()
			if answer == "" || base.Err() != nil {
				continue
			}
			// Stored answers come in milliseconds; the bound only keeps
			// a wedged outbox from holding the command forever.
			sctx, cancel := context.WithTimeout(base, commandStoreTimeout)
			r, err := kernel.Ask[sendResult](sctx, k, self, &sendRequest{chatID: m.ChatID, text: answer, from: "commands", replyTo: m.MessageID, threadID: m.ThreadID})
			cancel()
			if err == nil {
				err = r.err
			}
			if err != nil && base.Err() == nil && first == nil {
				first = err
			}
		}
		done(first)
	}()
}
