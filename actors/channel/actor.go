package channel

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/neterr"
)

const (
	// maxTurns is how many chats of one channel may have an agent turn
	// running at once (turns within a chat are always one at a time).
	maxTurns = 16
	// maxInflight is how many chats may have a send in flight at once.
	maxInflight = 4
	// turnAttempts bounds retries of a turn whose agent was unavailable.
	turnAttempts = 3
	sendTimeout  = 30 * time.Second
	testTimeout  = 20 * time.Second
	probeTimeout = 15 * time.Second
	// stableAfter is how long a link must stay up before the reconnect
	// backoff starts again from its first step.
	stableAfter = time.Minute
	// maxChatLimiters bounds the per-chat pacing state.
	maxChatLimiters = 10000
	turnTimeout     = 10 * time.Minute
)

// TestText is the message POST /api/channels/{name}/test sends.
const TestText = "fangd test message: your channel is connected!"

// channelActor is channel/<name>: it owns one configured channel's adapter
// and queues. Every goroutine it starts is tracked in wg and stopped through
// base (cancelled on stop and restart); they talk back by sending to self.
type channelActor struct {
	rt   *runtime
	name string
	wg   *sync.WaitGroup
	self *actor.PID
	log  zerolog.Logger

	base       context.Context
	baseCancel context.CancelFunc

	rec     record
	cfg     *Config
	adapter Adapter
	caps    Capabilities
	global  *rate.Limiter
	chatLim map[string]*rate.Limiter

	status  Status
	gen     int
	cancel  context.CancelFunc // the current Run
	attempt int
	upSince time.Time
	traffic time.Time
	// degraded is the adapter's last Host.Degraded report on this link;
	// published as state "degraded" while the link is connected.
	degraded string
	probing  bool
	watchdog time.Duration
	timers   []*time.Timer

	seq       *seqSource
	turnQ     map[string][]*inItem // per chat, in order; the head may be running
	turnBusy  map[string]bool
	turnAfter map[string]time.Time // chat -> no turn before (after a failure)
	running   int
	pending   int // inbox items not finished

	outbox      []*outItem
	inflight    map[string]bool
	pausedUntil time.Time // a 429 pauses the whole account
	kickAt      time.Time
}

func newChannelActor(rt *runtime, name string, wg *sync.WaitGroup) *channelActor {
	return &channelActor{rt: rt, name: name, wg: wg,
		log: rt.log.With().Str("channel", name).Logger()}
}

func (a *channelActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		a.started(c)
	case *actor.Stopping, *actor.Restarting:
		a.shutdown()
	case *reconfigure:
		a.stopRun()
		a.attempt = 0
		a.status.LastError, a.status.LastErrorCode = "", ""
		a.status.NextRetryAt = nil
		a.load()
		a.publish(c)
		a.pump()
	case *connected:
		if m.gen != a.gen {
			return
		}
		now := time.Now()
		a.status.State = StateConnected
		a.status.LastError, a.status.LastErrorCode = "", ""
		a.status.NextRetryAt = nil
		a.status.ConnectedSince = &now
		id := m.id
		a.status.Identity = &id
		a.upSince, a.traffic = now, now
		a.log.Info().Str("as", id.Name).Msg("channel connected")
		a.publish(c)
		a.pump()
	case *runEnded:
		a.runEnded(c, m)
	case *reconnectNow:
		if m.gen == a.gen && a.status.State == StateBackoff {
			a.status.Restarts++
			a.rt.metrics.reconnects.WithLabelValues(a.rec.Adapter).Inc()
			a.connect()
			a.publish(c)
		}
	case *alive:
		if m.gen == a.gen {
			a.traffic = time.Now()
		}
	case *degraded:
		if m.gen == a.gen && a.status.State == StateConnected && m.msg != a.degraded {
			a.degraded = m.msg
			a.status.LastError = m.msg
			a.publish(c)
		}
	case *watchdogTick:
		a.checkWatchdog()
		a.armWatchdog()
	case *probeDone:
		a.probeDone(c, m)
	case *inbound:
		if m.gen != a.gen {
			m.done <- errors.New("connection was replaced")
			return
		}
		a.traffic = time.Now()
		a.accept(m.msgs, m.cursor, func(err error) { m.done <- err })
		a.publish(c)
	case *webhookCall:
		a.webhook(c, m)
	case *turnDone:
		a.turnDone(c, m)
	case *inboxStored:
		for _, it := range m.items {
			it.pending = false
		}
		a.pump()
	case *inboxFailed:
		a.inboxFailed(c, m)
	case *kick:
		a.kickAt = time.Time{}
		a.startTurns()
		a.pump()
	case *sendRequest:
		a.enqueue(m)
	case *enqueued:
		a.outbox = append(a.outbox, m.items...)
		a.status.OutboxPending = len(a.outbox)
		a.publish(c)
		a.pump()
	case *sendDone:
		a.sendDone(c, m)
	case *testRequest:
		a.test(m)
	}
}

