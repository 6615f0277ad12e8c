package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/store"
)

// Options bound what an agent keeps.
type Options struct {
	// HistoryMessages and HistoryChars bound one session's history; the
	// oldest exchanges are dropped first.
	HistoryMessages int
	HistoryChars    int
	// MaxSessions bounds an agent's sessions; the least recently used one
	// is forgotten to make room.
	MaxSessions int
	// QueuePerSession bounds the messages waiting behind a session's turn
	// in flight (429 beyond).
	QueuePerSession int
	// Tools is where tool calls go; nil means agents are offered none.
	Tools Toolbox
	// Gate holds gated tool calls until a human decides; nil lets every
	// tool call through.
	Gate Gatekeeper
	// Directory checks the tools a manifest names (see checkTools); nil
	// accepts any name.
	Directory ToolDirectory
	// MaxAgents bounds how many agents exist ([agents] max_agents); a
	// create beyond it is refused (409 agent_limit_reached). An idle agent
	// costs about 22 KiB, so the default bounds that to about 22 MiB.
	MaxAgents int
	// DefaultModel ("provider/model", [default_model]) is what a LibreFang
	// manifest's "default" provider and model stand for; empty: none.
	DefaultModel string
}

// DefaultMaxAgents is [agents] max_agents' default.
const DefaultMaxAgents = 1000

// DefaultOptions are the bounds fangd uses.
func DefaultOptions() Options {
	return Options{HistoryMessages: 40, HistoryChars: 200_000, MaxSessions: 100, QueuePerSession: 8, MaxAgents: DefaultMaxAgents}
}

type waiter struct {
	send   *Send
	sender *actor.PID
}

// turn is one message being answered.
type turn struct {
	// id names the turn in the store while it waits for a decision.
	id        string
	sessionID string
	w         waiter
	agentID   string
	agentName string
	route     llm.Route
	req       llm.Request
	history   *history
	started   time.Time
	p         progress
	// settles answer once each provider call's usage event is durable.
	settles []<-chan error
	// ctx bounds the turn's provider calls and tool runs; release frees
	// the link to the caller's context (nil when there is none).
	ctx     context.Context
	release func()
}

type sessionState struct {
	updated time.Time
	current *turn
	queue   []waiter
	// hist is the session's history as last written, kept so that the
	// next turn need not read it back; writes counts its writes not yet
	// synced (while there are any, the store may lag behind hist).
	hist   *history
	writes int
}

// maxCachedHistories bounds the histories an agent keeps in memory; the
// least recently used idle ones are read from the store again when needed.
const maxCachedHistories = 32

// agentActor is agent/<id>. Turns of one session run one after another (so
// its history stays consistent); turns of different sessions run side by
// side. The provider call runs in a goroutine; the mailbox keeps serving.
type agentActor struct {
	d        *deps
	m        Manifest
	route    llm.Route
	routeErr error
	sessions *store.Collection[history]
	turns    *store.Collection[savedTurn]
	index    map[string]*sessionState
	cached   int // sessions with hist set
	ctx      context.Context
	cancel   context.CancelFunc
}

func newAgent(d *deps, m Manifest) *agentActor { return &agentActor{d: d, m: m} }

func sessionCollection(db *store.DB, agentID string) *store.Collection[history] {
	return store.NewCollection[history](db, "agent-sessions/"+agentID)
}

