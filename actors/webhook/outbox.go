package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// window is how many outbox messages an endpoint keeps in memory; the rest
// wait in Badger and are loaded as the window drains.
const window = 512

// attemptsKept is how many delivery attempts are kept per endpoint.
const attemptsKept = 200

func outboxName(id string) string   { return "webhooks/q/" + id }
func deadName(id string) string     { return "webhooks/dl/" + id }
func attemptsName(id string) string { return "webhooks/att/" + id }

func encodeHeaders(h map[string]string) ([]byte, error) { return json.Marshal(h) }

// outbox is one endpoint's actor. It is the only writer of its outbox,
// dead letters, attempt history and bookkeeping; all of them go through
// one serialised writer goroutine (see write), which commits whatever has
// queued up in one synced transaction.
//
// Delivery is strictly in order, one request at a time: the next message
// is sent only after the previous one's outcome is durable, so a receiver
// that answered 2xx never sees the message again unless the daemon died
// between its answer and that commit (then the stable webhook-id lets it
// drop the duplicate).
type outbox struct {
	sh     *shared
	ep     Endpoint
	parent *actor.PID

	signer  *Signer
	headers map[string]string
	meta    meta
	st      backend

	queue      []*message // loaded head of the outbox, in order
	loadedUpTo uint64     // highest seq ever loaded into queue
	pending    int        // messages in the outbox (memory + disk)
	dead       int
	inFlight   bool
	timer      *time.Timer
	timerAt    time.Time

	gc   *store.GroupCommit[op] // the serialised writer (see write)
	send func(any)              // to the outbox itself: the commit's report

	// Cluster mode: intaking while a move of appended messages from
	// the intake into the queue is read or written; again when asked
	// for one meanwhile; fenced once a write was refused because
	// another node took the endpoint (the supervisor stops this actor).
	intaking, again, fenced bool

	ctx    context.Context
	cancel context.CancelFunc
	self   *actor.PID
	sys    *actor.ActorSystem
}

// op is one queued write and what to do once it is durable.
type op struct {
	w    []wr
	done func()
}

func (o *outbox) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		o.self, o.sys = c.Self(), c.ActorSystem()
		o.ctx, o.cancel = context.WithCancel(context.Background())
		self, root := o.self, o.sys.Root
		o.send = func(msg any) { root.Send(self, msg) }
		st, id := o.sh.stateFor(o.ep.Kind), o.ep.ID
		o.st = st
		o.gc = store.NewGroupCommit(store.GroupCommitOptions[op]{Commit: func(ops []op) error { return st.commit(id, ops) }, Done: func(w op, err error) {
			if err == nil && w.done != nil {
				w.done()
			}
		}})
		if err := o.load(); err != nil {
			panic(err)
		}
		o.report()
		o.kick()
	case *deliver:
		o.enqueue(m.events)
	case *push:
		o.enqueuePush(c, m)
	case *store.Committed[op]:
		_, err, ok := o.gc.Committed(m)
		if !ok {
			return // from before a restart: the store was reloaded since
		}
		if err != nil {
			if o.sh.clusteredKind(o.ep.Kind) {
				// Another node holds the endpoint now, or etcd did not
				// answer: what is in memory may differ from etcd, so
				// stop; the supervisor's next round starts the outbox
				// again from etcd if this node still holds it.
				o.fenced = true
				o.sh.log.Warn().Err(err).Str("webhook", o.ep.ID).Msg("webhook outbox write refused; stopping it here")
				c.Stop(o.self)
				return
			}
			panic(fmt.Errorf("webhook %s: commit failed: %w", o.ep.ID, err))
		}
		o.flush()
		o.report()
		o.kick()
	case *attempted:
		o.attempted(m)
	case *intakeKick:
		o.intake()
	case *intaken:
		o.intook(m)
	case *tick:
		o.timer, o.timerAt = nil, time.Time{}
		o.kick()
	case *reconfigure:
		o.reconfigure(m)
	case *Deliveries:
		c.Respond(o.deliveries(m.Limit))
	case *DeadLetters:
		c.Respond(o.deadLetters(m.Limit))
	case *Replay:
		o.replay(c, m)
	case *Test:
		o.test(c)
	case *actor.Stopping:
		if o.cancel != nil {
			o.cancel()
		}
		// A commit in flight finishes before the actor is gone, so that
		// nothing writes after a delete drops the endpoint's data or the
		// daemon closes the store.
		o.gc.Wait()
		if o.timer != nil {
			o.timer.Stop()
		}
		o.signer.Wipe()
		clear(o.headers)
	}
}

