package channel

import (
	"context"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
)

// The turn scheduler: which inbox message gets an agent turn next. Turns
// within one chat run one at a time, in the order the messages came;
// chats run side by side up to a limit; a chat whose turn failed for a
// reason that may pass waits before its next try.

// turns is the scheduler's state. It holds no actor and starts nothing:
// its methods say which items to start, and the channel actor runs them.
type turns struct {
	max     int                  // turns running at once, across chats
	queue   map[string][]*inItem // per chat, in order; the head may be running
	busy    map[string]bool      // chat -> its head is running
	after   map[string]time.Time // chat -> no turn before (after a failure)
	running int
	pending int // inbox items not finished (queued or running)
}

func newTurns(max int) *turns {
	return &turns{max: max, queue: map[string][]*inItem{}, busy: map[string]bool{}, after: map[string]time.Time{}}
}

// add queues items (accepted inbound messages) behind their chat's.
func (t *turns) add(items ...*inItem) {
	for _, it := range items {
		t.queue[it.Msg.ChatID] = append(t.queue[it.Msg.ChatID], it)
	}
	t.pending += len(items)
}

// next marks as running, and returns, the head of each chat that has
// work, is idle and is not pausing after a failure, up to max running.
func (t *turns) next(now time.Time) []*inItem {
	var start []*inItem
	for chat, q := range t.queue {
		if t.running >= t.max {
			break
		}
		if len(q) == 0 || t.busy[chat] {
			continue
		}
		if at, ok := t.after[chat]; ok && now.Before(at) {
			continue
		}
		t.busy[chat] = true
		t.running++
		start = append(start, q[0])
	}
	return start
}

// failed ends a running turn that may succeed later: it stays at its
// chat's head, and the chat waits backoff(attempts+3) before trying
// again, while other chats go on. It returns the wait.
func (t *turns) failed(it *inItem, now time.Time, backoff func(int) time.Duration) time.Duration {
	chat := it.Msg.ChatID
	t.running--
	t.busy[chat] = false
	it.Attempts++
	d := backoff(it.Attempts + 3)
	t.after[chat] = now.Add(d)
	return d
}

// finished ends a running turn for good (answered, or failed for good):
// the item leaves its chat's queue and the chat's next message may start.
func (t *turns) finished(it *inItem) {
	chat := it.Msg.ChatID
	t.running--
	t.busy[chat] = false
	delete(t.after, chat)
	q := t.queue[chat]
	if len(q) > 0 && q[0] == it {
		q = q[1:]
	}
	if len(q) == 0 {
		delete(t.queue, chat)
		delete(t.busy, chat)
	} else {
		t.queue[chat] = q
	}
	t.pending--
}

// withdraw takes back the items of a batch that could not be stored,
// except a chat's head whose turn is already running (it finishes; its
// answer may then come twice), and returns how many it took back.
func (t *turns) withdraw(items []*inItem) (dropped int) {
	for _, it := range items {
		chat := it.Msg.ChatID
		q := t.queue[chat]
		for i, x := range q {
			if x == it && !(i == 0 && t.busy[chat]) {
				t.queue[chat] = append(q[:i:i], q[i+1:]...)
				dropped++
				break
			}
		}
		if len(t.queue[chat]) == 0 && !t.busy[chat] {
			delete(t.queue, chat)
		}
	}
	t.pending -= dropped
	return dropped
}

// startTurns starts the turns the scheduler says are due.
func (a *channelActor) startTurns() {
	for _, it := range a.turns.next(time.Now()) {
		a.runTurn(it)
	}
}

