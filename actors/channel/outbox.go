package channel

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/time/rate"
)

// Outbox pacing: which queued messages go to the platform now. Messages
// of one chat go one at a time, oldest first (a later one waits for the
// earlier to be sent or dropped); a few chats send at once; a 429 pauses
// the whole account; the platform's documented rate (Capabilities.Pace)
// spaces sends over the account and per chat.

// outbox is the pacing state of a channel's outbox. It holds no actor and
// starts nothing: its methods say what to send and when to look again,
// and the channel actor sends.
type outbox struct {
	maxInflight int
	items       []*outItem      // oldest first
	inflight    map[string]bool // chat -> a send is in flight
	pausedUntil time.Time       // a 429 pauses the whole account
	kickAt      time.Time       // when the pending wake-up fires (zero: none)

	pace    Pace
	global  *rate.Limiter            // the account's rate (nil: unlimited)
	chatLim map[string]*rate.Limiter // per chat, at most maxChatLimiters
}

func newOutbox(maxInflight int, items []*outItem) *outbox {
	return &outbox{maxInflight: maxInflight, items: items, inflight: map[string]bool{}, chatLim: map[string]*rate.Limiter{}}
}

// setPace starts the platform's rate limits afresh (a new adapter).
func (o *outbox) setPace(p Pace) {
	o.pace = p
	o.global = nil
	if p.PerSecond > 0 {
		o.global = rate.NewLimiter(rate.Limit(p.PerSecond), max(p.Burst, 1))
	}
	o.chatLim = map[string]*rate.Limiter{}
}

// add queues items behind the others.
func (o *outbox) add(items ...*outItem) { o.items = append(o.items, items...) }

// due marks as in flight, and returns, the oldest message of each chat
// that is free, up to maxInflight in flight; wake is how long until a
// message held back by a retry wait or the account's pause may go (0:
// nothing is waiting on time). A message whose answered inbound message
// is not stored yet is held, and so are the later ones of its chat: the
// inboxStored message looks again.
func (o *outbox) due(now time.Time) (send []*outItem, wake time.Duration) {
	if len(o.items) == 0 {
		return nil, 0
	}
	if now.Before(o.pausedUntil) {
		return nil, o.pausedUntil.Sub(now)
	}
	seen := map[string]bool{}
	for _, it := range o.items {
		if len(o.inflight) >= o.maxInflight {
			break
		}
		chat := it.Msg.ChatID
		if seen[chat] {
			continue
		}
		seen[chat] = true // later messages of this chat wait for this one
		if o.inflight[chat] || it.held() {
			continue
		}
		if w := it.notBefore().Sub(now); w > 0 {
			if wake == 0 || w < wake {
				wake = w
			}
			continue
		}
		o.inflight[chat] = true
		send = append(send, it)
	}
	return send, wake
}

// done ends the send of it: its chat is free again, and a message sent (or
// refused for good) leaves the queue; drop false keeps it queued (the
// channel stopped with its credentials refused).
func (o *outbox) done(it *outItem, drop bool) {
	delete(o.inflight, it.Msg.ChatID)
	if !drop {
		return
	}
	for i, x := range o.items {
		if x == it {
			o.items = append(o.items[:i], o.items[i+1:]...)
			return
		}
	}
}

// retry schedules it again after a failed send: backoff(attempts) later,
// or later still if the platform named a wait (hint), which then pauses
// the whole account as the platform asked. It returns the delay.
func (o *outbox) retry(it *outItem, hint time.Duration, now time.Time, backoff func(int) time.Duration) time.Duration {
	delete(o.inflight, it.Msg.ChatID)
	it.attempts++
	d := backoff(it.attempts)
	if hint > 0 {
		d = max(d, hint)
		o.pausedUntil = now.Add(hint)
	}
	it.retryAt = now.Add(d)
	return d
}

// wakeAfter records a wake-up d from now and reports whether a timer must
// be set for it: not when one already set fires sooner.
func (o *outbox) wakeAfter(now time.Time, d time.Duration) bool {
	at := now.Add(d)
	if !o.kickAt.IsZero() && o.kickAt.Before(at) && o.kickAt.After(now) {
		return false
	}
	o.kickAt = at
	return true
}

// woke notes that the wake-up fired.
func (o *outbox) woke() { o.kickAt = time.Time{} }

// chatLimiter is chat's pacing limiter (nil when the platform has no
// per-chat rate). The limiters are forgotten all at once past
// maxChatLimiters chats: a bot in many chats must not grow without bound,
// and forgetting only lets a burst through again.
func (o *outbox) chatLimiter(chat string) *rate.Limiter {
	p := o.pace
	if p.ChatInterval <= 0 {
		return nil
	}
	l, ok := o.chatLim[chat]
	if !ok {
		if len(o.chatLim) >= maxChatLimiters {
			o.chatLim = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Every(p.ChatInterval), max(p.ChatBurst, 1))
		o.chatLim[chat] = l
	}
	return l
}

