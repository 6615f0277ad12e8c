package approval

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// request is approval/<id>: one request's state, timer and waiters, while
// something needs it (a waiter, a decision, its expiry); the supervisor
// starts it on demand and it runs until the request is decided. Every
// request actor shares one Props: it learns its id from its name and its
// state from the store.
type request struct {
	env     *env
	rec     *Approval
	waiters []waiter
	timer   *time.Timer
	gen     int
	// saving: a change of the record is being written (env.saveThen);
	// messages wait in deferred until it is durable, so that nobody hears
	// of a decision before it is durable and decisions stay serial.
	saving   bool
	deferred []heldMsg
}

func (r *request) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		// The actor of a request just created for a gated call takes the
		// record from the supervisor (it wrote it); one started for a
		// passive request, or restarted, reads the latest from the store.
		self := c.Self().Id
		id := self[strings.LastIndex(self, "/")+1:]
		if b, ok := r.env.boot.LoadAndDelete(id); ok {
			r.rec = b.(*Approval)
		} else {
			rec, err := r.env.records.Get(id)
			if errors.Is(err, store.ErrNotFound) {
				c.Stop(c.Self())
				return
			}
			if err != nil {
				panic(fmt.Errorf("approval %s: load: %w", id, err))
			}
			r.rec = &rec
			if !rec.Pending() {
				// Decided in the store but not in the index (a decision
				// whose report was lost with a crash of this actor).
				c.Send(c.Parent(), &decided{rec: r.rec})
			}
		}
		if r.rec.Pending() {
			r.schedule(c)
		}
	case *Gate, *Await, *Decide, *Cancel, *expire, *clusterDecided:
		if r.saving {
			r.deferred = append(r.deferred, heldMsg{msg: m, sender: c.Sender()})
			return
		}
		r.handle(c, m, c.Sender())
	case *persisted:
		r.saving = false
		m.then(c, m.err)
		for len(r.deferred) > 0 && !r.saving {
			h := r.deferred[0]
			r.deferred = r.deferred[1:]
			r.handle(c, h.msg, h.sender)
		}
	case *actor.Stopping:
		r.stopTimer()
		for _, h := range r.deferred {
			reply(c, h.sender, kernel.Unavailable("approval %s is stopping; ask again", r.rec.ID))
		}
		r.deferred = nil
		if r.rec != nil && r.rec.Pending() {
			r.release(c, kernel.Unavailable("approval %s is stopping; ask again", r.rec.ID))
		}
	case *actor.Restarting:
		r.stopTimer()
		r.release(c, kernel.Unavailable("approval %s restarted; ask again", r.rec.ID))
	}
}

func (r *request) handle(c actor.Context, msg any, sender *actor.PID) {
	switch m := msg.(type) {
	case *Gate:
		r.wait(c, sender, time.Time{})
	case *Await:
		r.wait(c, sender, m.Until)
	case *Decide:
		r.decide(c, m, sender)
	case *Cancel:
		if !r.rec.Pending() {
			reply(c, sender, alreadyDecided(r.rec))
			return
		}
		reason := m.Reason
		if reason == "" {
			reason = "withdrawn"
		}
		r.finalize(c, StatusCancelled, Decider{Identity: "system", Via: ViaSystem}, FactorNone, reason, sender)
	case *expire:
		if m.gen == r.gen {
			r.expire(c)
		}
	case *clusterDecided:
		r.applyCluster(c, m.rec)
	}
}

func reply(c actor.Context, to *actor.PID, msg any) {
	if to != nil {
		c.Send(to, msg)
	}
}

// wait answers at once when decided, else keeps the caller until the
// decision (or, for a long poll, until its deadline passes).
func (r *request) wait(c actor.Context, sender *actor.PID, until time.Time) {
	if !r.rec.Pending() {
		reply(c, sender, r.rec)
		return
	}
	if sender == nil {
		return
	}
	now := time.Now()
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if w.until.IsZero() || w.until.After(now) {
			kept = append(kept, w)
		}
	}
	r.waiters = append(kept, waiter{pid: sender, until: until})
}

// release answers every waiter with msg.
func (r *request) release(c actor.Context, msg any) {
	for _, w := range r.waiters {
		c.Send(w.pid, msg)
	}
	r.waiters = nil
}

func (r *request) refuse(c actor.Context, sender *actor.PID, m *Decide, err *kernel.Error) {
	verb := "reject"
	if m.Approve {
		verb = "approve"
	}
	outcome := "rejected"
	if err.Kind == kernel.KindForbidden {
		outcome = "denied"
	}
	ev := audit.Event{EventType: "approval_decision_refused", AgentID: r.rec.AgentID, Outcome: outcome, Actor: m.By.Identity, SourceIP: m.By.SourceIP,
		Details: fmt.Sprintf("id=%s attempt=%s via=%s reason=%s", r.rec.ID, verb, m.By.Via, err.Code)}
	system := c.ActorSystem()
	go func() {
		_ = r.env.appendAudit(ev)
		if sender != nil {
			system.Root.Send(sender, err)
		}
	}()
}