func (a *channelActor) started(c actor.Context) {
	a.self = c.Self()
	a.base, a.baseCancel = context.WithCancel(context.Background())
	a.turnQ = map[string][]*inItem{}
	a.turnBusy = map[string]bool{}
	a.turnAfter = map[string]time.Time{}
	a.inflight = map[string]bool{}
	a.chatLim = map[string]*rate.Limiter{}
	in, out, err := a.rt.queues.load(a.name)
	if err != nil {
		panic(fmt.Errorf("load queues of channel %s: %w", a.name, err))
	}
	a.seq = &seqSource{rt: a.rt, name: a.name}
	if err := a.seq.init(maxSeq(in, out)); err != nil {
		panic(fmt.Errorf("load sequence of channel %s: %w", a.name, err))
	}
	for _, it := range in {
		a.turnQ[it.Msg.ChatID] = append(a.turnQ[it.Msg.ChatID], it)
	}
	a.pending = len(in)
	a.outbox = out
	a.status.InboxPending, a.status.OutboxPending = len(in), len(out)
	a.load()
	a.armWatchdog()
	a.startTurns()
	a.publish(c)
}

// load reads the record and secrets, builds the adapter and, if enabled,
// connects. A configuration that no longer builds is an error state.
func (a *channelActor) load() {
	a.adapter = nil
	rec, err := a.rt.records.Get(a.name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			a.fail("configuration is missing from the store")
			return
		}
		panic(fmt.Errorf("load channel %s: %w", a.name, err))
	}
	a.rec = rec
	spec, ok := Lookup(rec.Adapter)
	build := a.rt.builders[rec.Adapter]
	if !ok || build == nil {
		a.status.State = StateUnsupported
		a.status.LastError = "adapter " + rec.Adapter + " is not built into this fangd"
		return
	}
	secrets, err := a.rt.loadSecrets(&rec)
	if err != nil {
		a.fail("reading secrets: " + err.Error())
		return
	}
	a.cfg = &Config{Name: a.name, Adapter: rec.Adapter, Spec: spec, Values: rec.Values, Lists: rec.Lists,
		Secrets: secrets, Log: a.log, Net: a.rt.net}
	// Stored by an earlier run, possibly under another allow_hosts: a URL
	// the policy refuses now is never dialled.
	if err := checkURLs(a.cfg); err != nil {
		a.fail(kernel.PublicMessage(err))
		a.status.LastErrorCode = kernel.AsError(err).Code
		return
	}
	ad, err := build(a.cfg)
	if err != nil {
		a.fail("invalid configuration: " + err.Error())
		return
	}
	a.adapter = ad
	a.caps = ad.Capabilities()
	a.global = nil
	if p := a.caps.Pace; p.PerSecond > 0 {
		a.global = rate.NewLimiter(rate.Limit(p.PerSecond), max(p.Burst, 1))
	}
	a.chatLim = map[string]*rate.Limiter{}
	a.watchdog = time.Duration(a.cfg.Int(FieldWatchdog)) * time.Second
	if !a.cfg.Enabled() {
		a.status.State = StateStopped
		return
	}
	a.connect()
}

