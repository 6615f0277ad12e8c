package approval

import (
	"bytes"
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Input bounds.
const (
	MaxPayloadBytes  = 64 << 10
	MaxDescription   = 4000
	MaxActionSummary = 500
	MaxReason        = 1000
	maxActionLen     = 128
	minPrefix        = 8
	decidedTrimBatch = 100
)

var actionRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// entry is one request in the index. A pending request whose actor is
// not running ("passive", the usual state of a request nobody is waiting
// on) is only these few fields: its record stays in the store, and its
// expiry sits in the supervisor's heap. See docs/approvals.md#memory.
type entry struct {
	id      string
	agentID string // shared with the other entries of the same agent
	// requested and expires are unix nanoseconds: the pending list's order
	// and the expiry heap's key.
	requested, expires int64
	heapIdx            int       // position in the expiry heap; -1 when not in it
	rec                *Approval // decided requests only (the kept decisions)
	pid                *actor.PID
	// failed: the request's actor was stopped by its supervision (it
	// failed repeatedly); it is not started again until the daemon is.
	failed bool
	// announced: the creation is audited. Until then decisions wait in
	// held, so the audit chain never shows a decision before its request.
	announced bool
	held      []heldMsg
}

func (e *entry) pending() bool { return e.rec == nil }

type heldMsg struct {
	msg    any
	sender *actor.PID
}

// supervisor is "approvals": the index of every request it keeps, the
// expiry timer of every passive pending request, and the parent of the
// request actors that run.
type supervisor struct {
	env            *env
	props          *actor.Props // shared by every request actor
	byID           map[string]*entry
	pendingByAgent map[string]int
	agents         map[string]string // interned agent ids of pending requests
	decided        []*Approval       // oldest decision first
	expiry         expiryHeap        // passive pending requests, soonest first
	timer          *time.Timer
	timerAt        int64 // what timer is armed for (unix nanoseconds); 0: not armed
	timerGen       int
	// stopping: the daemon is shutting down, so request actors stopping
	// is expected and not an error.
	stopping bool
	// creating: requests whose creation is being written; messages about
	// them wait here until it is durable (or failed). creatingByAgent
	// counts them against max_pending_per_agent.
	creating        map[string][]heldMsg
	creatingByAgent map[string]int
}

func (s *supervisor) Receive(c actor.Context) {
	if s.holdWhileCreating(c) {
		return
	}
	switch m := c.Message().(type) {
	case *persisted:
		m.then(c, m.err)
	case *actor.Started:
		if err := s.load(c); err != nil {
			panic(fmt.Errorf("approvals: load: %w", err))
		}
		s.arm(c)
	case *actor.Stopping:
		s.stopping = true
		s.stopTimer()
	case *actor.Restarting:
		s.stopTimer()
	case *Create:
		s.create(c, m.Req, false)
	case *Gate:
		if e := s.byID[m.Req.ID]; e != nil && m.Req.ID != "" {
			s.forwardOrAnswer(c, e)
			return
		}
		s.create(c, m.Req, true)
	case *Get:
		e := s.byID[m.ID]
		if e == nil {
			c.Respond(notFound(m.ID))
			return
		}
		s.get(c, e)
	case *Await:
		e := s.byID[m.ID]
		if e == nil {
			c.Respond(notFound(m.ID))
			return
		}
		s.forwardOrAnswer(c, e)
	case *List:
		s.list(c, m)
	case *Decide:
		s.route(c, m.ID, m.Approve, m.By)
	case *Cancel:
		s.route(c, m.ID, false, Decider{Identity: "system", Via: ViaSystem})
	case *clusterDecided:
		// Decided through another node or a sweep; silently ignored when
		// it is no longer pending here.
		if e := s.byID[m.rec.ID]; e != nil && e.pending() {
			s.deliver(c, e, m, nil)
		}
	case *Resolve:
		c.Respond(s.resolve(m.Prefix))
	case *changed:
		if e := s.byID[m.rec.ID]; e != nil && e.pending() && m.rec.Pending() {
			e.expires = m.rec.ExpiresAt.UnixNano()
		}
	case *announced:
		if e := s.byID[m.id]; e != nil {
			e.announced = true
			for _, h := range e.held {
				s.deliver(c, e, h.msg, h.sender)
			}
			e.held = nil
		}
	case *decided:
		s.onDecided(c, m.rec)
	case *tick:
		if m.gen == s.timerGen {
			s.timerAt = 0
			s.expireDue(c)
			s.arm(c)
		}
	case *actor.Terminated:
		if s.stopping {
			return
		}
		id := m.Who.Id[strings.LastIndex(m.Who.Id, "/")+1:]
		if e := s.byID[id]; e != nil && e.pid != nil && e.pid.Equal(m.Who) {
			s.env.log.Error().Str("approval_id", e.id).Msg("approval actor stopped by its supervisor; it restarts with the daemon")
			e.pid, e.failed = nil, true
		}
	}
}

func notFound(id string) error {
	return kernel.Errorf(kernel.KindNotFound, "approval_not_found", "approval %s not found", id)
}

// load indexes every pending request (passive: a few fields and a place
// in the expiry heap, no actor) and the kept decisions: a supervisor
// restart and a daemon restart land here alike. It reads the small
// "approvals-index" entries, not the records, and decodes them straight
// from Badger's buffers: reading 10,000 full records would leave their
// decompressed blocks and their garbage in the daemon's memory (see
// docs/approvals.md#memory). Only kept decisions are read in full.
func (s *supervisor) load(c actor.Context) error {
	e := s.env
	s.props = e.k.Props(func() actor.Actor { return &request{env: e} })
	s.byID, s.pendingByAgent, s.agents, s.decided, s.expiry = map[string]*entry{}, map[string]int{}, map[string]string{}, nil, nil
	e.metrics.pending.Set(0) // recounted by addPending below
	s.creating, s.creatingByAgent = map[string][]heldMsg{}, map[string]int{}
	if _, err := e.meta.Get(indexVersionKey); errors.Is(err, store.ErrNotFound) {
		if err := s.buildIndex(); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	var head indexFields
	var decidedIDs, badIndex []string
	var badErr error
	err := e.index.EachRaw(func(id, raw []byte) (bool, error) {
		head = indexFields{}
		if err := json.Unmarshal(raw, &head); err != nil {
			// Moved aside after the walk; the rest loads.
			badIndex, badErr = append(badIndex, string(id)), err
			return true, nil
		}
		if head.Status != StatusPending {
			decidedIDs = append(decidedIDs, string(id))
			return true, nil
		}
		en := &entry{id: string(id), requested: head.RequestedAt, expires: head.ExpiresAt, heapIdx: -1, announced: true}
		s.addPending(en, head.AgentID)
		en.heapIdx = len(s.expiry)
		s.expiry = append(s.expiry, en) // ordered once, below
		return true, nil
	})
	if err != nil {
		return err
	}
	if len(badIndex) > 0 {
		if _, err := e.index.QuarantineRaw(badIndex, fmt.Errorf("approval index entry does not decode: %w", badErr)); err != nil {
			return err
		}
	}
	heap.Init(&s.expiry)
	for _, id := range decidedIDs {
		rec, err := e.records.Get(id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if errors.As(err, &syntax) || errors.As(err, &typ) {
			if _, qerr := e.records.QuarantineRaw([]string{id}, err); qerr != nil {
				return qerr
			}
			continue
		}
		if err != nil {
			return err
		}
		s.decided = append(s.decided, &rec)
		s.byID[rec.ID] = &entry{id: rec.ID, rec: &rec, heapIdx: -1, announced: true}
	}
	sort.Slice(s.decided, func(i, j int) bool { return decidedBefore(s.decided[i], s.decided[j]) })
	s.trim(true)
	return nil
}

// indexVersionKey marks (in "approvals-meta") that every record has its
// index entry.
const indexVersionKey = "index-version"

// buildIndex writes the index entry of every record, once, for a store
// written before the index existed; then it marks the index complete.
func (s *supervisor) buildIndex() error {
	e := s.env
	type item struct {
		id string
		f  indexFields
	}
	var all []item
	err := e.records.EachRaw(func(id, raw []byte) (bool, error) {
		var rec struct {
			AgentID     string    `json:"agent_id"`
			Status      string    `json:"status"`
			RequestedAt time.Time `json:"requested_at"`
			ExpiresAt   time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			return false, fmt.Errorf("decode approval %s: %w", id, err)
		}
		all = append(all, item{string(id), indexFields{AgentID: rec.AgentID, Status: rec.Status,
			RequestedAt: rec.RequestedAt.UnixNano(), ExpiresAt: rec.ExpiresAt.UnixNano()}})
		return true, nil
	})
	if err != nil {
		return err
	}
	for len(all) > 0 {
		n := min(len(all), removeBatch)
		err := e.db.Update(func(tx *store.Txn) error {
			for _, it := range all[:n] {
				if err := e.index.PutTx(tx, it.id, it.f); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("build the approvals index: %w", err)
		}
		all = all[n:]
	}
	if err := e.meta.Put(indexVersionKey, 1); err != nil {
		return err
	}
	e.log.Info().Msg("built the approvals index")
	return nil
}

// addPending indexes a pending request, counting it against its agent's
// cap; the caller puts it in the expiry heap or starts its actor.
func (s *supervisor) addPending(en *entry, agentID string) {
	if a, ok := s.agents[agentID]; ok {
		agentID = a
	} else {
		s.agents[agentID] = agentID
	}
	en.agentID = agentID
	s.byID[en.id] = en
	s.pendingByAgent[agentID]++
	s.env.metrics.pending.Inc()
}

func decidedBefore(a, b *Approval) bool {
	if a.DecidedAt != nil && b.DecidedAt != nil && !a.DecidedAt.Equal(*b.DecidedAt) {
		return a.DecidedAt.Before(*b.DecidedAt)
	}
	return a.ID < b.ID
}

func (s *supervisor) spawn(c actor.Context, rec *Approval) (*actor.PID, error) {
	s.env.boot.Store(rec.ID, rec)
	pid, err := c.SpawnNamed(s.props, "approval/"+rec.ID)
	if err != nil {
		s.env.boot.Delete(rec.ID)
	}
	return pid, err
}

// activate starts a passive pending request's actor (it reads its record
// from the store) because something needs it: a waiter, a decision, its
// expiry. The actor runs until the request is decided. False when it cannot
// run (its actor failed before, or cannot be spawned).
func (s *supervisor) activate(c actor.Context, e *entry) bool {
	if e.pid != nil {
		return true
	}
	if e.failed {
		return false
	}
	pid, err := c.SpawnNamed(s.props, "approval/"+e.id)
	if err != nil {
		s.env.log.Error().Err(err).Str("approval_id", e.id).Msg("could not start an approval actor")
		e.failed = true
		return false
	}
	if e.heapIdx >= 0 {
		heap.Remove(&s.expiry, e.heapIdx)
	}
	e.pid = pid
	return true
}

func unavailable(id string) *kernel.Error {
	return kernel.Errorf(kernel.KindUnavailable, "approval_unavailable", "approval %s failed and was stopped; it starts again with the daemon", id)
}

// forwardOrAnswer hands a wait to the request's actor (starting it if
// passive), or answers at once when it is decided.
func (s *supervisor) forwardOrAnswer(c actor.Context, e *entry) {
	if !e.pending() {
		c.Respond(e.rec)
		return
	}
	if !s.activate(c, e) {
		c.Respond(unavailable(e.id))
		return
	}
	c.Forward(e.pid)
}

// get answers a kept decision from memory and a pending request from the
// store (read in a goroutine: the store is written before the index hears
// of a change, so it is never behind).
func (s *supervisor) get(c actor.Context, e *entry) {
	if !e.pending() {
		c.Respond(e.rec)
		return
	}
	sender, system, records, id := c.Sender(), c.ActorSystem(), s.env.records, e.id
	go func() {
		var reply any
		if rec, err := records.Get(id); err != nil {
			reply = fmt.Errorf("read approval %s: %w", id, err)
		} else {
			reply = &rec
		}
		if sender != nil {
			system.Root.Send(sender, reply)
		}
	}()
}

// route sends a decision to a pending request's actor; a decided one is
// answered here (409, or 410 for an expired one) and the attempt audited.
func (s *supervisor) route(c actor.Context, id string, approve bool, by Decider) {
	e := s.byID[id]
	if e == nil {
		c.Respond(notFound(id))
		return
	}
	if e.pending() {
		s.deliver(c, e, c.Message(), c.Sender())
		return
	}
	err := alreadyDecided(e.rec)
	verb := "reject"
	if approve {
		verb = "approve"
	}
	s.env.auditThenRespond(c, audit.Event{EventType: "approval_decision_refused", AgentID: e.rec.AgentID, Outcome: "rejected",
		Actor: by.Identity, SourceIP: by.SourceIP, Details: fmt.Sprintf("id=%s attempt=%s via=%s reason=%s", id, verb, by.Via, err.Code)}, err)
}

// deliver hands a decision to a pending request's actor (starting it if
// passive) once its creation is audited (holding it until then).
func (s *supervisor) deliver(c actor.Context, e *entry, msg any, sender *actor.PID) {
	switch {
	case !e.announced:
		e.held = append(e.held, heldMsg{msg: msg, sender: sender})
	case !e.pending():
		// Decided while held.
		if sender != nil {
			c.Send(sender, alreadyDecided(e.rec))
		}
	case !s.activate(c, e):
		if sender != nil {
			c.Send(sender, unavailable(e.id))
		}
	default:
		c.RequestWithCustomSender(e.pid, msg, sender)
	}
}

// alreadyDecided is the refusal for deciding a request that is not pending.
func alreadyDecided(rec *Approval) *kernel.Error {
	if rec.Status == StatusExpired {
		return kernel.Errorf(kernel.KindGone, "approval_expired",
			"approval %s expired at %s without a decision; it can no longer be approved or rejected (the action was not run)", rec.ID, rec.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return kernel.Errorf(kernel.KindConflict, "approval_already_decided",
		"approval %s was already %s by %s; a decision cannot be changed", rec.ID, rec.Status, rec.DecidedBy)
}

// validate checks a new request and fills what the policy decides.
func (s *supervisor) validate(req *Request) error {
	req.Action = strings.TrimSpace(req.Action)
	if !actionRe.MatchString(req.Action) {
		return kernel.Errorf(kernel.KindInvalid, "invalid_action", "action must be a tool or action name of 1-%d characters (letters, digits, _ . : -)", maxActionLen)
	}
	if req.AgentID == "" {
		return kernel.Invalid("agent_id is required")
	}
	if req.ID != "" {
		if _, err := uuid.Parse(req.ID); err != nil {
			return kernel.Invalid("approval id must be a UUID")
		}
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"description", req.Description, MaxDescription}, {"action_summary", req.ActionSummary, MaxActionSummary}} {
		if !utf8.ValidString(f.v) {
			return kernel.Invalid("%s must be UTF-8 text", f.name)
		}
		if n := utf8.RuneCountInString(f.v); n > f.max {
			return kernel.Errorf(kernel.KindTooLarge, "field_too_large", "%s has %d characters; at most %d are allowed", f.name, n, f.max)
		}
	}
	if len(req.Payload) > MaxPayloadBytes {
		return kernel.Errorf(kernel.KindTooLarge, "payload_too_large", "payload is %d bytes; at most %d (64 KiB) are allowed", len(req.Payload), MaxPayloadBytes)
	}
	if len(bytes.TrimSpace(req.Payload)) == 0 {
		req.Payload = json.RawMessage("null")
	} else if !json.Valid(req.Payload) {
		return kernel.Invalid("payload must be JSON")
	}
	if req.RiskLevel != "" {
		if _, ok := riskRank[req.RiskLevel]; !ok {
			return kernel.Errorf(kernel.KindInvalid, "invalid_risk_level", "risk_level %q: want low, medium, high or critical", req.RiskLevel)
		}
	}
	return nil
}

// create makes, persists and starts a new request. For a Gate, the
// request's actor then holds the caller until the decision; for a Create,
// the caller is answered once the creation is audited.
func (s *supervisor) create(c actor.Context, req Request, gate bool) {
	env := s.env
	if err := s.validate(&req); err != nil {
		c.Respond(err)
		return
	}
	pol := env.policy.Load() // one policy for the whole request
	if n := s.pendingByAgent[req.AgentID] + s.creatingByAgent[req.AgentID]; n >= pol.MaxPendingPerAgent {
		c.Respond(kernel.Errorf(kernel.KindRateLimited, "too_many_pending_approvals",
			"agent %s already has %d approval requests waiting (max_pending_per_agent); decide those first", req.AgentID, n))
		return
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	now := env.now().UTC()
	rec := &Approval{ID: req.ID, AgentID: req.AgentID, AgentName: req.AgentName, Action: req.Action, ToolName: req.Action,
		Description: req.Description, ActionSummary: req.ActionSummary, Payload: req.Payload,
		RiskLevel: pol.Risk(req.Action, req.RiskLevel), Status: StatusPending, RequestedAt: now, CreatedAt: now,
		ExpiresAt: now.Add(pol.Timeout()), TimeoutSecs: pol.TimeoutSecs, SessionID: req.SessionID,
		RequestedBy: req.RequestedBy, SecondFactorRequired: pol.TOTPApplies(req.Action)}
	if rec.ActionSummary == "" {
		rec.ActionSummary = summarize(rec)
	}
	// The record is written without stalling the index (no synced write
	// in Receive): the request exists once it is durable, and until then
	// messages about it wait and the caller is not answered.
	msg, sender := c.Message(), c.Sender()
	s.creating[rec.ID] = nil
	s.creatingByAgent[rec.AgentID]++
	env.saveThen(c, rec, func(c actor.Context, err error) {
		held := s.creating[rec.ID]
		delete(s.creating, rec.ID)
		if s.creatingByAgent[rec.AgentID]--; s.creatingByAgent[rec.AgentID] <= 0 {
			delete(s.creatingByAgent, rec.AgentID)
		}
		if err != nil {
			reply(c, sender, err)
		} else {
			s.created(c, rec, req.SourceIP, gate, msg, sender)
		}
		for _, h := range held {
			c.RequestWithCustomSender(c.Self(), h.msg, h.sender)
		}
	})
}

// created starts a request whose record is durable: its actor (for a
// Gate, which then keeps the caller until the decision) or its place in
// the expiry heap, its audit entry and its event.
func (s *supervisor) created(c actor.Context, rec *Approval, sourceIP string, gate bool, msg any, sender *actor.PID) {
	env := s.env
	en := &entry{id: rec.ID, requested: rec.RequestedAt.UnixNano(), expires: rec.ExpiresAt.UnixNano(), heapIdx: -1}
	if gate {
		// A gated tool call waits on it from now: start its actor, which
		// keeps the caller until the decision.
		pid, err := s.spawn(c, rec)
		if err != nil {
			env.removeAsync(rec.ID)
			reply(c, sender, err)
			return
		}
		en.pid = pid
		s.addPending(en, rec.AgentID)
		c.RequestWithCustomSender(pid, msg, sender)
	} else {
		// Nobody waits yet: passive until someone does.
		s.addPending(en, rec.AgentID)
		heap.Push(&s.expiry, en)
		s.arm(c)
	}
	ev := audit.Event{EventType: "approval_requested", AgentID: rec.AgentID, Outcome: "pending", Actor: rec.RequestedBy, SourceIP: sourceIP,
		Details: fmt.Sprintf("id=%s action=%s risk=%s expires_at=%s second_factor_required=%t", rec.ID, rec.Action, rec.RiskLevel,
			rec.ExpiresAt.Format("2006-01-02T15:04:05Z"), rec.SecondFactorRequired)}
	// The creation is answered once both its audit entry and its event are
	// durable: a crash right after a 201 must not lose either.
	published := env.publish("approval.requested", rec, rec.RequestedBy)
	system, self := c.ActorSystem(), c.Self()
	go func() {
		err := env.appendAudit(ev)
		if perr := published(); err == nil {
			err = perr
		}
		// In etcd before any decision is let through (cluster mode).
		env.publishCluster(rec)
		system.Root.Send(self, &announced{id: rec.ID})
		if !gate && sender != nil {
			var reply any = rec
			if err != nil {
				reply = err
			}
			system.Root.Send(sender, reply)
		}
	}()
	env.post(requestNotice(rec), NotifyTarget{})
}

// holdWhileCreating keeps a message about a request whose creation is
// being written until it is durable (then it is sent again); true if held.
func (s *supervisor) holdWhileCreating(c actor.Context) bool {
	if len(s.creating) == 0 {
		return false
	}
	var id string
	switch m := c.Message().(type) {
	case *Create:
		id = m.Req.ID
	case *Gate:
		id = m.Req.ID
	case *Get:
		id = m.ID
	case *Await:
		id = m.ID
	case *Decide:
		id = m.ID
	case *Cancel:
		id = m.ID
	default:
		return false
	}
	held, ok := s.creating[id]
	if !ok || id == "" {
		return false
	}
	s.creating[id] = append(held, heldMsg{msg: c.Message(), sender: c.Sender()})
	return true
}

func summarize(rec *Approval) string {
	s := rec.Action
	if rec.AgentName != "" {
		s = rec.AgentName + " wants to run " + rec.Action
	}
	if len(rec.Payload) > 0 && string(rec.Payload) != "null" {
		p := string(rec.Payload)
		if utf8.RuneCountInString(p) > 200 {
			p = string([]rune(p)[:200]) + "…"
		}
		s += " " + p
	}
	return s
}

func (s *supervisor) onDecided(c actor.Context, rec *Approval) {
	e := s.byID[rec.ID]
	if e == nil || !e.pending() {
		return
	}
	e.rec = rec
	s.env.metrics.pending.Dec()
	s.env.metrics.decided.WithLabelValues(rec.Status).Inc()
	if s.pendingByAgent[e.agentID]--; s.pendingByAgent[e.agentID] <= 0 {
		delete(s.pendingByAgent, e.agentID)
		delete(s.agents, e.agentID)
	}
	if e.heapIdx >= 0 {
		heap.Remove(&s.expiry, e.heapIdx)
	}
	if e.pid != nil {
		// Poison, not Stop: whatever was forwarded before this is
		// answered by the actor first.
		c.Poison(e.pid)
		e.pid = nil
	}
	s.decided = append(s.decided, rec)
	s.trim(false)
}

// trim forgets the oldest decisions beyond keep_decided. Past the first
// load it waits for a batch to gather, so that a busy daemon does not pay
// a synced delete for every decision.
func (s *supervisor) trim(force bool) {
	keep := s.env.policy.Load().KeepDecided
	if len(s.decided) <= keep || (!force && len(s.decided) < keep+min(decidedTrimBatch, keep)) {
		return
	}
	n := len(s.decided) - keep
	ids := make([]string, n)
	for i, rec := range s.decided[:n] {
		ids[i] = rec.ID
	}
	s.env.removeAsync(ids...)
	for _, id := range ids {
		delete(s.byID, id)
	}
	s.decided = append([]*Approval(nil), s.decided[n:]...)
}

// list answers a page: pending requests (oldest first) are ordered from
// the index and the page's records read from the store in a goroutine;
// kept decisions (newest first) come from memory.
func (s *supervisor) list(c actor.Context, m *List) {
	var pending []*entry
	if m.Status == "" || m.Status == StatusPending {
		pending = make([]*entry, 0, len(s.byID)-len(s.decided))
		for _, e := range s.byID {
			if e.pending() {
				pending = append(pending, e)
			}
		}
		sort.Slice(pending, func(i, j int) bool {
			if pending[i].requested != pending[j].requested {
				return pending[i].requested < pending[j].requested
			}
			return pending[i].id < pending[j].id
		})
	}
	var decided []*Approval
	if m.Status != StatusPending {
		for i := len(s.decided) - 1; i >= 0; i-- {
			if rec := s.decided[i]; m.Status == "" || rec.Status == m.Status {
				decided = append(decided, rec)
			}
		}
	}
	total := len(pending) + len(decided)
	end := min(total, m.Offset+m.Limit)
	var ids []string // the page's pending requests
	for i := m.Offset; i < min(end, len(pending)); i++ {
		ids = append(ids, pending[i].id)
	}
	var rest []*Approval // the page's decisions
	if m.Offset < end && end > len(pending) {
		rest = decided[max(0, m.Offset-len(pending)) : end-len(pending)]
	}
	sender, system, records := c.Sender(), c.ActorSystem(), s.env.records
	go func() {
		p := &Page{Approvals: make([]*Approval, 0, len(ids)+len(rest)), Total: total, Offset: m.Offset, Limit: m.Limit}
		var reply any = p
		for _, id := range ids {
			rec, err := records.Get(id)
			if errors.Is(err, store.ErrNotFound) {
				continue // removed since (a failed creation)
			}
			if err != nil {
				reply = fmt.Errorf("read approval %s: %w", id, err)
				break
			}
			p.Approvals = append(p.Approvals, &rec)
		}
		p.Approvals = append(p.Approvals, rest...)
		if sender != nil {
			system.Root.Send(sender, reply)
		}
	}()
}

func (s *supervisor) resolve(prefix string) any {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if s.byID[prefix] != nil {
		return prefix
	}
	if len(prefix) < minPrefix {
		return kernel.Invalid("give at least the first %d characters of the approval id", minPrefix)
	}
	found := ""
	for id := range s.byID {
		if strings.HasPrefix(id, prefix) {
			if found != "" {
				return kernel.Invalid("%s matches more than one approval; give more of the id", prefix)
			}
			found = id
		}
	}
	if found == "" {
		return notFound(prefix)
	}
	return found
}

// ---- expiry of passive requests ----

// expiryHeap orders passive pending requests by expires_at; one timer,
// armed for the soonest, stands in for a timer per request.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIdx = -1
	return e
}

// tick is the expiry timer firing; gen tells a stale timer apart.
type tick struct{ gen int }

// arm sets the timer for the soonest passive expiry (measured from
// requested_at and escalations, as stored), unless it is already set for
// that time.
func (s *supervisor) arm(c actor.Context) {
	if len(s.expiry) == 0 {
		s.stopTimer()
		return
	}
	at := s.expiry[0].expires
	if s.timerAt == at && s.timer != nil {
		return
	}
	s.stopTimer()
	s.timerGen++
	s.timerAt = at
	s.timer = kernel.SendAfter(c, time.Duration(at-s.env.now().UnixNano()), &tick{gen: s.timerGen})
}

func (s *supervisor) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.timerAt = 0
}

// expireDue starts the actor of every passive request whose time is up;
// the actor applies the timeout_action as soon as it starts.
func (s *supervisor) expireDue(c actor.Context) {
	now := s.env.now().UnixNano()
	for len(s.expiry) > 0 && s.expiry[0].expires <= now {
		e := s.expiry[0]
		if !s.activate(c, e) {
			heap.Remove(&s.expiry, e.heapIdx) // failed: it waits for the daemon's restart
		}
	}
}