func (r *request) decide(c actor.Context, m *Decide, sender *actor.PID) {
	if !r.rec.Pending() {
		r.refuse(c, sender, m, alreadyDecided(r.rec))
		return
	}
	if m.By.Via == ViaAPI && !r.env.policy.Load().APIApprover(m.By.Identity) {
		r.refuse(c, sender, m, kernel.Errorf(kernel.KindForbidden, "not_an_approver",
			"%s is not on the approver list ([approval] approvers) and cannot decide approvals", m.By.Identity))
		return
	}
	if m.Modify {
		r.finalize(c, StatusModified, m.By, FactorNone, m.Reason, sender)
		return
	}
	if !m.Approve {
		r.finalize(c, StatusRejected, m.By, FactorNone, m.Reason, sender)
		return
	}
	if !r.rec.SecondFactorRequired {
		r.finalize(c, StatusApproved, m.By, FactorNone, m.Reason, sender)
		return
	}
	// The TOTP actor checks the code; the mailbox keeps serving meanwhile
	// (a concurrent decision is caught by the re-check below).
	f := c.RequestFuture(r.env.totp, &verify{Code: m.Code, Who: m.By, ApprovalID: r.rec.ID}, kernel.DefaultAskTimeout+audit.AppendTimeout)
	c.ReenterAfter(f, func(res any, err error) {
		switch v := res.(type) {
		case *verified:
			if !r.rec.Pending() {
				r.refuse(c, sender, m, alreadyDecided(r.rec))
				return
			}
			r.finalize(c, StatusApproved, m.By, v.factor, m.Reason, sender)
		case error:
			reply(c, sender, v) // the TOTP actor audited the failure
		default:
			if err == nil {
				err = fmt.Errorf("approvals-totp answered %T", res)
			}
			reply(c, sender, kernel.Unavailable("the second-factor check did not answer: %v", err))
		}
	})
}

// finalize records the decision durably, then (once its audit entry is
// durable) answers the decider and every waiter and tells the supervisor.
// In cluster mode the decision is first the compare-and-swap in etcd
// (cluster.go): when another node decided first, its decision is applied
// here instead and this one refused.
func (r *request) finalize(c actor.Context, status string, by Decider, factor, reason string, sender *actor.PID) {
	now := r.env.now().UTC()
	if r.env.clusterStore() == nil {
		r.commit(c, status, by, factor, reason, now, sender)
		return
	}
	r.saving = true // decisions wait for the etcd answer as for a write
	self, root, rec := c.Self(), c.ActorSystem().Root, r.rec
	go func() {
		lost, err := r.env.clusterDecide(rec, status, by, reason, now)
		root.Send(self, &persisted{err: err, then: func(c actor.Context, err error) {
			switch {
			case err != nil:
				reply(c, sender, err)
			case lost != nil:
				reply(c, sender, alreadyDecided(approvalOf(*lost)))
				r.applyCluster(c, *lost)
			default:
				r.commit(c, status, by, factor, reason, now, sender)
			}
		}})
	}()
}

// applyCluster records a decision etcd holds (made through another node,
// or an expiry a sweep marked) for this pending request.
func (r *request) applyCluster(c actor.Context, rec ClusterRecord) {
	if !r.rec.Pending() || rec.Status == StatusPending {
		return
	}
	at := r.env.now().UTC()
	if rec.DecidedAt != nil {
		at = *rec.DecidedAt
	}
	reason := rec.Reason
	if rec.DecidedOn != "" {
		reason = strings.TrimSpace("decided on cluster node " + rec.DecidedOn + " " + reason)
	}
	r.commit(c, rec.Status, Decider{Identity: rec.DecidedBy, Via: rec.DecidedVia}, FactorNone, reason, at, nil)
}

// commit saves a decision and tells everyone once it is durable.
func (r *request) commit(c actor.Context, status string, by Decider, factor, reason string, now time.Time, sender *actor.PID) {
	next := *r.rec
	next.Status, next.DecidedAt, next.DecidedBy, next.DecidedVia = status, &now, by.Identity, by.Via
	next.SecondFactor, next.Reason = factor, reason
	r.save(c, &next, func(c actor.Context, err error) {
		if err != nil {
			reply(c, sender, err)
			return
		}
		r.finalized(c, &next, by, factor, reason, sender)
	})
}