// enqueue writes a comms message to the outbox and answers once durable.
func (a *channelActor) enqueue(m *sendRequest) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	source := "comms"
	if m.from == "commands" {
		source = "command"
	}
	var items []*outItem
	for _, piece := range Split(m.text, a.caps.MaxMessageLength, a.caps.LengthInUTF16) {
		items = append(items, &outItem{Seq: a.seq.next(), Source: source, Created: now,
			Msg: Outbound{ChatID: m.chatID, Text: piece, ReplyTo: m.replyTo, ThreadID: m.threadID}})
	}
	q, name, self, root := a.rt.queues, a.name, a.self, a.rt.k.Root
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		stored := make(chan error, 1)
		q.finishTurn(name, nil, items, func(err error) { stored <- err })
		if err := <-stored; err != nil {
			m.reply.Respond(sendResult{err: err})
			return
		}
		ids := make([]string, len(items))
		for i, it := range items {
			ids[i] = fmt.Sprintf("%s-%d", name, it.Seq)
		}
		root.Send(self, &enqueued{items: items})
		m.reply.Respond(sendResult{ids: ids})
	}()
}

// pump starts the sends the outbox says are due, while the link is up
// (or, for a LinkFreeSender, while it is being re-established), and sets
// a wake-up for those waiting on time.
func (a *channelActor) pump() {
	if !a.canSend() {
		return
	}
	send, wake := a.outbox.due(a.rt.clock.Now())
	if wake > 0 {
		a.kickLater(wake)
	}
	for _, it := range send {
		a.send(it)
	}
}

func (a *channelActor) canSend() bool {
	if a.adapter == nil {
		return false
	}
	switch a.status.State {
	case StateConnected:
		return true
	case StateConnecting, StateBackoff:
		_, ok := a.adapter.(LinkFreeSender)
		return ok
	}
	return false
}

// kickLater pumps again in d, unless a wake-up already set comes sooner.
func (a *channelActor) kickLater(d time.Duration) {
	if a.outbox.wakeAfter(a.rt.clock.Now(), d) {
		a.schedule(d, &kick{})
	}
}

func (a *channelActor) send(it *outItem) {
	ad, global, chatLim := a.adapter, a.outbox.global, a.outbox.chatLimiter(it.Msg.ChatID)
	q, name, self, root, base, rt, adapterName, epoch := a.rt.queues, a.name, a.self, a.rt.k.Root, a.base, a.rt, a.rec.Adapter, a.rec.Epoch
	target := "" // a reply is the bound agent's delivery (GET /api/agents/{id}/deliveries)
	if it.Source == "reply" && a.rec.AgentID != "" && a.rt.clu == nil {
		target = "agent:" + a.rec.AgentID
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for _, l := range []*rate.Limiter{global, chatLim} {
			if l != nil {
				if err := l.Wait(base); err != nil {
					return // stopping
				}
			}
		}
		ctx, cancel := context.WithTimeout(base, sendTimeout)
		msg := it.Msg
		msg.Key = fmt.Sprintf("%s-%s-%d", name, epoch, it.Seq)
		id, err := ad.Send(ctx, msg)
		cancel()
		if base.Err() != nil {
			return
		}
		if err == nil || IsRejected(err) {
			q.sent(name, it.Seq, func(derr error) {
				if derr != nil {
					rt.log.Error().Err(derr).Str("channel", name).Msg("removing a sent message from the outbox failed")
				}
			})
		}
		if err == nil {
			rt.publishEvent(Event{Type: EventSent, Source: "channel:" + name + ":" + it.Msg.ChatID, Target: target, Detail: map[string]any{
				"channel": name, "adapter": adapterName, "chat_id": it.Msg.ChatID, "message_id": id, "source": it.Source,
				"length": len([]rune(it.Msg.Text))}})
		}
		root.Send(self, &sendDone{item: it, messageID: id, err: err})
	}()
}

func (a *channelActor) sendDone(c actor.Context, m *sendDone) {
	chat := m.item.Msg.ChatID
	switch {
	case m.err == nil:
		a.outbox.done(m.item, true)
		a.status.MessagesOut++
		a.rt.metrics.out.WithLabelValues(a.rec.Adapter).Inc()
	case IsPermanent(m.err):
		// Credentials stopped working: the message stays queued for when
		// the channel is reconfigured.
		a.outbox.done(m.item, false)
		a.stopRun()
		a.fail(m.err.Error())
	case IsRejected(m.err):
		a.outbox.done(m.item, true)
		a.status.MessagesFailed++
		a.rt.metrics.failed.WithLabelValues(a.rec.Adapter).Inc()
		a.status.LastError = fmt.Sprintf("message to %s rejected: %s", chat, m.err.Error())
		a.log.Warn().Str("chat", chat).Err(m.err).Msg("platform rejected a message; dropped")
	default:
		d := a.outbox.retry(m.item, RetryHint(m.err), a.rt.clock.Now(), a.rt.backoff.Jittered)
		msg, code := linkError(m.err)
		a.status.LastError, a.status.LastErrorCode = "sending failed, will retry: "+msg, code
		a.kickLater(d)
	}
	a.status.OutboxPending = len(a.outbox.items)
	a.pump()
	a.publish(c)
}
