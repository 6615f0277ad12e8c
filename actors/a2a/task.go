package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// persistTimeout bounds the wait for the journal; past it the task fails
// rather than hang its mailbox.
const persistTimeout = 30 * time.Second

// taskBase is what inbound and outbound task actors share: the record, the
// subscribers, durable writes through the journal and the end of life.
type taskBase struct {
	svc    *Service
	rec    taskRecord
	subs   []*subscriber
	stored bool // the record is on disk
	// fresh is false when the producer runs again after a crash: the
	// in-memory state is gone and the store says what happened.
	fresh bool
	// gen numbers runs of the task's work; results of an older run (one
	// cancelled or superseded) are ignored.
	gen    int
	cancel context.CancelFunc
	done   bool
	// opening is the first update subscribers get (the task as created);
	// it goes out once the record is durable (announced).
	opening   update
	announced bool
	// pending is the final write of a task settled by settleFenced while
	// it is in flight. The updates sent meanwhile carry it (their readers
	// wait for it), and requests about the task wait in deferred until it
	// is done: answered from memory they would be ahead of the disk.
	pending  *fence
	deferred []deferredRequest
	// pendingTimeout fails the fenced final write if the journal never
	// answers (persistTimeout); stopped when it does.
	pendingTimeout *time.Timer
}

// deferredRequest is a request that arrived while the final write was in
// flight, with whom to answer.
type deferredRequest struct {
	msg    any
	sender *actor.PID
}

// finalStored reports that settleFenced's final write is done.
type finalStored struct{ err error }

func newTaskBase(svc *Service, rec taskRecord, subs []*subscriber, stored, fresh bool) taskBase {
	return taskBase{svc: svc, rec: rec, subs: subs, stored: stored, fresh: fresh}
}

// persist writes the record through the journal and waits until it is
// synced: nothing a subscriber or caller sees is ahead of the disk.
func (t *taskBase) persist() error {
	done, err := t.persistAsync()
	if err != nil {
		return err
	}
	if err := awaitJournal(done); err != nil {
		return err
	}
	t.stored = true
	return nil
}

// persistAsync queues the record's current state with the journal and
// returns the channel its outcome arrives on. The journal commits in
// order, so a later confirmed write implies this one.
func (t *taskBase) persistAsync() (chan error, error) {
	done := make(chan error, 1)
	return done, t.queueRecord(&journalWrite{done: done})
}

// persistFenced is persistAsync answering on a fence; the actor hears the
// outcome as a finalStored message (from the journal, no goroutine waits).
func (t *taskBase) persistFenced(c actor.Context) (*fence, error) {
	f := newFence()
	self, root := c.Self(), c.ActorSystem().Root
	return f, t.queueRecord(&journalWrite{fence: f, notify: func(err error) { root.Send(self, &finalStored{err: err}) }})
}

// queueRecord sends w, carrying the record's current state, to the journal.
func (t *taskBase) queueRecord(w *journalWrite) error {
	t.rec.UpdatedAt = time.Now().UTC()
	raw, err := appendRecord(make([]byte, 0, 1024), &t.rec)
	if err != nil {
		return err
	}
	w.key, w.raw = taskKey(t.rec.ID), raw
	t.svc.k.Root.Send(t.svc.journal, w)
	return nil
}

func awaitJournal(done chan error) error {
	select {
	case err := <-done:
		return err
	case <-time.After(persistTimeout):
		return errors.New("the a2a journal did not confirm the write in time")
	}
}

// firstStored reports that a new task's first write is durable.
type firstStored struct{ err error }

// announce sends the opening update to the subscribers, once.
func (t *taskBase) announce() {
	if t.announced {
		return
	}
	t.announced = true
	opening := t.opening
	opening.durable = t.pending
	for _, s := range t.subs {
		s.ch <- opening // a subscriber's first update always has room
	}
}

// reload replaces the in-memory record with the stored one (after a crash
// restart of this actor).
func (t *taskBase) reload() {
	if rec, err := t.svc.supervisorTasks().Get(t.rec.ID); err == nil {
		t.rec = rec
		t.stored = true
	}
}