func (a *channelActor) fail(msg string) {
	a.status.State = StateError
	a.status.LastError = msg
	a.status.ConnectedSince = nil
	a.status.NextRetryAt = nil
	a.log.Error().Str("error", msg).Msg("channel stopped with an error")
}

// connect starts a new Run of the adapter.
func (a *channelActor) connect() {
	a.stopRun()
	a.gen++
	gen := a.gen
	ctx, cancel := context.WithCancel(a.base)
	a.cancel = cancel
	a.status.State = StateConnecting
	a.degraded = ""
	a.status.ConnectedSince = nil
	a.upSince = time.Time{}
	h := &host{rt: a.rt, self: a.self, gen: gen, name: a.name, log: a.log}
	ad, root := a.adapter, a.rt.k.Root
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		err := safeRun(func() error { return ad.Run(ctx, h) })
		root.Send(h.self, &runEnded{gen: gen, err: err})
	}()
}

// safeRun turns an adapter panic into an error: a bug in one adapter
// must not take the daemon down.
func safeRun(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("adapter panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return fn()
}

func (a *channelActor) stopRun() {
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	a.gen++ // whatever the old Run still sends is stale
}

func (a *channelActor) shutdown() {
	a.stopRun()
	for _, t := range a.timers {
		t.Stop()
	}
	a.timers = nil
	if a.baseCancel != nil {
		a.baseCancel()
	}
}

func (a *channelActor) runEnded(c actor.Context, m *runEnded) {
	if m.gen != a.gen {
		return
	}
	a.cancel = nil
	err := m.err
	if err == nil {
		err = errors.New("the platform closed the connection")
	}
	a.status.ConnectedSince = nil
	a.status.LastError, a.status.LastErrorCode = linkError(err)
	if IsPermanent(err) {
		a.fail(a.status.LastError)
		a.publish(c)
		return
	}
	if !a.upSince.IsZero() && time.Since(a.upSince) > stableAfter {
		a.attempt = 0
	}
	a.attempt++
	delay := a.rt.backoff.Jittered(a.attempt)
	if hint := RetryHint(err); hint > delay {
		delay = hint
	}
	next := a.rt.clock.Now().Add(delay)
	a.status.State = StateBackoff
	a.status.NextRetryAt = &next
	a.log.Warn().Err(err).Dur("retry_in", delay).Int("attempt", a.attempt).Msg("channel link failed; reconnecting")
	a.schedule(delay, &reconnectNow{gen: a.gen})
	a.publish(c)
}

// schedule sends msg to self after d. Timers are not tracked one by one:
// every message they carry is checked against the current generation or
// state, and shutdown cancels base so late ones find nothing to do.
func (a *channelActor) schedule(d time.Duration, msg any) {
	self, root, base := a.self, a.rt.k.Root, a.base
	a.rt.clock.AfterFunc(d, func() {
		if base.Err() == nil {
			root.Send(self, msg)
		}
	})
}

// --- watchdog ---

func (a *channelActor) armWatchdog() {
	every := 30 * time.Second
	if a.watchdog > 0 {
		every = min(max(a.watchdog/3, 100*time.Millisecond), 30*time.Second)
	}
	a.schedule(every, &watchdogTick{})
}

// checkWatchdog probes the platform when a connected link has been quiet
// for longer than watchdog_secs: a websocket can stay open while nothing
// arrives ("linked but deaf").
func (a *channelActor) checkWatchdog() {
	if a.watchdog <= 0 || a.probing || a.status.State != StateConnected || a.adapter == nil {
		return
	}
	if time.Since(a.traffic) < a.watchdog {
		return
	}
	a.probing = true
	gen, ad, self, root, base := a.gen, a.adapter, a.self, a.rt.k.Root, a.base
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(base, probeTimeout)
		defer cancel()
		_, err := ad.Probe(ctx)
		root.Send(self, &probeDone{gen: gen, err: err})
	}()
}