// load restores the endpoint from the store: secrets, bookkeeping, counts
// and the head of the outbox, then catches up on bus events committed
// since its cursor (while it was down or restarting).
func (o *outbox) load() error {
	id := o.ep.ID
	o.queue, o.loadedUpTo, o.pending, o.dead, o.inFlight = nil, 0, 0, 0, false
	o.intaking, o.again, o.fenced = false, false, false
	o.gc.Reset()
	if err := o.loadSecrets(); err != nil {
		return err
	}
	m, err := metaOrNew(o.st, id)
	if err != nil {
		return err
	}
	o.meta = m
	if err := o.st.scan(id, logQueue, 0, false, func(uint64, []byte) (bool, error) { o.pending++; return true, nil }); err != nil {
		return err
	}
	if err := o.st.scan(id, logDead, 0, false, func(uint64, []byte) (bool, error) { o.dead++; return true, nil }); err != nil {
		return err
	}
	if err := o.fill(); err != nil {
		return err
	}
	if o.sh.clusteredKind(o.ep.Kind) {
		// Cluster mode: every node's producer appends this endpoint's
		// events to its intake in etcd; move what waits there.
		o.intake()
		return nil
	}
	if !o.ep.Enabled {
		return nil
	}
	var missed []event
	err = o.sh.opts.Bus.Since(o.meta.Cursor, func(r *comms.Record) bool {
		if r.Source != "webhook:"+id && comms.MatchAny(o.ep.Events, r.Type) {
			missed = append(missed, event{id: r.ID, typ: r.Type, json: r.JSON})
		}
		return true
	})
	if err != nil {
		return err
	}
	o.enqueue(missed)
	return nil
}