// emit sends an update to every subscriber and push target. A subscriber
// whose buffer is full is cut off: it never holds the task back.
func (t *taskBase) emit(ev a2a.Event) {
	snap := (&TaskSnapshot{rec: t.rec.clone()}).A2A(nil)
	u := update{Event: ev, Task: snap, durable: t.pending}
	kept := t.subs[:0]
	for _, s := range t.subs {
		select {
		case s.ch <- u:
			kept = append(kept, s)
		default:
			close(s.ch)
		}
	}
	clear(t.subs[len(kept):])
	t.subs = kept
	t.push(ev)
}

// snapshotEvent is the first update a subscriber gets: the whole task.
func (t *taskBase) snapshotEvent() update {
	snap := (&TaskSnapshot{rec: t.rec.clone()}).A2A(nil)
	return update{Event: snap, Task: snap}
}

func (t *taskBase) statusEvent(msg *a2a.Message) *a2a.TaskStatusUpdateEvent {
	now := t.rec.UpdatedAt
	return &a2a.TaskStatusUpdateEvent{
		TaskID:    a2a.TaskID(t.rec.ID),
		ContextID: t.publicContextID(),
		Status:    a2a.TaskStatus{State: t.rec.State, Message: msg, Timestamp: &now},
	}
}

func (t *taskBase) publicContextID() string {
	if t.rec.Direction == Outbound && t.rec.RemoteContextID != "" {
		return t.rec.RemoteContextID
	}
	return t.rec.ContextID
}

// finish ends the task's life: subscribers are told there is nothing more,
// and the supervisor forgets and passivates this actor (the stored record
// answers from now on).
func (t *taskBase) finish(c actor.Context) {
	if t.done {
		return
	}
	t.done = true
	for _, s := range t.subs {
		close(s.ch)
	}
	t.subs = nil
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
	t.svc.metrics.finished.WithLabelValues(t.rec.Direction, SeedStatus(t.rec.State)).Inc()
	t.svc.clusterFinished(&t.rec)
	c.Send(c.Parent(), &taskFinished{id: t.rec.ID})
}

// settle moves the task to a terminal state, stores it and tells everyone.
// When the write fails the task is still finished in memory and callers
// see the state, but the log says the store is behind.
func (t *taskBase) settle(c actor.Context, state a2a.TaskState, reason string, events ...a2a.Event) {
	t.rec.State, t.rec.Reason = state, reason
	if err := t.persist(); err != nil {
		t.svc.log.Error().Err(err).Str("task", t.rec.ID).Msg("a2a: could not store the final state of a task")
	}
	t.announceFinal(state, reason, events)
	t.finish(c)
}

// announceFinal sends a settled task's last updates: events, then the
// final status with its result or reason.
func (t *taskBase) announceFinal(state a2a.TaskState, reason string, events []a2a.Event) {
	t.announce()
	for _, ev := range events {
		t.emit(ev)
	}
	var msg *a2a.Message
	if state == a2a.TaskStateCompleted {
		msg = t.rec.result()
	} else if reason != "" {
		msg = statusMessage(&t.rec, reason)
	}
	t.emit(t.statusEvent(msg))
}

// settleFenced is settle without waiting for the final write in Receive:
// the write is queued, the updates go out carrying it (every reader waits
// for it before showing them: stream, await and the HTTP layer's answer,
// see PendingWrites), and the actor finishes once it is done, answering
// the requests that arrived meanwhile then. The synchronous SendMessage's
// final write thereby overlaps the request's own audit entry instead of
// preceding it, and the actor's mailbox is not held by a synced write.
// Push notifications leave the daemon as they are emitted, so a task with
// push targets settles the synchronous way.
func (t *taskBase) settleFenced(c actor.Context, state a2a.TaskState, reason string, events ...a2a.Event) {
	if len(t.rec.Push) > 0 {
		t.settle(c, state, reason, events...)
		return
	}
	t.rec.State, t.rec.Reason = state, reason
	f, err := t.persistFenced(c)
	if err != nil {
		t.settle(c, state, reason, events...) // logs the failed write
		return
	}
	t.pending = f
	t.announceFinal(state, reason, events)
	// The subscribers have every update: their channels end now (a
	// blocking SendMessage returns its answer with the fence), the
	// actor lives on until the write is done.
	for _, s := range t.subs {
		close(s.ch)
	}
	t.subs = nil
	t.stopWork()
	self, root := c.Self(), c.ActorSystem().Root
	t.pendingTimeout = time.AfterFunc(persistTimeout, func() {
		root.Send(self, &finalStored{err: errors.New("the a2a journal did not confirm the write in time")})
	})
}