func (a *agentActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		a.ctx, a.cancel = context.WithCancel(context.Background())
		a.sessions = sessionCollection(a.d.db, a.m.ID)
		a.turns = turnCollection(a.d.db, a.m.ID)
		// A restart calls the producer again with the manifest the agent
		// was spawned with; the store has the latest (PATCH writes it
		// before telling the agent).
		if m, err := a.d.manifests.Get(a.m.ID); err == nil {
			a.m = m
		} else if !errors.Is(err, store.ErrNotFound) {
			panic(fmt.Errorf("agent %s: load manifest: %w", a.m.ID, err))
		}
		a.setManifest(a.m)
		if err := a.loadIndex(); err != nil {
			panic(fmt.Errorf("agent %s: load sessions: %w", a.m.ID, err))
		}
		if err := a.resume(c); err != nil {
			panic(fmt.Errorf("agent %s: resume turns: %w", a.m.ID, err))
		}
	case *Send:
		a.receive(c, waiter{send: m, sender: c.Sender()})
	case *stepDone:
		a.stepped(c, m)
	case *sessionSaved:
		a.sessionSaved(m)
	case *toolDone:
		a.toolRan(c, m)
	case *turnCancelled:
		a.cancelled(c, m.t)
	case *regate:
		if a.current(m.t) && m.t.p.Gate != "" {
			a.awaitDecision(c, m.t)
		}
	case *turnRecorded:
		a.turnRecorded(c, m)
	case *decisionRecorded:
		if a.current(m.t) {
			a.applyDecision(c, m.t, m.res)
		}
	case *manifestChanged:
		a.setManifest(m.m)
	case *terminate:
		a.cancel()
		a.withdrawApprovals(c)
		a.failAll(c, kernel.Errorf(kernel.KindGone, "agent_deleted", "agent %s was deleted", a.m.Name))
		if err := deleteSessions(a.d.db, a.m.ID); err != nil {
			a.d.log.Error().Err(err).Str("agent_id", a.m.ID).Msg("could not delete a deleted agent's sessions")
		}
		c.Stop(c.Self())
	case *actor.Stopping:
		a.cancel()
		a.failAll(c, kernel.Unavailable("agent %s is stopping", a.m.Name))
	case *actor.Restarting:
		a.cancel()
		a.failAll(c, kernel.Unavailable("agent %s restarted; send the message again", a.m.Name))
	}
}

func (a *agentActor) setManifest(m Manifest) {
	a.m = m
	a.route, a.routeErr = a.d.llm.Resolve(m.Model)
	if a.routeErr != nil {
		// The config changed under a stored agent (its provider is gone):
		// it stays listed and answers each message with the reason.
		a.d.log.Warn().Err(a.routeErr).Str("agent_id", m.ID).Msg("agent's model does not resolve")
	}
}

// loadIndex learns which sessions exist and when each was last used.
func (a *agentActor) loadIndex() error {
	a.index = map[string]*sessionState{}
	heads := store.NewCollection[struct {
		UpdatedAt time.Time `json:"updated_at"`
	}](a.d.db, "agent-sessions/"+a.m.ID)
	return heads.Each(func(id string, h struct {
		UpdatedAt time.Time `json:"updated_at"`
	}) bool {
		a.index[id] = &sessionState{updated: h.UpdatedAt}
		return true
	})
}

func (a *agentActor) failAll(c actor.Context, err error) {
	for _, st := range a.index {
		if st.current != nil {
			if st.current.w.sender != nil {
				c.Send(st.current.w.sender, err)
			}
			if st.current.release != nil {
				st.current.release()
			}
			st.current = nil
		}
		for _, w := range st.queue {
			c.Send(w.sender, err)
		}
		st.queue = nil
	}
}

// withdrawApprovals cancels the requests a deleted agent's turns wait for,
// so nobody is asked to decide for an agent that is gone.
func (a *agentActor) withdrawApprovals(c actor.Context) {
	if a.d.opts.Gate == nil {
		return
	}
	for _, st := range a.index {
		if t := st.current; t != nil && t.p.Gate != "" {
			c.Send(a.d.opts.Gate.PID(), &approval.Cancel{ID: t.p.Gate, Reason: "agent " + a.m.Name + " was deleted"})
		}
	}
}