func (a *channelActor) probeDone(c actor.Context, m *probeDone) {
	a.probing = false
	if m.gen != a.gen || a.status.State != StateConnected {
		return
	}
	if m.err == nil {
		a.traffic = time.Now() // the platform answers; the quiet is real quiet
		return
	}
	quiet := time.Since(a.traffic).Round(time.Second)
	a.log.Warn().Err(m.err).Dur("quiet", quiet).Msg("no traffic and the probe failed: reconnecting")
	gen := a.gen
	a.stopRun()
	// Report it as the Run failing, so backoff and status are the same.
	a.gen = gen
	a.runEnded(c, &runEnded{gen: gen, err: classifiedLike(m.err, fmt.Errorf("no traffic for %s and the probe failed: %w", quiet, m.err))})
}

// classifiedLike keeps orig's class on the wrapped error.
func classifiedLike(orig, wrapped error) error {
	switch {
	case IsPermanent(orig):
		return Permanent(wrapped)
	case RetryHint(orig) > 0:
		return RetryAfter(wrapped, RetryHint(orig))
	}
	return wrapped
}

// --- inbound ---

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
	a.pending += len(items)
	a.status.InboxPending = a.pending
	for _, it := range items {
		it.pending = true
	}
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
	for _, it := range items {
		a.turnQ[it.Msg.ChatID] = append(a.turnQ[it.Msg.ChatID], it)
	}
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
	dropped := 0
	for _, it := range m.items {
		it.pending = false // a reply already made goes out
		chat := it.Msg.ChatID
		q := a.turnQ[chat]
		for i, x := range q {
			if x == it && !(i == 0 && a.turnBusy[chat]) {
				a.turnQ[chat] = append(q[:i:i], q[i+1:]...)
				dropped++
				break
			}
		}
		if len(a.turnQ[chat]) == 0 && !a.turnBusy[chat] {
			delete(a.turnQ, chat)
		}
	}
	a.pending -= dropped
	a.status.MessagesIn -= uint64(dropped)
	a.status.InboxPending = a.pending
	a.status.LastError = "storing inbound messages failed: " + m.err.Error()
	a.publish(c)
}

func (a *channelActor) webhook(c actor.Context, m *webhookCall) {
	if a.adapter == nil {
		m.reply <- webhookResult{err: kernel.Errorf(kernel.KindUnavailable, "channel_not_running",
			"channel %s is not running: %s", a.name, a.status.LastError)}
		return
	}
	wr, ok := a.adapter.(WebhookReceiver)
	if !ok {
		m.reply <- webhookResult{err: kernel.NotFound("channel %s (%s) does not take webhooks", a.name, a.rec.Adapter)}
		return
	}
	if !a.cfg.Enabled() {
		m.reply <- webhookResult{err: kernel.Errorf(kernel.KindUnavailable, "channel_disabled", "channel %s is disabled", a.name)}
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
		m.reply <- webhookResult{err: err}
		return
	}
	a.traffic = time.Now()
	a.accept(msgs, nil, func(err error) {
		if err != nil {
			m.reply <- webhookResult{err: err}
			return
		}
		m.reply <- webhookResult{resp: resp}
	})
	a.publish(c)
}

// startTurns starts an agent turn for each chat that has work, is idle and
// is not pausing after a failure, up to maxTurns at once.
func (a *channelActor) startTurns() {
	now := time.Now()
	for chat, q := range a.turnQ {
		if a.running >= maxTurns {
			return
		}
		if len(q) == 0 || a.turnBusy[chat] {
			continue
		}
		if t, ok := a.turnAfter[chat]; ok && now.Before(t) {
			continue
		}
		a.turnBusy[chat] = true
		a.running++
		a.runTurn(q[0])
	}
}