// finalStored ends a fenced settle: as settle does once its write
// returned, then the deferred requests are answered.
func (t *inboundTask) finalStored(c actor.Context, m *finalStored) {
	if t.pending == nil {
		return // the journal's answer after the timeout, or the reverse
	}
	t.pendingTimeout.Stop()
	t.pending, t.pendingTimeout = nil, nil
	if m.err != nil {
		t.svc.log.Error().Err(m.err).Str("task", t.rec.ID).Msg("a2a: could not store the final state of a task")
	} else {
		t.stored = true
	}
	t.finish(c)
	deferred := t.deferred
	t.deferred = nil
	for _, d := range deferred {
		sender := d.sender
		respond := func(answer any) {
			if sender != nil {
				c.Send(sender, answer)
			}
		}
		if m, ok := d.msg.(*cancelTask); ok {
			t.cancelTask(c, m, respond)
		} else {
			t.handleRequest(d.msg, respond)
		}
	}
}

// deferWhilePending keeps a request about the task for finalStored while
// the final write is in flight; it reports whether it did.
func (t *taskBase) deferWhilePending(c actor.Context) bool {
	if t.pending == nil {
		return false
	}
	switch c.Message().(type) {
	case *getTask, *subscribeTask, *unsubscribe, *getPush, *listPush, *setPush, *deletePush, *cancelTask:
		t.deferred = append(t.deferred, deferredRequest{msg: c.Message(), sender: c.Sender()})
		return true
	}
	return false
}

func (t *taskBase) stopWork() {
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
}

// handleCommon answers the requests every task actor handles the same way.
// It reports whether it handled the message.
func (t *taskBase) handleCommon(c actor.Context) bool {
	return t.handleRequest(c.Message(), c.Respond)
}

// handleRequest is handleCommon for msg, answering with respond (a
// deferred request is answered after its Receive).
func (t *taskBase) handleRequest(msg any, respond func(any)) bool {
	switch m := msg.(type) {
	case *getTask:
		if !m.scope.allows(&t.rec) {
			respond(errTaskNotFound(m.id))
			return true
		}
		respond(t.rec.snapshot())
	case *subscribeTask:
		if !m.scope.allows(&t.rec) {
			close(m.sub.ch)
			respond(errTaskNotFound(m.id))
			return true
		}
		switch {
		case t.done:
			m.sub.ch <- t.snapshotEvent() // a new channel has room
			close(m.sub.ch)
		case t.announced:
			m.sub.ch <- t.snapshotEvent()
			t.subs = append(t.subs, m.sub)
		default:
			// The task is not on disk yet: the opening update follows.
			t.subs = append(t.subs, m.sub)
		}
		respond(t.rec.snapshot())
	case *unsubscribe:
		for i, s := range t.subs {
			if s == m.sub {
				close(s.ch)
				t.subs = append(t.subs[:i], t.subs[i+1:]...)
				break
			}
		}
	case *getPush:
		respond(answerGetPush(&t.rec, m))
	case *listPush:
		respond(answerListPush(&t.rec, m.scope))
	case *setPush:
		respond(t.setPush(m))
	case *deletePush:
		respond(t.deletePush(m))
	default:
		return false
	}
	return true
}

// inboundTask runs one of our agents for a peer.
type inboundTask struct {
	taskBase
	// deferFirst holds the first ("working") write back for
	// firstWriteDelay (see start); firstDue is its timer while it waits.
	deferFirst bool
	firstDue   *time.Timer
	// firstTimeout fails the task if the journal never answers the first
	// write (persistTimeout); stopped when it does.
	firstTimeout *time.Timer
}

// firstWriteDelay is how long a blocking task without push targets runs
// before its "working" record is written. A turn that ends sooner is
// stored once, in its final state: the only reader of the working record
// on disk is a restart after a crash (which fails the task, or resumes
// it), and nobody was told of such a task yet (its caller waits for the
// final answer). Longer turns are written as before, so a crash fails
// them with a reason. One Badger entry, one record encoding and a round
// through the journal less for every quick task (docs/bench.md,
// "Session 9: A2A").
const firstWriteDelay = 250 * time.Millisecond

// writeFirst is firstDue's tick: the turn is still running.
type writeFirst struct{}