func (a *agentActor) receive(c actor.Context, w waiter) {
	sid := w.send.SessionID
	if sid == "" {
		sid = defaultSession(a.m.ID)
	}
	st := a.index[sid]
	if st == nil {
		if err := a.makeRoom(); err != nil {
			c.Respond(err)
			return
		}
		// The index knows every stored session: a new one has nothing to
		// read back.
		st = &sessionState{}
		a.index[sid] = st
		a.cache(st, &history{ID: sid})
	}
	if st.current != nil {
		if len(st.queue) >= a.d.opts.QueuePerSession {
			c.Respond(kernel.Errorf(kernel.KindRateLimited, "session_busy",
				"session %s already has %d messages waiting; wait for the answers", sid, len(st.queue)))
			return
		}
		st.queue = append(st.queue, w)
		return
	}
	a.start(c, sid, st, w)
}

// makeRoom forgets the least recently used idle session when the agent
// has as many as it may keep. The delete is not waited for: it is ordered
// before any later write of the same session, and an agent that takes a
// new session per message (A2A tasks do) must not pay a sync for each.
func (a *agentActor) makeRoom() error {
	if len(a.index) < a.d.opts.MaxSessions {
		return nil
	}
	oldest := ""
	for id, st := range a.index {
		if st.current == nil && (oldest == "" || st.updated.Before(a.index[oldest].updated)) {
			oldest = id
		}
	}
	if oldest == "" {
		return kernel.Errorf(kernel.KindRateLimited, "too_many_sessions", "agent %s is busy in all of its %d sessions", a.m.Name, len(a.index))
	}
	log, agentID := a.d.log, a.m.ID
	a.sessions.DeleteAsync(oldest, func(err error) {
		if err != nil {
			log.Warn().Err(err).Str("agent_id", agentID).Msg("could not forget an agent's oldest session")
		}
	})
	if a.index[oldest].hist != nil {
		a.cached--
	}
	delete(a.index, oldest)
	return nil
}

func (a *agentActor) start(c actor.Context, sid string, st *sessionState, w waiter) {
	if a.routeErr != nil {
		c.Send(w.sender, kernel.Errorf(kernel.KindUnavailable, "agent_model_unusable", "agent %s cannot run: %v", a.m.Name, a.routeErr))
		return
	}
	h, err := a.history(sid, st)
	if err != nil {
		c.Send(w.sender, err)
		return
	}
	t := &turn{sessionID: sid, w: w, agentID: a.m.ID, agentName: a.m.Name, route: a.route, history: h, started: time.Now()}
	t.req = buildRequest(a.m, a.route, h.Messages, w.send.Text)
	t.req.Tools = a.offeredTools()
	st.current = t
	a.bindCaller(c, t)
	a.step(c, t)
}

// history is the session's history, from memory when it is cached.
func (a *agentActor) history(sid string, st *sessionState) (*history, error) {
	if st.hist != nil {
		return st.hist, nil
	}
	h, err := a.sessions.Get(sid)
	if errors.Is(err, store.ErrNotFound) {
		h, err = history{ID: sid}, nil
	}
	if err != nil {
		return nil, err
	}
	a.cache(st, &h)
	return &h, nil
}

// cache keeps h as st's history, forgetting the least recently used idle
// history beyond maxCachedHistories. A history with writes in flight is
// never forgotten: the store may not have it yet.
func (a *agentActor) cache(st *sessionState, h *history) {
	if st.hist == nil {
		a.cached++
	}
	st.hist = h
	if a.cached <= maxCachedHistories {
		return
	}
	var oldest *sessionState
	for _, s := range a.index {
		if s.hist != nil && s != st && s.current == nil && s.writes == 0 && (oldest == nil || s.updated.Before(oldest.updated)) {
			oldest = s
		}
	}
	if oldest != nil {
		oldest.hist = nil
		a.cached--
	}
}

