package channel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

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
//
// Its methods live in files named for their concern: the link lifecycle
// (link.go), the watchdog (watchdog.go), the inbox (inbox.go), the turn
// scheduler (turns.go), outbox pacing (outbox.go) and the adapter's view
// of the runtime (host.go). This file has the state, the message switch,
// configuration loading and status.
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

	status Status
	timers []*time.Timer

	// link lifecycle (link.go)
	gen     int
	cancel  context.CancelFunc // the current Run
	attempt int
	upSince time.Time
	// degraded is the adapter's last Host.Degraded report on this link;
	// published as state "degraded" while the link is connected.
	degraded string

	// watchdog (watchdog.go)
	traffic  time.Time
	probing  bool
	watchdog time.Duration

	seq    *seqSource
	turns  *turns  // turns.go
	outbox *outbox // outbox.go
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
		if a.status.ConnectedSince != nil {
			// The same link under a new identity (an IRC nick regained):
			// it has been up all along.
			id := m.id
			a.status.Identity = &id
			a.publish(c)
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
		m.reply = kernel.ReplierOf(c)
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
		a.outbox.woke()
		a.startTurns()
		a.pump()
	case *sendRequest:
		m.reply = kernel.ReplierOf(c)
		a.enqueue(m)
	case *enqueued:
		a.outbox.add(m.items...)
		a.status.OutboxPending = len(a.outbox.items)
		a.publish(c)
		a.pump()
	case *sendDone:
		a.sendDone(c, m)
	case *testRequest:
		m.reply = kernel.ReplierOf(c)
		a.test(m)
	}
}

func (a *channelActor) started(c actor.Context) {
	a.self = c.Self()
	a.base, a.baseCancel = context.WithCancel(context.Background())
	a.turns = newTurns(maxTurns)
	a.outbox = newOutbox(maxInflight, nil)
	in, out, err := a.rt.queues.load(a.name)
	if err != nil {
		panic(fmt.Errorf("load queues of channel %s: %w", a.name, err))
	}
	a.seq = &seqSource{rt: a.rt, name: a.name}
	if err := a.seq.init(maxSeq(in, out)); err != nil {
		panic(fmt.Errorf("load sequence of channel %s: %w", a.name, err))
	}
	a.turns.add(in...)
	a.outbox.add(out...)
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
	rec, err := a.rt.record(a.name)
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
	a.outbox.setPace(a.caps.Pace)
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

// test answers POST /api/channels/{name}/test from a goroutine.
func (a *channelActor) test(m *testRequest) {
	if a.adapter == nil {
		m.reply.Respond(testResult{err: kernel.Errorf(kernel.KindPreconditionFailed, "not_ready",
			"channel %s has no working configuration: %s", a.name, a.status.LastError)})
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
				m.reply.Respond(testResult{err: upstream(display, err)})
				return
			}
			m.reply.Respond(testResult{res: &TestResult{Status: "ok", Channel: name, Identity: &id,
				Message: fmt.Sprintf("Connected to %s as %s. Provide chat_id or channel_id to send a test message.", display, id.Name)}})
			return
		}
		msgID, err := ad.Send(ctx, Outbound{ChatID: m.chatID, Text: TestText})
		if err != nil {
			m.reply.Respond(testResult{err: upstream(display, err)})
			return
		}
		m.reply.Respond(testResult{res: &TestResult{Status: "ok", Channel: name, ChatID: m.chatID, MessageID: msgID,
			Message: fmt.Sprintf("Test message sent to %s chat %s.", display, m.chatID)}})
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