func (t *inboundTask) Receive(c actor.Context) {
	if _, ok := c.Message().(*subscribeTask); ok && t.firstDue != nil && !t.done && t.pending == nil {
		// A subscriber's opening update waits for the first write: do
		// not keep it waiting for the delay too.
		t.queueFirst(c)
	}
	if t.deferWhilePending(c) || t.handleCommon(c) {
		return
	}
	switch m := c.Message().(type) {
	case *actor.Started:
		t.start(c)
	case *actor.Stopping, *actor.Restarting:
		// The turn dies with the actor; the record stays "working" and the
		// next start decides (fail or resume).
		t.stopWork()
		t.stopFirst()
		for _, tm := range []*time.Timer{t.firstTimeout, t.pendingTimeout} {
			if tm != nil {
				tm.Stop()
			}
		}
	case *turnDone:
		if m.gen != t.gen || t.done {
			return
		}
		t.cancel = nil
		t.stopFirst()
		t.turnFinished(c, m)
	case *writeFirst:
		if t.firstDue == nil || t.done || t.pending != nil {
			return // written already, or settled first (the final write stands alone)
		}
		t.queueFirst(c)
	case *firstStored:
		if t.firstTimeout == nil {
			return // the journal's answer after the timeout, or the reverse
		}
		t.firstTimeout.Stop()
		t.firstTimeout = nil
		if t.done || t.pending != nil {
			// Settled already: the final write, queued behind this one,
			// decides (finalStored).
			return
		}
		if m.err != nil {
			t.svc.log.Error().Err(m.err).Str("task", t.rec.ID).Msg("a2a: could not store a new task")
			t.stopWork()
			t.gen++
			t.rec.State, t.rec.Reason = a2a.TaskStateFailed, "fangd could not store the task"
			t.announce()
			t.emit(t.statusEvent(statusMessage(&t.rec, t.rec.Reason)))
			t.finish(c)
			return
		}
		t.stored = true
		t.announce()
	case *cancelTask:
		t.stopFirst()
		t.cancelTask(c, m, c.Respond)
	case *finalStored:
		t.finalStored(c, m)
	}
}

// queueFirst queues the task's "working" record with the journal; the
// actor hears the outcome as firstStored. The opening update goes out
// once it is durable.
func (t *inboundTask) queueFirst(c actor.Context) {
	if t.firstDue != nil {
		t.firstDue.Stop()
		t.firstDue = nil
	}
	if t.stored && t.fresh {
		// Written meanwhile (a push configuration was stored with it).
		t.announce()
		return
	}
	self, root := c.Self(), c.ActorSystem().Root
	if err := t.queueRecord(&journalWrite{notify: func(err error) { root.Send(self, &firstStored{err: err}) }}); err != nil {
		panic(err)
	}
	t.opening = t.snapshotEvent()
	t.firstTimeout = time.AfterFunc(persistTimeout, func() {
		root.Send(self, &firstStored{err: errors.New("the a2a journal did not confirm the write in time")})
	})
}

// stopFirst gives up a first write that is still held back: the task's
// next write is its final one.
func (t *inboundTask) stopFirst() {
	if t.firstDue != nil {
		t.firstDue.Stop()
		t.firstDue = nil
	}
}

func (t *inboundTask) start(c actor.Context) {
	if !t.fresh {
		t.reload()
	}
	if t.rec.State.Terminal() {
		// Finished before a crash restart: only tell the supervisor.
		t.finish(c)
		return
	}
	if !t.fresh && !t.svc.opts.ResumeOnRestart && t.stored {
		t.settle(c, a2a.TaskStateFailed, "the task's actor restarted after a crash; its turn was lost")
		return
	}
	// The turn starts while the first write is committed: the opening
	// update waits for the disk, the work does not. The final write is
	// queued behind the first, so the stored history never goes backwards.
	// A quick blocking task's first write is held back (firstWriteDelay)
	// and dropped if the turn ends first.
	t.rec.State = a2a.TaskStateWorking
	if t.deferFirst && t.fresh {
		t.opening = t.snapshotEvent()
		self, root := c.Self(), c.ActorSystem().Root
		t.firstDue = time.AfterFunc(min(firstWriteDelay, t.svc.opts.SyncWait/2), func() { root.Send(self, &writeFirst{}) })
	} else {
		t.queueFirst(c)
	}
	t.runTurn(c)
}