// sessionSaved counts a history write as synced. A failed write leaves
// memory ahead of the store: forget it, so the next turn reads what the
// store has.
func (a *agentActor) sessionSaved(m *sessionSaved) {
	st := a.index[m.sessionID]
	if st == nil {
		return
	}
	if st.writes > 0 { // not a write of a session forgotten and begun again
		st.writes--
	}
	if m.err != nil && st.hist != nil {
		st.hist = nil
		a.cached--
	}
}

// buildRequest puts the session's history and the new message together,
// dropping the oldest exchanges that would not fit the model's context
// window next to max_tokens of answer.
func buildRequest(m Manifest, route llm.Route, hist []llm.Message, text string) llm.Request {
	msgs := make([]llm.Message, 0, len(hist)+1)
	msgs = append(msgs, hist...)
	msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: text})
	if cw := int64(route.Pricing.ContextWindow); cw > 0 {
		fits := func() bool {
			n := llm.TypicalTokens(m.SystemPrompt) + int64(m.MaxTokens)
			for _, x := range msgs {
				n += llm.TypicalTokens(x.Content) + 8
			}
			return n <= cw
		}
		for len(msgs) > 2 && !fits() {
			msgs = msgs[2:] // one user/assistant exchange
		}
	}
	return llm.Request{System: m.SystemPrompt, Messages: msgs, MaxTokens: m.MaxTokens, Temperature: m.Temperature}
}

// finish records a finished turn: on success the exchange joins the
// session's history (durably), then the event is published and, once the
// audit entry is durable, the caller answered. The session's next waiting
// message starts. Tool exchanges stay inside the turn: the history keeps
// the user's message and the final answer.
func (a *agentActor) finish(c actor.Context, t *turn, answer string, err error) {
	st := a.index[t.sessionID]
	if st == nil || st.current != t {
		return // the caller was already answered (agent stopping or deleted)
	}
	st.current = nil
	if t.release != nil {
		t.release()
	}
	if t.id != "" {
		a.dropTurnRecord(t.id, t.agentID, "a finished turn's")
	}
	var res *TurnResult
	waits := t.settles
	if err == nil {
		waits = append(waits, a.saveExchange(c, st, t, answer))
		p := t.p
		res = &TurnResult{Response: answer, InputTokens: p.InputTokens, CachedInputTokens: p.CachedInputTokens,
			OutputTokens: p.OutputTokens, CostUSD: float64(p.CostNanos) / 1e9, Model: t.route.Model,
			Provider: t.route.Provider, PricingKnown: t.route.Pricing.PricingKnown, AgentID: t.agentID,
			SessionID: t.sessionID, LatencyMS: p.LatencyMS, ToolCalls: p.Records, Iterations: p.Iterations}
	}
	a.report(c, t, res, len([]rune(answer)), err, waits)
	if len(st.queue) > 0 {
		next := st.queue[0]
		st.queue = st.queue[1:]
		a.start(c, t.sessionID, st, next)
	}
}

// saveExchange adds the turn's exchange to the session's history and hands
// the history to the store; the caller is answered once it is durable. The
// session's next turn builds on the history in memory meanwhile: the
// store applies writes in the order they were handed over.
func (a *agentActor) saveExchange(c actor.Context, st *sessionState, t *turn, answer string) <-chan error {
	h := t.history
	h.Messages = append(h.Messages, llm.Message{Role: llm.RoleUser, Content: t.w.send.Text},
		llm.Message{Role: llm.RoleAssistant, Content: answer})
	h.Messages = trimHistory(h.Messages, a.d.opts.HistoryMessages, a.d.opts.HistoryChars)
	h.UpdatedAt = time.Now().UTC()
	st.updated = h.UpdatedAt
	if st.hist != h {
		a.cache(st, h)
	}
	st.writes++
	saved := make(chan error, 1)
	self, system, sid := c.Self(), c.ActorSystem(), t.sessionID
	a.sessions.PutAsync(sid, *h, func(err error) {
		saved <- err
		system.Root.Send(self, &sessionSaved{sessionID: sid, err: err})
	})
	return saved
}