// runTurn publishes the message, asks the bound agent and puts the reply,
// split to the platform's limit, in the outbox: all in a goroutine.
func (a *channelActor) runTurn(it *inItem) {
	name, agents, ref := a.name, a.rt.agents, ""
	if a.cfg != nil {
		ref = a.cfg.AgentName()
	}
	if id := a.rec.AgentID; id != "" {
		ref = id // resolved at configure time; survives a rename
	}
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
	a.running--
	a.turnBusy[chat] = false
	if m.retry {
		m.item.Attempts++
		d := a.rt.backoff.Jittered(m.item.Attempts + 3)
		a.turnAfter[chat] = time.Now().Add(d)
		a.status.LastError = "agent turn failed, retrying: " + kernel.PublicMessage(m.err)
		a.schedule(d, &kick{})
	} else {
		delete(a.turnAfter, chat)
		q := a.turnQ[chat]
		if len(q) > 0 && q[0] == m.item {
			q = q[1:]
		}
		if len(q) == 0 {
			delete(a.turnQ, chat)
			delete(a.turnBusy, chat)
		} else {
			a.turnQ[chat] = q
		}
		a.pending--
		a.status.InboxPending = a.pending
		if m.err != nil {
			a.status.LastError = "agent turn failed: " + kernel.PublicMessage(m.err)
			a.log.Warn().Str("chat", chat).Str("error", kernel.PublicMessage(m.err)).Msg("agent turn failed; message not answered")
		}
		a.outbox = append(a.outbox, m.out...)
		a.status.OutboxPending = len(a.outbox)
	}
	a.startTurns()
	a.pump()
	a.publish(c)
}

// --- outbound ---

// runCommands answers chat commands in a goroutine: each answer goes to
// the outbox (durably) before done is called, so the platform is not told
// a command was taken before its answer is safe. A command is not kept in
// the inbox: after a crash between the two it is simply not answered, and
// the user sends it again.
func (a *channelActor) runCommands(cmds []Inbound, done func(error)) {
	cmd, name, self, root, base := a.rt.commands, a.name, a.self, a.rt.k.Root, a.base
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
			reply := make(chan sendResult, 1)
			root.Send(self, &sendRequest{chatID: m.ChatID, text: answer, from: "commands", replyTo: m.MessageID, threadID: m.ThreadID, reply: reply})
			select {
			case r := <-reply:
				if r.err != nil && first == nil {
					first = r.err
				}
			case <-base.Done():
			}
		}
		done(first)
	}()
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
			m.reply <- sendResult{err: err}
			return
		}
		ids := make([]string, len(items))
		for i, it := range items {
			ids[i] = fmt.Sprintf("%s-%d", name, it.Seq)
		}
		root.Send(self, &enqueued{items: items})
		m.reply <- sendResult{ids: ids}
	}()
}