func (o *outbox) loadSecrets() error {
	o.signer.Wipe()
	o.signer, o.headers = nil, nil
	if o.ep.HasSecret {
		err := o.sh.openSecret(&o.ep, secretName(o.ep.ID), func(secret []byte) error {
			s, err := NewSigner(string(secret))
			o.signer = s
			return err
		})
		if err != nil {
			return err
		}
	}
	if len(o.ep.HeaderNames) > 0 {
		err := o.sh.openSecret(&o.ep, headersName(o.ep.ID), func(raw []byte) error {
			return json.Unmarshal(raw, &o.headers)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// fill loads the next window of the outbox into memory when the queue is
// empty and messages wait on disk.
func (o *outbox) fill() error {
	if len(o.queue) > 0 || o.pending == 0 {
		return nil
	}
	return o.st.scan(o.ep.ID, logQueue, o.loadedUpTo+1, false, func(seq uint64, raw []byte) (bool, error) {
		var m message
		if err := json.Unmarshal(raw, &m); err != nil {
			return false, fmt.Errorf("webhook %s: outbox entry %d does not decode: %w", o.ep.ID, seq, err)
		}
		o.queue = append(o.queue, &m)
		o.loadedUpTo = seq
		return len(o.queue) < window, nil
	})
}

// admit puts messages just written to the outbox straight into memory,
// each only if nothing older waits on disk and the window has room (fill
// loads the rest later, in order).
func (o *outbox) admit(msgs []*message) {
	for _, m := range msgs {
		if o.loadedUpTo == m.Seq-1 && len(o.queue) < window {
			o.queue = append(o.queue, m)
			o.loadedUpTo = m.Seq
		}
	}
}

// enqueue turns committed bus events into outbox messages and writes them.
// The cursor moves in the same transaction, so after a crash an event is
// either in the outbox or will be caught up again, never both.
func (o *outbox) enqueue(evs []event) {
	if !o.ep.Enabled {
		return
	}
	var msgs []*message
	t := time.Now().UTC()
	for _, e := range evs {
		if e.id <= o.meta.Cursor {
			continue
		}
		o.meta.Cursor = e.id
		msgs = append(msgs, newMessage(e, t))
	}
	o.queueMessages(msgs, nil, nil)
}

// newMessage is bus event e as an outbox message, with a new webhook-id.
func newMessage(e event, t time.Time) *message {
	return &message{MsgID: "msg_" + strings.ReplaceAll(uuid.NewString(), "-", ""), EventID: e.id,
		Type: e.typ, Body: payload(e.typ, t, e.json), NextAt: t, Enqueued: t}
}

// queueMessages numbers msgs and writes them to the outbox tail, those
// beyond MaxPending to the dead letters, together with extra writes (the
// intake keys they came from), then runs done.
func (o *outbox) queueMessages(msgs []*message, extra []wr, done func()) {
	var queued, overflow []*message
	for _, m := range msgs {
		m.Seq = o.meta.NextSeq
		o.meta.NextSeq++
		if o.pending+len(queued) >= o.sh.opts.MaxPending {
			m.LastError = fmt.Sprintf("outbox full (%d pending)", o.sh.opts.MaxPending)
			overflow = append(overflow, m)
			continue
		}
		queued = append(queued, m)
	}
	if len(queued) == 0 && len(overflow) == 0 && len(extra) == 0 {
		if done != nil {
			done()
		}
		return
	}
	o.pending += len(queued)
	o.dead += len(overflow)
	w := extra
	for _, m := range queued {
		w = append(w, putWr(logQueue, m.Seq, m))
	}
	for _, m := range overflow {
		w = append(w, putWr(logDead, m.Seq, deadLetter(m)))
	}
	o.write(op{w: w, done: func() {
		o.admit(queued)
		if len(overflow) > 0 {
			o.sh.m.dead.Add(float64(len(overflow)))
			o.sh.log.Warn().Str("webhook", o.ep.ID).Int("messages", len(overflow)).Msg("webhook outbox full: events dead-lettered")
		}
		if done != nil {
			done()
		}
	}})
}

// payload is the Standard Webhooks body: {"type","timestamp","data"},
// where data is the whole bus event.
func payload(typ string, t time.Time, data []byte) json.RawMessage {
	b := make([]byte, 0, len(data)+96)
	b = append(b, `{"type":`...)
	tb, _ := json.Marshal(typ)
	b = append(b, tb...)
	b = append(b, `,"timestamp":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

func deadLetter(m *message) DeadLetter {
	return DeadLetter{MessageID: m.MsgID, EventID: m.EventID, EventType: m.Type, Attempts: m.Attempts,
		LastStatus: m.LastStatus, LastError: m.LastError, DeadAt: time.Now().UTC().Format(time.RFC3339Nano), Payload: m.Body}
}

// write queues an op; ops commit in order, batched, with the bookkeeping.
func (o *outbox) write(w op) {
	o.gc.Add(w)
	o.flush()
}

// flush starts the next commit unless one is in flight: everything queued
// so far, and the bookkeeping as it is now, last (ops change it as they
// are made, so it is saved with the batch that carries them).
func (o *outbox) flush() {
	if o.gc.InFlight() || o.gc.Pending() == 0 {
		return
	}
	m := o.meta
	o.gc.Add(op{w: []wr{{log: logMeta, meta: &m}}})
	o.gc.Flush(o.send)
}

// kick starts the next delivery if one is due, or arms a timer for it.
func (o *outbox) kick() {
	if !o.ep.Enabled || o.inFlight || o.fenced {
		return
	}
	if len(o.queue) == 0 {
		if err := o.fill(); err != nil {
			panic(err)
		}
		if len(o.queue) == 0 {
			return
		}
	}
	head := o.queue[0]
	if wait := time.Until(head.NextAt); wait > 0 {
		if o.timer == nil || head.NextAt.Before(o.timerAt) {
			if o.timer != nil {
				o.timer.Stop()
			}
			self, sys := o.self, o.sys
			o.timerAt = head.NextAt
			o.timer = time.AfterFunc(wait, func() { sys.Root.Send(self, &tick{}) })
		}
		return
	}
	o.inFlight = true
	ctx, client, url, signer, headers, ua, self, sys := o.ctx, o.sh.client, o.ep.URL, o.signer, o.headers, o.sh.opts.UserAgent, o.self, o.sys
	msg := *head
	go func() {
		body, hs := []byte(msg.Body), headers
		if msg.Raw != nil {
			body, hs = msg.Raw, make(map[string]string, len(headers)+len(msg.Headers))
			for k, v := range headers {
				hs[k] = v
			}
			for k, v := range msg.Headers {
				hs[k] = v
			}
		}
		r := post(ctx, client, url, msg.MsgID, body, signer, hs, ua)
		sys.Root.Send(self, &attempted{gen: ctx, msg: &msg, attempt: Attempt{StatusCode: r.status, LatencyMS: r.latency.Milliseconds()},
			outcome: classify(r), err: r.err, retryAfter: r.retryAfter})
	}()
}

// attempted records one attempt's outcome and schedules what follows.
func (o *outbox) attempted(m *attempted) {
	if m.gen != o.ctx || o.ctx.Err() != nil {
		return // from before a restart, or stopping
	}
	msg := m.msg
	msg.Attempts++
	at := time.Now().UTC()
	a := Attempt{ID: o.meta.NextAttempt, MessageID: msg.MsgID, EventID: msg.EventID, EventType: msg.Type,
		Attempt: msg.Attempts, StatusCode: m.attempt.StatusCode, LatencyMS: m.attempt.LatencyMS, At: at.Format(time.RFC3339Nano)}
	o.meta.NextAttempt++
	o.sh.m.latency.Observe(float64(m.attempt.LatencyMS) / 1000)
	if m.err != nil {
		a.Error = m.err.Error()
		msg.LastError, msg.LastStatus = a.Error, a.StatusCode
	}
	attID := a.ID
	var w []wr
	var after func()
	bus, source, host := o.sh.opts.Bus, "webhook:"+o.ep.ID, urlHost(o.ep.URL)
	switch m.outcome {
	case delivered:
		a.Outcome = "delivered"
		o.queue = o.queue[1:]
		o.pending--
		if o.meta.ConsecutiveDead != 0 {
			o.meta.ConsecutiveDead = 0
		}
		o.sh.m.delivered.Inc()
		w = []wr{delWr(logQueue, msg.Seq)}
	case gone:
		// 410: the receiver says this endpoint is gone for good. The
		// message stays queued, so re-enabling the endpoint resumes it.
		a.Outcome = "disabled"
		o.sh.m.failed.Inc()
		reason := "the receiver answered 410 Gone"
		o.disable(reason)
		after = func() {
			bus.Publish("webhook.disabled", source, host, map[string]any{"webhook_id": o.ep.ID, "reason": reason})
		}
	default:
		o.sh.m.failed.Inc()
		n := msg.Attempts
		if n <= len(o.sh.opts.Backoff) {
			d := o.sh.opts.Backoff[n-1]
			delay := kernel.Spread(d-d/5, d+d/5) // ±20%
			if m.retryAfter > delay {
				delay = m.retryAfter
			}
			msg.NextAt = at.Add(delay)
			a.Outcome, a.NextAttemptAt = "retrying", msg.NextAt.Format(time.RFC3339Nano)
			o.queue[0] = msg
			w = []wr{putWr(logQueue, msg.Seq, msg)}
			after = func() {
				bus.Publish("webhook.delivery_failed", source, host, map[string]any{"webhook_id": o.ep.ID,
					"message_id": msg.MsgID, "event_type": msg.Type, "attempt": n, "status_code": a.StatusCode,
					"error": a.Error, "next_attempt_at": a.NextAttemptAt})
			}
			break
		}
		a.Outcome = "dead_lettered"
		o.queue = o.queue[1:]
		o.pending--
		o.dead++
		o.meta.ConsecutiveDead++
		o.sh.m.dead.Inc()
		dlv := deadLetter(msg)
		w = []wr{delWr(logQueue, msg.Seq), putWr(logDead, msg.Seq, dlv)}
		disableNow := o.sh.opts.DisableAfter > 0 && o.meta.ConsecutiveDead >= o.sh.opts.DisableAfter
		reason := fmt.Sprintf("%d consecutive messages exhausted their retries", o.meta.ConsecutiveDead)
		if disableNow {
			o.disable(reason)
		}
		after = func() {
			bus.Publish("webhook.dead_lettered", source, host, map[string]any{"webhook_id": o.ep.ID,
				"message_id": msg.MsgID, "event_type": msg.Type, "attempts": n, "last_error": a.Error})
			if disableNow {
				bus.Publish("webhook.disabled", source, host, map[string]any{"webhook_id": o.ep.ID, "reason": reason})
			}
		}
	}
	w = append(w, putWr(logAttempts, attID, a))
	if attID > attemptsKept {
		w = append(w, delWr(logAttempts, attID-attemptsKept))
	}
	o.write(op{
		w: w,
		done: func() {
			o.inFlight = false
			if after != nil {
				after()
			}
		},
	})
}

func (o *outbox) disable(reason string) {
	o.ep.Enabled = false
	o.ep.DisabledReason = reason
	o.sh.log.Warn().Str("webhook", o.ep.ID).Str("reason", reason).Msg("webhook endpoint disabled")
}

func (o *outbox) report() {
	o.sys.Root.Send(o.parent, &stats{id: o.ep.ID, pending: o.pending, dead: o.dead, enabled: o.ep.Enabled,
		disabledReason: o.ep.DisabledReason, consecutiveDead: o.meta.ConsecutiveDead})
}

func (o *outbox) reconfigure(m *reconfigure) {
	wasEnabled := o.ep.Enabled
	o.ep = m.ep
	if m.setSecret || m.setHeaders {
		if err := o.loadSecrets(); err != nil {
			panic(err)
		}
	}
	if o.ep.Enabled && !wasEnabled {
		// Events published while the endpoint was disabled are not sent.
		o.meta.Cursor = max(o.meta.Cursor, m.latest)
		o.meta.ConsecutiveDead = 0
		o.write(op{})
	}
	o.report()
	o.kick()
}

func (o *outbox) deliveries(limit int) []Attempt { return readAttempts(o.st, o.ep.ID, limit) }

func (o *outbox) deadLetters(limit int) []DeadLetter { return readDeadLetters(o.st, o.ep.ID, limit) }

// readAttempts is endpoint id's attempt history, newest first.
func readAttempts(st backend, id string, limit int) []Attempt {
	out := []Attempt{}
	_ = st.scan(id, logAttempts, 0, true, func(_ uint64, raw []byte) (bool, error) {
		var a Attempt
		if json.Unmarshal(raw, &a) == nil {
			out = append(out, a)
		}
		return len(out) < limit, nil
	})
	return out
}

// readDeadLetters is endpoint id's dead-letter list, newest first.
func readDeadLetters(st backend, id string, limit int) []DeadLetter {
	out := []DeadLetter{}
	_ = st.scan(id, logDead, 0, true, func(_ uint64, raw []byte) (bool, error) {
		var d DeadLetter
		if json.Unmarshal(raw, &d) == nil {
			out = append(out, d)
		}
		return len(out) < limit, nil
	})
	return out
}

// replay moves dead letters back to the tail of the outbox with their
// attempts reset and their webhook-id kept.
func (o *outbox) replay(c actor.Context, m *Replay) {
	want := map[string]bool{}
	for _, id := range m.IDs {
		want[id] = true
	}
	type found struct {
		oldSeq uint64
		msg    *message
	}
	var picked []found
	err := o.st.scan(o.ep.ID, logDead, 0, false, func(seq uint64, raw []byte) (bool, error) {
		var d DeadLetter
		if err := json.Unmarshal(raw, &d); err != nil {
			return false, err
		}
		if len(want) > 0 && !want[d.MessageID] {
			return true, nil
		}
		delete(want, d.MessageID)
		picked = append(picked, found{oldSeq: seq, msg: &message{MsgID: d.MessageID, EventID: d.EventID, Type: d.EventType, Body: d.Payload}})
		return true, nil
	})
	if err != nil {
		c.Respond(err)
		return
	}
	res := &ReplayResult{Replayed: len(picked)}
	for id := range want {
		res.Missing = append(res.Missing, id)
	}
	slices.Sort(res.Missing)
	if len(m.IDs) > 0 && len(picked) == 0 {
		c.Respond(kernel.NotFound("none of the given ids is a dead letter of webhook %s", o.ep.ID))
		return
	}
	t := time.Now().UTC()
	msgs := make([]*message, len(picked))
	for i, p := range picked {
		p.msg.Seq, p.msg.NextAt, p.msg.Enqueued = o.meta.NextSeq, t, t
		o.meta.NextSeq++
		msgs[i] = p.msg
	}
	o.pending += len(msgs)
	o.dead -= len(msgs)
	sender := c.Sender()
	var w []wr
	for i, p := range picked {
		w = append(w, delWr(logDead, p.oldSeq), putWr(logQueue, msgs[i].Seq, msgs[i]))
	}
	o.write(op{
		w: w,
		done: func() {
			o.admit(msgs)
			o.sys.Root.Send(sender, res)
		},
	})
}

// test sends a signed test event at once, outside the queue, whether or
// not the endpoint is enabled (so a fixed receiver can be checked before
// re-enabling).
func (o *outbox) test(c actor.Context) {
	sender, sys := c.Sender(), o.sys
	ctx, client, url, signer, headers, ua, id := o.ctx, o.sh.client, o.ep.URL, o.signer, o.headers, o.sh.opts.UserAgent, o.ep.ID
	go func() {
		t := time.Now().UTC()
		data, _ := json.Marshal(map[string]any{"webhook_id": id, "message": "This is a test event from fangd."})
		msgID := "msg_test_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		r := post(ctx, client, url, msgID, payload("webhook.test", t, data), signer, headers, ua)
		if r.status == 0 {
			// The network's own code (host_not_found, connection_refused,
			// upstream_timeout, tls_failed ...) tells the operator what to fix.
			if ke := kernel.AsError(r.err); ke != nil {
				sys.Root.Send(sender, &kernel.Error{Kind: ke.Kind, Code: ke.Code, Msg: "test delivery failed: " + ke.Msg})
				return
			}
			sys.Root.Send(sender, kernel.Errorf(kernel.KindUpstream, "webhook_test_failed", "test delivery failed: %v", r.err))
			return
		}
		sys.Root.Send(sender, &TestResult{Status: "sent", ResponseStatus: r.status, LatencyMS: r.latency.Milliseconds(), WebhookID: id, MessageID: msgID})
	}()
}

// urlHost is what events say about an endpoint's URL: its host only, since
// paths and queries may carry tokens.
func urlHost(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return ""
}
