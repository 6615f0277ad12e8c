package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
}

// DefaultOptions are the bounds fangd uses.
func DefaultOptions() Options {
	return Options{HistoryMessages: 40, HistoryChars: 200_000, MaxSessions: 100, QueuePerSession: 8}
}

type waiter struct {
	send   *Send
	sender *actor.PID
}

// turn is one message being answered.
type turn struct {
	sessionID string
	w         waiter
	agentID   string
	agentName string
	route     llm.Route
	req       llm.Request
	history   *history
	started   time.Time
}

type sessionState struct {
	updated time.Time
	current *turn
	queue   []waiter
}

// agentActor is agent/<id>. Turns of one session run one after another (so
// its history stays consistent); turns of different sessions run side by
// side. The provider call runs in a goroutine; the mailbox keeps serving.
type agentActor struct {
	d        *deps
	m        Manifest
	route    llm.Route
	routeErr error
	sessions *store.Collection[history]
	index    map[string]*sessionState
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
	case *Send:
		a.receive(c, waiter{send: m, sender: c.Sender()})
	case *turnDone:
		a.finish(c, m)
	case *manifestChanged:
		a.setManifest(m.m)
	case *terminate:
		a.cancel()
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
			c.Send(st.current.w.sender, err)
			st.current = nil
		}
		for _, w := range st.queue {
			c.Send(w.sender, err)
		}
		st.queue = nil
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
		st = &sessionState{}
		a.index[sid] = st
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
// has as many as it may keep.
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
	if err := a.sessions.Delete(oldest); err != nil {
		return err
	}
	delete(a.index, oldest)
	return nil
}

func (a *agentActor) start(c actor.Context, sid string, st *sessionState, w waiter) {
	if a.routeErr != nil {
		c.Send(w.sender, kernel.Errorf(kernel.KindUnavailable, "agent_model_unusable", "agent %s cannot run: %v", a.m.Name, a.routeErr))
		return
	}
	h, err := a.sessions.Get(sid)
	if errors.Is(err, store.ErrNotFound) {
		h, err = history{ID: sid}, nil
	}
	if err != nil {
		c.Send(w.sender, err)
		return
	}
	t := &turn{sessionID: sid, w: w, agentID: a.m.ID, agentName: a.m.Name, route: a.route, history: &h, started: time.Now()}
	t.req = buildRequest(a.m, a.route, h.Messages, w.send.Text)
	st.current = t
	self, system, d, ctx := c.Self(), c.ActorSystem(), a.d, a.ctx
	release := func() {}
	if w.send.Ctx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		stop := context.AfterFunc(w.send.Ctx, cancel)
		release = func() { stop(); cancel() }
	}
	go func() {
		res, answer, err := d.runTurn(ctx, t)
		release()
		system.Root.Send(self, &turnDone{t: t, result: res, answer: answer, err: err})
	}()
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
	return llm.Request{System: m.SystemPrompt, Messages: msgs, MaxTokens: m.MaxTokens}
}

// finish records a finished turn: on success the exchange joins the
// session's history (durably), then the event is published and, once the
// audit entry is durable, the caller answered. The session's next waiting
// message starts.
func (a *agentActor) finish(c actor.Context, m *turnDone) {
	t := m.t
	st := a.index[t.sessionID]
	if st == nil || st.current != t {
		return // the caller was already answered (agent stopping or deleted)
	}
	st.current = nil
	err := m.err
	if err == nil {
		h := t.history
		h.Messages = append(h.Messages, llm.Message{Role: llm.RoleUser, Content: t.w.send.Text},
			llm.Message{Role: llm.RoleAssistant, Content: m.answer})
		h.Messages = trimHistory(h.Messages, a.d.opts.HistoryMessages, a.d.opts.HistoryChars)
		h.UpdatedAt = time.Now().UTC()
		if perr := a.sessions.Put(t.sessionID, *h); perr != nil {
			err = perr
		} else {
			st.updated = h.UpdatedAt
		}
	}
	a.report(c, t, m.result, len([]rune(m.answer)), err)
	if len(st.queue) > 0 {
		next := st.queue[0]
		st.queue = st.queue[1:]
		a.start(c, t.sessionID, st, next)
	}
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
// once its agent_message audit entry is durable.
func (a *agentActor) report(c actor.Context, t *turn, res *TurnResult, answerChars int, err error) {
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
		details += fmt.Sprintf(" model=%s input_tokens=%d output_tokens=%d cost_usd=%.6f", t.route.Name(), res.InputTokens, res.OutputTokens, res.CostUSD)
	}
	c.ActorSystem().EventStream.Publish(ev)
	sender, system, log := t.w.sender, c.ActorSystem(), a.d.audit
	auditEv := audit.Event{EventType: "agent_message", AgentID: t.agentID, Details: details, Outcome: ev.Outcome,
		Actor: t.w.send.Who.Actor, SourceIP: t.w.send.Who.SourceIP}
	go func() {
		if log != nil {
			ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
			defer cancel()
			if _, aerr := log.Append(ctx, auditEv); aerr != nil && err == nil {
				reply = aerr
			}
		}
		system.Root.Send(sender, reply)
	}()
}

// deleteSessions removes every stored session of an agent.
func deleteSessions(db *store.DB, agentID string) error {
	prefix := []byte("agent-sessions/" + agentID + "/")
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