// pump starts sends for the oldest message of each chat that is free, up
// to maxInflight, while the link is up (or, for a LinkFreeSender, while it
// is being re-established).
func (a *channelActor) pump() {
	if !a.canSend() || len(a.outbox) == 0 {
		return
	}
	now := a.rt.clock.Now()
	if now.Before(a.pausedUntil) {
		a.kickLater(a.pausedUntil.Sub(now))
		return
	}
	seen := map[string]bool{}
	for _, it := range a.outbox {
		if len(a.inflight) >= maxInflight {
			return
		}
		chat := it.Msg.ChatID
		if seen[chat] {
			continue
		}
		seen[chat] = true // later messages of this chat wait for this one
		if a.inflight[chat] {
			continue
		}
		if it.held() {
			continue // inboxStored pumps again
		}
		if wait := it.notBefore().Sub(now); wait > 0 {
			a.kickLater(wait)
			continue
		}
		a.inflight[chat] = true
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

func (a *channelActor) kickLater(d time.Duration) {
	now := a.rt.clock.Now()
	at := now.Add(d)
	if !a.kickAt.IsZero() && a.kickAt.Before(at) && a.kickAt.After(now) {
		return
	}
	a.kickAt = at
	a.schedule(d, &kick{})
}

func (a *channelActor) chatLimiter(chat string) *rate.Limiter {
	p := a.caps.Pace
	if p.ChatInterval <= 0 {
		return nil
	}
	l, ok := a.chatLim[chat]
	if !ok {
		if len(a.chatLim) >= maxChatLimiters {
			a.chatLim = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Every(p.ChatInterval), max(p.ChatBurst, 1))
		a.chatLim[chat] = l
	}
	return l
}

func (a *channelActor) send(it *outItem) {
	ad, global, chatLim := a.adapter, a.global, a.chatLimiter(it.Msg.ChatID)
	q, name, self, root, base, rt, adapterName, epoch := a.rt.queues, a.name, a.self, a.rt.k.Root, a.base, a.rt, a.rec.Adapter, a.rec.Epoch
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
			rt.publishEvent(Event{Type: EventSent, Source: "channel:" + name + ":" + it.Msg.ChatID, Detail: map[string]any{
				"channel": name, "adapter": adapterName, "chat_id": it.Msg.ChatID, "message_id": id, "source": it.Source,
				"length": len([]rune(it.Msg.Text))}})
		}
		root.Send(self, &sendDone{item: it, messageID: id, err: err})
	}()
}

func (a *channelActor) sendDone(c actor.Context, m *sendDone) {
	chat := m.item.Msg.ChatID
	delete(a.inflight, chat)
	switch {
	case m.err == nil:
		a.dropOut(m.item)
		a.status.MessagesOut++
		a.rt.metrics.out.WithLabelValues(a.rec.Adapter).Inc()
	case IsPermanent(m.err):
		// Credentials stopped working: the message stays queued for when
		// the channel is reconfigured.
		a.stopRun()
		a.fail(m.err.Error())
	case IsRejected(m.err):
		a.dropOut(m.item)
		a.status.MessagesFailed++
		a.rt.metrics.failed.WithLabelValues(a.rec.Adapter).Inc()
		a.status.LastError = fmt.Sprintf("message to %s rejected: %s", chat, m.err.Error())
		a.log.Warn().Str("chat", chat).Err(m.err).Msg("platform rejected a message; dropped")
	default:
		m.item.attempts++
		d := a.rt.backoff.Jittered(m.item.attempts)
		if hint := RetryHint(m.err); hint > 0 {
			d = max(d, hint)
			a.pausedUntil = a.rt.clock.Now().Add(hint)
		}
		m.item.retryAt = a.rt.clock.Now().Add(d)
		msg, code := linkError(m.err)
		a.status.LastError, a.status.LastErrorCode = "sending failed, will retry: "+msg, code
		a.kickLater(d)
	}
	a.status.OutboxPending = len(a.outbox)
	a.pump()
	a.publish(c)
}

func (a *channelActor) dropOut(it *outItem) {
	for i, x := range a.outbox {
		if x == it {
			a.outbox = append(a.outbox[:i], a.outbox[i+1:]...)
			return
		}
	}
}

// test answers POST /api/channels/{name}/test from a goroutine.
func (a *channelActor) test(m *testRequest) {
	if a.adapter == nil {
		m.reply <- testResult{err: kernel.Errorf(kernel.KindPreconditionFailed, "not_ready",
			"channel %s has no working configuration: %s", a.name, a.status.LastError)}
		return
	}
	ad, name, base, display := a.adapter, a.name, a.base, a.cfg.Spec.DisplayName
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(base, testTimeout)
		defer cancel()
		if m.chatID == "" {
			id, err := ad.Probe(ctx)
			if err != nil {
				m.reply <- testResult{err: upstream(display, err)}
				return
			}
			m.reply <- testResult{res: &TestResult{Status: "ok", Channel: name, Identity: &id,
				Message: fmt.Sprintf("Connected to %s as %s. Provide chat_id or channel_id to send a test message.", display, id.Name)}}
			return
		}
		msgID, err := ad.Send(ctx, Outbound{ChatID: m.chatID, Text: TestText})
		if err != nil {
			m.reply <- testResult{err: upstream(display, err)}
			return
		}
		m.reply <- testResult{res: &TestResult{Status: "ok", Channel: name, ChatID: m.chatID, MessageID: msgID,
			Message: fmt.Sprintf("Test message sent to %s chat %s.", display, m.chatID)}}
	}()
}