// trimHistory drops the oldest exchanges until the history fits both bounds.
func trimHistory(msgs []llm.Message, maxMessages, maxChars int) []llm.Message {
	chars := 0
	for _, m := range msgs {
		chars += len(m.Content)
	}
	for len(msgs) > 2 && (len(msgs) > maxMessages || chars > maxChars) {
		chars -= len(msgs[0].Content) + len(msgs[1].Content)
		msgs = msgs[2:]
	}
	return append([]llm.Message(nil), msgs...)
}

// report publishes the turn's AgentMessage event and answers the caller
// once its agent_message audit entry is durable and every write in waits
// (usage, history) has synced; a failed write fails the answer.
func (a *agentActor) report(c actor.Context, t *turn, res *TurnResult, answerChars int, err error, waits []<-chan error) {
	ev := &AgentMessage{AgentID: t.agentID, Name: t.agentName, SessionID: t.sessionID, From: t.w.send.From,
		MessageChars: len([]rune(t.w.send.Text)), ResponseChars: answerChars, Outcome: "ok", At: time.Now().UTC()}
	details := fmt.Sprintf("session=%s from=%s chars=%d", t.sessionID, t.w.send.From, ev.MessageChars)
	var reply any = res
	if err != nil {
		ev.Outcome = "error"
		code := "internal_error"
		if de := kernel.AsError(err); de != nil {
			code = de.Code
			if de.Kind == kernel.KindPaymentRequired {
				ev.Outcome = "denied"
			}
		}
		details += " failed=" + code
		reply = err
	} else {
		ev.InputTokens, ev.OutputTokens, ev.CostUSD = res.InputTokens, res.OutputTokens, res.CostUSD
		ev.Model, ev.Provider, ev.LatencyMS, ev.ToolCalls = res.Model, res.Provider, res.LatencyMS, len(res.ToolCalls)
		details += fmt.Sprintf(" model=%s input_tokens=%d output_tokens=%d cost_usd=%.6f", t.route.Name(), res.InputTokens, res.OutputTokens, res.CostUSD)
		if len(res.ToolCalls) > 0 {
			details += fmt.Sprintf(" tool_calls=%d", len(res.ToolCalls))
		}
	}
	sender, system, log := t.w.sender, c.ActorSystem(), a.d.audit
	auditEv := audit.Event{EventType: "agent_message", AgentID: t.agentID, Details: details, Outcome: ev.Outcome,
		Actor: t.w.send.Who.Actor, SourceIP: t.w.send.Who.SourceIP}
	go func() {
		// Subscribers run in the publisher's goroutine: not the actor's.
		system.EventStream.Publish(ev)
		if log != nil {
			ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
			defer cancel()
			if _, aerr := log.Append(ctx, auditEv); aerr != nil && err == nil {
				reply = aerr
			}
		}
		for _, w := range waits {
			if werr := <-w; werr != nil && err == nil {
				reply, err = werr, werr
			}
		}
		if sender != nil { // nil for a turn resumed after a restart
			system.Root.Send(sender, reply)
		}
	}()
}

// deleteSessions removes every stored session of an agent, and any turn
// of it that was waiting for a decision.
func deleteSessions(db *store.DB, agentID string) error {
	for _, prefix := range []string{"agent-sessions/" + agentID + "/", "agent-turns/" + agentID + "/"} {
		if err := deletePrefix(db, []byte(prefix)); err != nil {
			return err
		}
	}
	return nil
}

func deletePrefix(db *store.DB, prefix []byte) error {
	for {
		var keys [][]byte
		err := db.View(func(tx *store.Txn) error {
			return tx.Iterate(prefix, nil, false, func(k, _ []byte) (bool, error) {
				keys = append(keys, k)
				return len(keys) < 500, nil
			})
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		if err := db.Update(func(tx *store.Txn) error {
			for _, k := range keys {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
}