// runTurn publishes the message, asks the bound agent and puts the reply,
// split to the platform's limit, in the outbox: all in a goroutine.
func (a *channelActor) runTurn(it *inItem) {
	name, agents, ref := a.name, a.rt.agents, ""
	if a.cfg != nil {
		ref = a.cfg.AgentName()
	}
	if id := a.rec.AgentID; id != "" && a.rt.clu == nil {
		ref = id // resolved at configure time; survives a rename
	}
	// In cluster mode agents live per node: the hosting node answers with
	// its own agent of that name (docs/cluster.md).
	limit, utf16 := a.caps.MaxMessageLength, a.caps.LengthInUTF16
	q, self, root, base, rt := a.rt.queues, a.self, a.rt.k.Root, a.base, a.rt
	msg := it.Msg
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(base, turnTimeout)
		defer cancel()
		src := "channel:" + name + ":" + msg.ChatID
		var agentID, agentName string
		var err error
		if ref != "" && agents != nil {
			agentID, agentName, err = agents.Resolve(ctx, ref)
		}
		target := ""
		if agentID != "" {
			target = "agent:" + agentID
		}
		if it.Attempts == 0 {
			rt.publishEvent(Event{Type: EventReceived, Source: src, Target: target, Detail: map[string]any{
				"channel": name, "chat_id": msg.ChatID, "user_id": msg.UserID, "user_name": msg.UserName,
				"message_id": msg.MessageID, "text": msg.Text, "agent_name": agentName}})
		}
		done := &turnDone{item: it}
		switch {
		case base.Err() != nil:
			return // stopping: the inbox keeps the message for the next start
		case err != nil:
			done.err, done.retry = err, retryable(err)
		case ref == "" || agents == nil:
			// No agent bound: the message is published, nobody answers.
		default:
			reply, terr := agents.Turn(ctx, agentID, src, msg.Text)
			if base.Err() != nil {
				return
			}
			if terr != nil {
				done.err, done.retry = terr, retryable(terr)
				break
			}
			subject := ""
			if msg.Subject != "" && !strings.HasPrefix(strings.ToLower(msg.Subject), "re:") {
				subject = "Re: " + msg.Subject
			} else {
				subject = msg.Subject
			}
			now := time.Now().UTC().Format(time.RFC3339Nano)
			for _, piece := range Split(reply, limit, utf16) {
				done.out = append(done.out, &outItem{Seq: a.seq.next(), Source: "reply", Created: now, answers: it,
					Msg: Outbound{ChatID: msg.ChatID, Text: piece, ReplyTo: msg.MessageID, ThreadID: msg.ThreadID, Subject: subject}})
			}
		}
		if done.retry && it.Attempts+1 < turnAttempts {
			root.Send(self, done)
			return
		}
		done.retry = false
		// The reply goes out while its outbox write syncs: the write is
		// ordered before the delete that follows a successful send, and
		// a crash in between runs the turn again (an answer twice, never
		// none).
		q.finishTurn(name, it, done.out, func(err error) {
			if err != nil {
				rt.log.Error().Err(err).Str("channel", name).Msg("recording a finished turn failed; it runs again after a restart")
			}
		})
		root.Send(self, done)
	}()
}

// retryable reports whether a failed turn may succeed later.
func retryable(err error) bool {
	if e := kernel.AsError(err); e != nil {
		return e.Kind == kernel.KindUnavailable || e.Kind == kernel.KindUpstream || e.Kind == kernel.KindRateLimited || e.Kind == kernel.KindInternal
	}
	return true
}

func (a *channelActor) turnDone(c actor.Context, m *turnDone) {
	chat := m.item.Msg.ChatID
	if m.retry {
		d := a.turns.failed(m.item, time.Now(), a.rt.backoff.Jittered)
		a.status.LastError = "agent turn failed, retrying: " + kernel.PublicMessage(m.err)
		a.schedule(d, &kick{})
	} else {
		a.turns.finished(m.item)
		a.status.InboxPending = a.turns.pending
		if m.err != nil {
			a.status.LastError = "agent turn failed: " + kernel.PublicMessage(m.err)
			a.log.Warn().Str("chat", chat).Str("error", kernel.PublicMessage(m.err)).Msg("agent turn failed; message not answered")
		}
		a.outbox.add(m.out...)
		a.status.OutboxPending = len(a.outbox.items)
	}
	a.startTurns()
	a.pump()
	a.publish(c)
}