// upstream is a failed test call as the API answers it: a network failure
// with its own code (host_not_found, connection_refused, tls_failed ...),
// anything else as platform_error.
func upstream(display string, err error) error {
	if neterr.Network(err) {
		e := *neterr.Classify(err, display)
		e.Err = nil
		return &e
	}
	return kernel.Errorf(kernel.KindUpstream, "platform_error", "%s: %s", display, err.Error())
}

// linkError is what the status says about a failure: for a network
// failure its code, and its cause instead of the text when the text comes
// from an HTTP client and so names the URL (a Telegram URL holds the bot
// token); otherwise the adapter's own text, which may say what to do about
// it (an email server's private CA: set ca_cert_pem).
func linkError(err error) (msg, code string) {
	if !neterr.Network(err) {
		return err.Error(), ""
	}
	code, cause := neterr.Cause(err)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return cause, code
	}
	return err.Error(), code
}

// publish reports the status to the supervisor.
func (a *channelActor) publish(c actor.Context) {
	if p := c.Parent(); p != nil {
		st := a.status
		if st.State == StateConnected && a.degraded != "" {
			st.State = StateDegraded
		}
		c.Send(p, &statusChanged{name: a.name, status: st})
	}
}

func (rt *runtime) publishEvent(ev Event) {
	if rt.bus != nil {
		rt.bus.Publish(ev)
	}
}

// --- host: the runtime as Run sees it ---

type host struct {
	rt        *runtime
	self      *actor.PID
	gen       int
	name      string
	log       zerolog.Logger
	lastAlive atomic.Int64
}

func (h *host) Connected(id Identity) { h.rt.k.Root.Send(h.self, &connected{gen: h.gen, id: id}) }

func (h *host) Degraded(msg string) { h.rt.k.Root.Send(h.self, &degraded{gen: h.gen, msg: msg}) }

func (h *host) Deliver(ctx context.Context, msgs ...Inbound) error {
	if len(msgs) == 0 {
		h.Alive()
		return nil
	}
	return h.deliver(ctx, &inbound{gen: h.gen, msgs: msgs})
}

func (h *host) deliver(ctx context.Context, m *inbound) error {
	done := make(chan error, 1)
	m.done = done
	h.rt.k.Root.Send(h.self, m)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive is called on every poll; it tells the actor at most once a second.
func (h *host) Alive() {
	now := time.Now().UnixNano()
	if last := h.lastAlive.Load(); now-last < int64(time.Second) && last != 0 {
		return
	}
	h.lastAlive.Store(now)
	h.rt.k.Root.Send(h.self, &alive{gen: h.gen})
}

func (h *host) DeliverAndSave(ctx context.Context, cursor Cursor, msgs ...Inbound) error {
	if len(msgs) == 0 {
		h.Alive()
	}
	return h.deliver(ctx, &inbound{gen: h.gen, msgs: msgs, cursor: &cursor})
}

func (h *host) Cursor(key string) (string, error) {
	v, err := h.rt.cursors.Get(cursorKey(h.name, key))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return v, err
}

func (h *host) SaveCursor(key, value string) error {
	return h.rt.cursors.Put(cursorKey(h.name, key), value)
}

func (h *host) Log() *zerolog.Logger { return &h.log }
