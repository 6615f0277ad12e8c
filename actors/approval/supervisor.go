package approval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
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

type entry struct {
	rec *Approval
	pid *actor.PID // nil once decided (or if its actor was given up on)
	// announced: the creation is audited. Until then decisions wait in
	// held, so the audit chain never shows a decision before its request.
	announced bool
	held      []heldMsg
}

type heldMsg struct {
	msg    any
	sender *actor.PID
}

// supervisor is "approvals": the index of every request it keeps and the
// parent of every pending one's actor.
type supervisor struct {
	env            *env
	props          *actor.Props // shared by every request actor
	byID           map[string]*entry
	pendingByAgent map[string]int
	decided        []*Approval // oldest decision first
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := s.load(c); err != nil {
			panic(fmt.Errorf("approvals: load: %w", err))
		}
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
		c.Respond(e.rec)
	case *Await:
		e := s.byID[m.ID]
		if e == nil {
			c.Respond(notFound(m.ID))
			return
		}
		s.forwardOrAnswer(c, e)
	case *List:
		c.Respond(s.list(m))
	case *Decide:
		s.route(c, m.ID, m.Approve, m.By)
	case *Cancel:
		s.route(c, m.ID, false, Decider{Identity: "system", Via: ViaSystem})
	case *Resolve:
		c.Respond(s.resolve(m.Prefix))
	case *changed:
		if e := s.byID[m.rec.ID]; e != nil && (e.rec.Pending() || !m.rec.Pending()) {
			e.rec = m.rec
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
	case *actor.Terminated:
		for _, e := range s.byID {
			if e.pid != nil && e.pid.Equal(m.Who) {
				s.env.log.Error().Str("approval_id", e.rec.ID).Msg("approval actor stopped by its supervisor; it restarts with the daemon")
				e.pid = nil
			}
		}
	}
}

func notFound(id string) error {
	return kernel.Errorf(kernel.KindNotFound, "approval_not_found", "approval %s not found", id)
}