func (t *inboundTask) runTurn(c actor.Context) {
	t.gen++
	gen := t.gen
	ctx, cancel := context.WithTimeout(context.Background(), t.svc.opts.TurnTimeout)
	t.cancel = cancel
	req := TurnRequest{
		AgentID:   t.rec.AgentID,
		SessionID: "a2a:" + t.rec.ContextID,
		Text:      promptText(t.rec.History),
		Caller:    t.rec.Caller,
	}
	self, root, agents := c.Self(), c.ActorSystem().Root, t.svc.agents
	go func() {
		res, err := agents.Turn(ctx, req)
		root.Send(self, &turnDone{gen: gen, result: res, err: err})
	}()
}

func (t *inboundTask) turnFinished(c actor.Context, m *turnDone) {
	if m.err != nil {
		state, reason := classifyTurnError(m.err, t.svc.opts.TurnTimeout)
		if reason == "" {
			t.svc.log.Error().Err(m.err).Str("task", t.rec.ID).Msg("a2a: agent turn failed")
			reason = "the agent's turn failed with an internal error"
		}
		t.settleFenced(c, state, reason)
		return
	}
	reply := &a2a.Message{
		ID:        uuid.NewString(),
		Role:      a2a.MessageRoleAgent,
		TaskID:    a2a.TaskID(t.rec.ID),
		ContextID: t.rec.ContextID,
		Parts:     a2a.ContentParts{a2a.NewTextPart(m.result.Text)},
	}
	art := &a2a.Artifact{ID: "response", Name: "response", Parts: a2a.ContentParts{a2a.NewTextPart(m.result.Text)}}
	t.rec.History = append(t.rec.History, reply)
	t.rec.Artifacts = append(t.rec.Artifacts, art)
	t.rec.Usage = &Usage{Model: m.result.Model, InputTokens: m.result.InputTokens, OutputTokens: m.result.OutputTokens, CostUSD: m.result.CostUSD}
	t.settleFenced(c, a2a.TaskStateCompleted, "", &a2a.TaskArtifactUpdateEvent{
		TaskID: a2a.TaskID(t.rec.ID), ContextID: t.rec.ContextID, Artifact: art, LastChunk: true,
	})
}

// classifyTurnError decides between the spec's "rejected" (the agent would
// not take the work: budget, permission, bad input) and "failed", with a
// reason that is safe to show. An empty reason means an internal error.
func classifyTurnError(err error, timeout time.Duration) (a2a.TaskState, string) {
	if errors.Is(err, context.DeadlineExceeded) {
		return a2a.TaskStateFailed, fmt.Sprintf("the agent did not answer within %s", timeout)
	}
	de := kernel.AsError(err)
	if de == nil {
		return a2a.TaskStateFailed, ""
	}
	switch de.Kind {
	case kernel.KindPaymentRequired, kernel.KindForbidden, kernel.KindInvalid, kernel.KindTooLarge, kernel.KindNotFound, kernel.KindConflict:
		return a2a.TaskStateRejected, de.Msg
	}
	return a2a.TaskStateFailed, de.Msg
}

func (t *inboundTask) cancelTask(c actor.Context, m *cancelTask, respond func(any)) {
	if !m.scope.allows(&t.rec) {
		respond(errTaskNotFound(m.id))
		return
	}
	if t.done || t.rec.State.Terminal() {
		respond(finishedCancelAnswer(&t.rec))
		return
	}
	// Cancelling the context stops the turn where it is, down to the
	// provider call; its late result is ignored (gen).
	t.stopWork()
	t.gen++
	who := m.scope.caller
	if who == "" {
		who = "the caller"
	}
	t.settle(c, a2a.TaskStateCanceled, "canceled by "+who)
	respond(t.rec.snapshot())
}

// promptText turns the user's messages into the text of the agent turn.
// Validation already refused parts the agent cannot read.
func promptText(history []*a2a.Message) string {
	var out []byte
	for _, m := range history {
		if m.Role != a2a.MessageRoleUser {
			continue
		}
		for _, p := range m.Parts {
			switch v := p.Content.(type) {
			case a2a.Text:
				out = appendLine(out, string(v))
			case a2a.Data:
				raw, err := json.Marshal(v.Value)
				if err == nil {
					out = appendLine(out, string(raw))
				}
			}
		}
	}
	return string(out)
}

func appendLine(b []byte, s string) []byte {
	if len(b) > 0 {
		b = append(b, '\n')
	}
	return append(b, s...)
}