// save writes next without waiting and continues with then once it is
// durable; until then the actor's other messages wait.
func (r *request) save(c actor.Context, next *Approval, then func(c actor.Context, err error)) {
	r.saving = true
	r.env.saveThen(c, next, then)
}

// finalized tells everyone of a decision that is durable.
func (r *request) finalized(c actor.Context, rec *Approval, by Decider, factor, reason string, sender *actor.PID) {
	status := rec.Status
	r.rec = rec
	r.stopTimer()
	waiters := r.waiters
	r.waiters = nil
	details := fmt.Sprintf("id=%s action=%s risk=%s via=%s second_factor=%s", rec.ID, rec.Action, rec.RiskLevel, by.Via, factor)
	if reason != "" {
		details += " reason=" + truncate(reason, 200)
	}
	ev := audit.Event{EventType: "approval_" + status, AgentID: rec.AgentID, Outcome: status, Actor: by.Identity, SourceIP: by.SourceIP, Details: details}
	source := "system"
	if by.Via == ViaAPI {
		source = "api"
	} else if by.Via == ViaChannel {
		source = by.Identity
	}
	// Answered once the audit entry and the event are both durable.
	published := r.env.publish("approval."+status, rec, source)
	system, parent := c.ActorSystem(), c.Parent()
	go func() {
		err := r.env.appendAudit(ev)
		if perr := published(); err == nil {
			err = perr
		}
		if sender != nil {
			var answer any = rec
			if err != nil {
				answer = err
			}
			system.Root.Send(sender, answer)
		}
		for _, w := range waiters {
			system.Root.Send(w.pid, rec)
		}
		system.Root.Send(parent, &decided{rec: rec})
	}()
	r.env.post(decisionNotice(rec), by.chat)
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// schedule arms the timer for the request's expiry, measured from
// requested_at (and escalations), not from when this actor started.
func (r *request) schedule(c actor.Context) {
	r.stopTimer()
	r.gen++
	r.timer = kernel.SendAfter(c, r.rec.ExpiresAt.Sub(r.env.now()), &expire{gen: r.gen})
}

func (r *request) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// expire applies the policy's timeout_action to an unanswered request.
func (r *request) expire(c actor.Context) {
	if !r.rec.Pending() {
		return
	}
	if left := r.rec.ExpiresAt.Sub(r.env.now()); left > 0 {
		r.schedule(c) // the timer fired early (clock change)
		return
	}
	p := r.env.policy.Load()
	switch {
	case p.TimeoutAction == TimeoutEscalate && r.rec.Escalations < p.MaxEscalations:
		r.escalate(c)
	case p.TimeoutAction == TimeoutApprove && r.rec.RiskLevel == RiskLow:
		r.finalize(c, StatusApproved, Decider{Identity: "policy", Via: ViaTimeout}, FactorNone, "no decision in time; low-risk actions are approved on timeout (timeout_action = approve)", nil)
	default:
		r.finalize(c, StatusExpired, Decider{Identity: "system", Via: ViaTimeout}, FactorNone, "no decision in time", nil)
	}
}

func (r *request) escalate(c actor.Context) {
	pol := r.env.policy.Load()
	next := *r.rec
	next.Escalations++
	next.ExpiresAt = next.ExpiresAt.Add(time.Duration(pol.EscalateSecs) * time.Second)
	next.TimeoutSecs += pol.EscalateSecs
	r.save(c, &next, func(c actor.Context, err error) { r.escalated(c, &next, err) })
}

// escalated takes an escalation's write.
func (r *request) escalated(c actor.Context, next *Approval, err error) {
	pol := r.env.policy.Load()
	if err != nil {
		// Try again shortly rather than expire a request we could not
		// extend.
		r.env.log.Error().Err(err).Str("approval_id", next.ID).Msg("could not record an escalation")
		self, system := c.Self(), c.ActorSystem()
		r.gen++
		gen := r.gen
		r.timer = time.AfterFunc(time.Second, func() { system.Root.Send(self, &expire{gen: gen}) })
		return
	}
	rec := next
	r.rec = rec
	r.schedule(c)
	c.Send(c.Parent(), &changed{rec: rec})
	go func() {
		_ = r.env.appendAudit(audit.Event{EventType: "approval_escalated", AgentID: rec.AgentID, Outcome: "pending", Actor: "system",
			Details: fmt.Sprintf("id=%s escalation=%d/%d expires_at=%s", rec.ID, rec.Escalations, pol.MaxEscalations, rec.ExpiresAt.Format(time.RFC3339))})
	}()
	r.env.publish("approval.escalated", rec, "system") // nobody waits for an escalation
	r.env.post(escalationNotice(rec), NotifyTarget{})
}