// load re-spawns every pending request and indexes the kept decisions: a
// supervisor restart and a daemon restart land here alike.
func (s *supervisor) load(c actor.Context) error {
	e := s.env
	s.props = e.k.Props(func() actor.Actor { return &request{env: e} })
	s.byID, s.pendingByAgent, s.decided = map[string]*entry{}, map[string]int{}, nil
	var pending []*Approval
	err := s.env.records.Each(func(id string, a Approval) bool {
		rec := a
		if rec.Pending() {
			pending = append(pending, &rec)
		} else {
			s.decided = append(s.decided, &rec)
			s.byID[id] = &entry{rec: &rec, announced: true}
		}
		return true
	})
	if err != nil {
		return err
	}
	sort.Slice(s.decided, func(i, j int) bool { return decidedBefore(s.decided[i], s.decided[j]) })
	for _, rec := range pending {
		e := &entry{rec: rec, announced: true}
		s.byID[rec.ID] = e
		s.pendingByAgent[rec.AgentID]++
		if e.pid, err = s.spawn(c, rec); err != nil {
			s.env.log.Error().Err(err).Str("approval_id", rec.ID).Msg("could not start an approval actor")
		}
	}
	s.trim(true)
	return nil
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

// forwardOrAnswer hands a wait to the request's actor, or answers at once
// when it is decided.
func (s *supervisor) forwardOrAnswer(c actor.Context, e *entry) {
	if e.rec.Pending() && e.pid != nil {
		c.Forward(e.pid)
		return
	}
	if e.rec.Pending() {
		c.Respond(kernel.Errorf(kernel.KindUnavailable, "approval_unavailable", "approval %s failed and was stopped; it starts again with the daemon", e.rec.ID))
		return
	}
	c.Respond(e.rec)
}

// route sends a decision to a pending request's actor; a decided one is
// answered here (409, or 410 for an expired one) and the attempt audited.
func (s *supervisor) route(c actor.Context, id string, approve bool, by Decider) {
	e := s.byID[id]
	if e == nil {
		c.Respond(notFound(id))
		return
	}
	if e.rec.Pending() {
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

// deliver hands a decision to a pending request's actor once its creation
// is audited (holding it until then).
func (s *supervisor) deliver(c actor.Context, e *entry, msg any, sender *actor.PID) {
	switch {
	case !e.announced:
		e.held = append(e.held, heldMsg{msg: msg, sender: sender})
	case e.pid == nil:
		if sender != nil {
			c.Send(sender, kernel.Errorf(kernel.KindUnavailable, "approval_unavailable", "approval %s failed and was stopped; it starts again with the daemon", e.rec.ID))
		}
	case !e.rec.Pending():
		// Decided while held: answered by the actor (409) if it still
		// runs, else here.
		if sender != nil {
			c.Send(sender, alreadyDecided(e.rec))
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
	if n := s.pendingByAgent[req.AgentID]; n >= env.policy.MaxPendingPerAgent {
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
		RiskLevel: env.policy.Risk(req.Action, req.RiskLevel), Status: StatusPending, RequestedAt: now, CreatedAt: now,
		ExpiresAt: now.Add(env.policy.Timeout()), TimeoutSecs: env.policy.TimeoutSecs, SessionID: req.SessionID,
		RequestedBy: req.RequestedBy, SecondFactorRequired: env.policy.TOTPApplies(req.Action)}
	if rec.ActionSummary == "" {
		rec.ActionSummary = summarize(rec)
	}
	if err := env.records.Put(rec.ID, *rec); err != nil {
		c.Respond(err)
		return
	}
	pid, err := s.spawn(c, rec)
	if err != nil {
		_ = env.records.Delete(rec.ID)
		c.Respond(err)
		return
	}
	s.byID[rec.ID] = &entry{rec: rec, pid: pid}
	s.pendingByAgent[rec.AgentID]++
	if gate {
		c.Forward(pid) // the actor keeps the caller until the decision
	}
	ev := audit.Event{EventType: "approval_requested", AgentID: rec.AgentID, Outcome: "pending", Actor: rec.RequestedBy, SourceIP: req.SourceIP,
		Details: fmt.Sprintf("id=%s action=%s risk=%s expires_at=%s second_factor_required=%t", rec.ID, rec.Action, rec.RiskLevel,
			rec.ExpiresAt.Format("2006-01-02T15:04:05Z"), rec.SecondFactorRequired)}
	// The creation is answered once both its audit entry and its event are
	// durable: a crash right after a 201 must not lose either.
	published := env.publish("approval.requested", rec, rec.RequestedBy)
	sender, system, self := c.Sender(), c.ActorSystem(), c.Self()
	go func() {
		err := env.appendAudit(ev)
		if perr := published(); err == nil {
			err = perr
		}
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
	if e == nil || !e.rec.Pending() {
		return
	}
	e.rec = rec
	if s.pendingByAgent[rec.AgentID]--; s.pendingByAgent[rec.AgentID] <= 0 {
		delete(s.pendingByAgent, rec.AgentID)
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
	keep := s.env.policy.KeepDecided
	if len(s.decided) <= keep || (!force && len(s.decided) < keep+min(decidedTrimBatch, keep)) {
		return
	}
	n := len(s.decided) - keep
	ids := make([]string, n)
	for i, rec := range s.decided[:n] {
		ids[i] = rec.ID
	}
	if err := s.env.records.DeleteMany(ids); err != nil {
		s.env.log.Warn().Err(err).Msg("could not trim old decided approvals")
		return
	}
	for _, id := range ids {
		delete(s.byID, id)
	}
	s.decided = append([]*Approval(nil), s.decided[n:]...)
}

func (s *supervisor) list(m *List) *Page {
	var pending []*Approval
	for _, e := range s.byID {
		if e.rec.Pending() && (m.Status == "" || m.Status == StatusPending) {
			pending = append(pending, e.rec)
		}
	}
	sort.Slice(pending, func(i, j int) bool {
		if !pending[i].RequestedAt.Equal(pending[j].RequestedAt) {
			return pending[i].RequestedAt.Before(pending[j].RequestedAt)
		}
		return pending[i].ID < pending[j].ID
	})
	all := pending
	if m.Status != StatusPending {
		for i := len(s.decided) - 1; i >= 0; i-- {
			if rec := s.decided[i]; m.Status == "" || rec.Status == m.Status {
				all = append(all, rec)
			}
		}
	}
	p := &Page{Approvals: []*Approval{}, Total: len(all), Offset: m.Offset, Limit: m.Limit}
	if m.Offset < len(all) {
		p.Approvals = all[m.Offset:min(len(all), m.Offset+m.Limit)]
	}
	return p
}

func (s *supervisor) resolve(prefix string) any {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	if e := s.byID[prefix]; e != nil {
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
