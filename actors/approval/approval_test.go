package approval

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

func policy(mod func(*Policy)) Policy {
	p := DefaultPolicy()
	if mod != nil {
		mod(&p)
	}
	return p
}

func TestApproveReleasesTheWaiterOnceAndOnlyOnce(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	id := uuid.NewString()
	wait := h.gate(Request{ID: id, AgentID: "a1", AgentName: "ops", Action: "shell_exec",
		Description: "run ls", Payload: json.RawMessage(`{"cmd":"ls"}`), RequestedBy: "agent:a1"})
	waitFor(t, "the request to exist", func() bool { _, err := h.a.Get(context.Background(), id); return err == nil })
	rec, _ := h.a.Get(context.Background(), id)
	if rec.Status != StatusPending || rec.AgentName != "ops" || rec.ToolName != "shell_exec" || rec.RiskLevel != RiskHigh ||
		!rec.ExpiresAt.Equal(rec.RequestedAt.Add(300*time.Second)) || rec.TimeoutSecs != 300 || rec.DecidedAt != nil {
		t.Fatalf("pending record %+v", rec)
	}
	select {
	case v := <-wait:
		t.Fatalf("the waiter was answered before any decision: %v", v)
	default:
	}
	got, err := h.a.Decide(context.Background(), Decide{ID: id, Approve: true, By: api("api_key")})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusApproved || got.DecidedBy != "api_key" || got.DecidedVia != ViaAPI || got.SecondFactor != FactorNone || got.DecidedAt == nil {
		t.Fatalf("decided record %+v", got)
	}
	if w := recv(t, wait); w.Status != StatusApproved {
		t.Fatalf("waiter got %+v", w)
	}
	// A decision is final.
	for _, approve := range []bool{true, false} {
		_, err = h.a.Decide(context.Background(), Decide{ID: id, Approve: approve, By: api("api_key")})
		if k, code := kindOf(err); k != kernel.KindConflict || code != "approval_already_decided" {
			t.Fatalf("re-deciding: %v", err)
		}
	}
	// Asking again (an agent after a restart) answers at once.
	if again := recv(t, h.gate(Request{ID: id, AgentID: "a1", Action: "shell_exec"})); again.Status != StatusApproved {
		t.Fatalf("second gate %+v", again)
	}
	if ev := h.events.types(id); strings.Join(ev, ",") != "approval.requested,approval.approved" {
		t.Fatalf("events %v", ev)
	}
	waitFor(t, "audit", func() bool { return len(h.auditTypes(id)) >= 4 })
	want := "approval_requested:pending,approval_approved:approved,approval_decision_refused:rejected,approval_decision_refused:rejected"
	if got := strings.Join(h.auditTypes(id), ","); got != want {
		t.Fatalf("audit %s\nwant  %s", got, want)
	}
}

func TestRejectCarriesTheReason(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	id := uuid.NewString()
	wait := h.gate(Request{ID: id, AgentID: "a1", Action: "file_delete"})
	waitFor(t, "the request", func() bool { _, err := h.a.Get(context.Background(), id); return err == nil })
	rec, err := h.a.Decide(context.Background(), Decide{ID: id, Approve: false, Reason: "not on a Friday", By: api("loopback")})
	if err != nil || rec.Status != StatusRejected || rec.Reason != "not on a Friday" {
		t.Fatalf("%+v %v", rec, err)
	}
	if w := recv(t, wait); w.Status != StatusRejected || w.Reason != "not on a Friday" {
		t.Fatalf("waiter %+v", w)
	}
}

func TestExpiryDeniesAndAnExpiredRequestCannotBeDecided(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) { p.TimeoutSecs = 1 }), nil)
	id := uuid.NewString()
	rec := recv(t, h.gate(Request{ID: id, AgentID: "a1", Action: "shell_exec"}))
	if rec.Status != StatusExpired || rec.DecidedVia != ViaTimeout || rec.DecidedAt.Before(rec.ExpiresAt) {
		t.Fatalf("expired record %+v", rec)
	}
	for _, approve := range []bool{true, false} {
		_, err := h.a.Decide(context.Background(), Decide{ID: id, Approve: approve, By: api("api_key")})
		k, code := kindOf(err)
		if k != kernel.KindGone || code != "approval_expired" || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("deciding an expired request: %v", err)
		}
	}
	if ev := h.events.types(id); strings.Join(ev, ",") != "approval.requested,approval.expired" {
		t.Fatalf("events %v", ev)
	}
}

func TestTimeoutActionApproveOnlyForLowRisk(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) {
		p.TimeoutSecs, p.TimeoutAction = 1, TimeoutApprove
		p.RiskLevels = map[string]string{"read_*": RiskLow, "read_secrets": RiskCritical}
	}), nil)
	lowC := h.gate(Request{ID: uuid.NewString(), AgentID: "a1", Action: "read_file"})
	critC := h.gate(Request{ID: uuid.NewString(), AgentID: "a1", Action: "read_secrets", RiskLevel: RiskLow})
	raisedC := h.gate(Request{ID: uuid.NewString(), AgentID: "a1", Action: "read_file", RiskLevel: RiskMedium})
	low := recv(t, lowC)
	if low.Status != StatusApproved || low.DecidedVia != ViaTimeout || low.RiskLevel != RiskLow {
		t.Fatalf("low risk %+v", low)
	}
	// The longest matching glob wins; a caller can raise risk, never lower it.
	crit := recv(t, critC)
	if crit.Status != StatusExpired || crit.RiskLevel != RiskCritical {
		t.Fatalf("critical %+v", crit)
	}
	raised := recv(t, raisedC)
	if raised.Status != StatusExpired || raised.RiskLevel != RiskMedium {
		t.Fatalf("raised %+v", raised)
	}
}

func TestEscalationExtendsThenExpires(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) {
		p.TimeoutSecs, p.TimeoutAction, p.EscalateSecs, p.MaxEscalations = 1, TimeoutEscalate, 1, 1
		p.Notify = []NotifyTarget{{Channel: "tg", ChatID: "42", Approvers: []string{"@alice"}}}
	}), nil)
	id := uuid.NewString()
	rec := recv(t, h.gate(Request{ID: id, AgentID: "a1", Action: "shell_exec"}))
	if rec.Status != StatusExpired || rec.Escalations != 1 || !rec.ExpiresAt.Equal(rec.RequestedAt.Add(2*time.Second)) || rec.TimeoutSecs != 2 {
		t.Fatalf("after escalation %+v", rec)
	}
	if ev := h.events.types(id); strings.Join(ev, ",") != "approval.requested,approval.escalated,approval.expired" {
		t.Fatalf("events %v", ev)
	}
	waitFor(t, "three notices", func() bool { return len(h.posts.all()) == 3 })
	p := h.posts.all()
	if !strings.Contains(p[0], "Approval needed") || !strings.Contains(p[1], "escalation 1") || !strings.Contains(p[2], "expired") {
		t.Fatalf("notices %q", p)
	}
}

// Pending requests survive a restart with the time they had left: expiry
// is measured from requested_at, not from the restart.
func TestRestartKeepsPendingAndTheirDeadlines(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, policy(func(p *Policy) { p.TimeoutSecs = 60 }), c)
	keep := h.create("a1", "shell_exec")
	c.Advance(time.Second)
	lapse := h.create("a2", "file_write")
	h.stop()

	c.Advance(30 * time.Second)
	h.start()
	got, err := h.a.Get(context.Background(), keep.ID)
	if err != nil || got.Status != StatusPending || !got.ExpiresAt.Equal(keep.ExpiresAt) || !got.RequestedAt.Equal(keep.RequestedAt) {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	page, _ := h.a.List(context.Background(), StatusPending, 0, 10)
	if page.Total != 2 || page.Approvals[0].ID != keep.ID {
		t.Fatalf("pending list %+v", page)
	}
	if got, _ := h.a.Decide(context.Background(), Decide{ID: keep.ID, Approve: true, By: api("api_key")}); got == nil || got.Status != StatusApproved {
		t.Fatalf("decide after restart: %+v", got)
	}

	// The other one's deadline passes while fangd is down: it expires as
	// soon as it is loaded, not 60 s after the restart.
	h.stop()
	c.Advance(32 * time.Second)
	h.start()
	rec, err := h.a.Wait(t.Context(), lapse.ID, 10*time.Second)
	if err != nil || rec.Status != StatusExpired {
		t.Fatalf("lapsed while down: %+v %v", rec, err)
	}
	// Decided ones stay listed, newest first, after the pending.
	page, _ = h.a.List(context.Background(), "", 0, 10)
	if page.Total != 2 || page.Approvals[0].ID != lapse.ID || page.Approvals[1].ID != keep.ID {
		t.Fatalf("list after restart %+v", page.Approvals)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) { p.MaxPendingPerAgent = 2; p.Approvers = []string{"api_key"} }), nil)
	cases := []struct {
		req  Request
		kind kernel.Kind
	}{
		{Request{AgentID: "a1", Action: "rm -rf"}, kernel.KindInvalid},
		{Request{AgentID: "a1", Action: ""}, kernel.KindInvalid},
		{Request{AgentID: "", Action: "x"}, kernel.KindInvalid},
		{Request{AgentID: "a1", Action: "x", Payload: json.RawMessage(`{"a":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`)}, kernel.KindTooLarge},
		{Request{AgentID: "a1", Action: "x", Payload: json.RawMessage(`{bad`)}, kernel.KindInvalid},
		{Request{AgentID: "a1", Action: "x", RiskLevel: "extreme"}, kernel.KindInvalid},
		{Request{AgentID: "a1", Action: "x", Description: strings.Repeat("d", MaxDescription+1)}, kernel.KindTooLarge},
	}
	for i, c := range cases {
		if _, err := h.a.Create(context.Background(), c.req); err == nil {
			t.Fatalf("case %d accepted", i)
		} else if k, _ := kindOf(err); k != c.kind {
			t.Fatalf("case %d: %v", i, err)
		}
	}
	a := h.create("a1", "x")
	h.create("a1", "y")
	if _, err := h.a.Create(context.Background(), Request{AgentID: "a1", Action: "z"}); err == nil {
		t.Fatal("a third pending request for the agent was accepted")
	} else if k, code := kindOf(err); k != kernel.KindRateLimited || code != "too_many_pending_approvals" {
		t.Fatal(err)
	}
	h.create("a2", "z") // the cap is per agent
	if _, err := h.a.Get(context.Background(), uuid.NewString()); err == nil {
		t.Fatal("unknown id found")
	}
	_, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, By: api("loopback")})
	if k, code := kindOf(err); k != kernel.KindForbidden || code != "not_an_approver" {
		t.Fatalf("decision by a non-approver: %v", err)
	}
	if rec, _ := h.a.Get(context.Background(), a.ID); rec.Status != StatusPending {
		t.Fatal("a refused decision changed the request")
	}
	page, _ := h.a.List(context.Background(), "", 0, 50)
	if page.Total != 3 {
		t.Fatalf("%d requests", page.Total)
	}
	waitFor(t, "audited refusal", func() bool {
		for _, e := range h.auditTypes(a.ID) {
			if e == "approval_decision_refused:denied" {
				return true
			}
		}
		return false
	})
}

func TestCancelWithdraws(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	id := uuid.NewString()
	wait := h.gate(Request{ID: id, AgentID: "a1", Action: "shell_exec"})
	waitFor(t, "the request", func() bool { _, err := h.a.Get(context.Background(), id); return err == nil })
	if _, err := h.a.Cancel(context.Background(), id, "agent deleted"); err != nil {
		t.Fatal(err)
	}
	if w := recv(t, wait); w.Status != StatusCancelled || w.Reason != "agent deleted" {
		t.Fatalf("%+v", w)
	}
}

func TestKeepDecidedTrimsTheOldest(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) { p.KeepDecided = 3; p.MaxPendingPerAgent = 100 }), nil)
	var ids []string
	for i := 0; i < 8; i++ {
		rec := h.create("a1", "x")
		if _, err := h.a.Decide(context.Background(), Decide{ID: rec.ID, By: api("api_key")}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	waitFor(t, "the index", func() bool { p, _ := h.a.List(context.Background(), "", 0, 50); return p.Total <= 6 })
	h.restart()
	p, _ := h.a.List(context.Background(), StatusRejected, 0, 50)
	if p.Total != 3 || p.Approvals[0].ID != ids[7] || p.Approvals[2].ID != ids[5] {
		t.Fatalf("kept %d: %+v", p.Total, p.Approvals)
	}
	if _, err := h.a.Get(context.Background(), ids[0]); err == nil {
		t.Fatal("the oldest decision is still kept")
	}
}

func TestPolicyValidationNamesTheField(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Policy)
		want string
	}{
		{func(p *Policy) { p.TimeoutAction = "skip" }, "approval.timeout_action"},
		{func(p *Policy) { p.SecondFactor = "sms" }, "approval.second_factor"},
		{func(p *Policy) { p.RequireApproval = []string{"shell_["} }, "approval.require_approval[0]"},
		{func(p *Policy) { p.TOTPTools = []string{"a b"} }, "approval.totp_tools[0]"},
		{func(p *Policy) { p.RiskLevels = map[string]string{"x": "severe"} }, "approval.risk_levels"},
		{func(p *Policy) { p.Notify = []NotifyTarget{{Channel: "tg", ChatID: "1"}} }, "approval.notify[0].approvers"},
		{func(p *Policy) { p.TimeoutSecs = -1 }, "approval.timeout_secs"},
	} {
		p := policy(c.mod)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("want an error naming %s, got %v", c.want, err)
		}
	}
	p := Policy{}
	if err := p.Validate(); err != nil || p.TimeoutSecs != 300 || len(p.RequireApproval) != 0 || len(p.TrustReadOnlyHints) != 1 {
		t.Fatalf("defaults: %v %+v", err, p)
	}
	p = policy(func(p *Policy) { p.RequireApproval = []string{"mcp_github_*"}; p.AutoApprove = AutoApprove{All: true} })
	p.Validate()
	if !p.Gated("mcp_github_create_issue", ToolHints{}) || p.Gated("mcp_gitlab_x", ToolHints{}) {
		t.Fatal("glob gating")
	}
}

// A store written before the approvals index existed (records only) is
// indexed once at start: its pending requests and kept decisions are all
// there, and expiry still counts from requested_at.
func TestLoadBuildsTheIndexOfAnOlderStore(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, policy(func(p *Policy) { p.TimeoutSecs = 60 }), c)
	lapse := h.create("a2", "file_write")
	done := h.create("a1", "file_write")
	if _, err := h.a.Decide(context.Background(), Decide{ID: done.ID, Approve: false, Reason: "no", By: api("api_key")}); err != nil {
		t.Fatal(err)
	}
	c.Advance(10 * time.Second)
	keep := h.create("a1", "shell_exec")
	h.stop()
	// What an older fangd left behind: the records, no index, no marker.
	if err := h.db.DeletePrefix("approvals-index/"); err != nil {
		t.Fatal(err)
	}
	if err := h.db.DeletePrefix("approvals-meta/"); err != nil {
		t.Fatal(err)
	}
	c.Advance(55 * time.Second) // lapse's 60 s are up, keep's are not
	for round := 0; round < 2; round++ {
		h.start()
		if round == 0 {
			rec, err := h.a.Wait(t.Context(), lapse.ID, 10*time.Second)
			if err != nil || rec.Status != StatusExpired {
				t.Fatalf("the request whose time was up: %+v %v", rec, err)
			}
		}
		waitFor(t, "the expiry to be indexed", func() bool {
			p, _ := h.a.List(context.Background(), StatusPending, 0, 10)
			return p != nil && p.Total == 1
		})
		page, err := h.a.List(context.Background(), "", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range page.Approvals {
			got = append(got, a.ID+":"+a.Status)
		}
		want := []string{keep.ID + ":pending", lapse.ID + ":expired", done.ID + ":rejected"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("round %d: listed %v, want %v", round, got, want)
		}
		if rec, err := h.a.Get(context.Background(), keep.ID); err != nil || rec.Description != "wants shell_exec" || !rec.ExpiresAt.Equal(keep.ExpiresAt) {
			t.Fatalf("round %d: pending record %+v %v", round, rec, err)
		}
		h.stop()
	}
	if n, err := store.NewCollection[int](h.db, "approvals-meta").Get(indexVersionKey); err != nil || n != 1 {
		t.Fatalf("index marker %d %v", n, err)
	}
}

// A request nobody waits on has no actor running; the supervisor's expiry
// heap still expires it on time (audited and published as ever).
func TestAPassiveRequestExpiresWithoutAWaiter(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) { p.TimeoutSecs = 1 }), nil)
	first := h.create("a1", "shell_exec")
	second := h.create("a2", "shell_exec")
	for _, id := range []string{first.ID, second.ID} {
		waitFor(t, "the expiry", func() bool {
			rec, err := h.a.Get(context.Background(), id)
			return err == nil && rec.Status == StatusExpired
		})
		// The record is stored before its event is published: no caller
		// waits on a passive expiry, so the event may follow a moment later.
		waitFor(t, "the expiry event", func() bool {
			return strings.Join(h.events.types(id), ",") == "approval.requested,approval.expired"
		})
		waitFor(t, "the audit entry", func() bool {
			return strings.Join(h.auditTypes(id), ",") == "approval_requested:pending,approval_expired:expired"
		})
	}
	// The supervisor's index hears of a passive expiry once its audit
	// entry and event are durable, a moment after the audit log shows the
	// entry (CI read the list in between once).
	waitFor(t, "no request listed pending", func() bool {
		p, err := h.a.List(context.Background(), StatusPending, 0, 10)
		return err == nil && p.Total == 0
	})
}

// A creation and a decision are answered only once their events are
// durable (the harness's sink commits an event only when it is waited
// for): the daemon killed right after a 201 or a decision keeps the event
// that says it happened.
func TestAnswersWaitForTheirEventsToBeDurable(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	rec, err := h.a.Create(context.Background(), Request{AgentID: "a1", Action: "delete_file"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := h.events.durableTypes(rec.ID); strings.Join(ev, ",") != "approval.requested" {
		t.Fatalf("durable events when the creation was answered: %v", ev)
	}
	if _, err := h.a.Decide(context.Background(), Decide{ID: rec.ID, Approve: true, By: api("api_key")}); err != nil {
		t.Fatal(err)
	}
	if ev := h.events.durableTypes(rec.ID); strings.Join(ev, ",") != "approval.requested,approval.approved" {
		t.Fatalf("durable events when the decision was answered: %v", ev)
	}
	// An agent waiting at the gate is released only once the decision's
	// event is durable too.
	id := uuid.NewString()
	wait := h.gate(Request{ID: id, AgentID: "a1", Action: "shell_exec"})
	waitFor(t, "the request to exist", func() bool { _, err := h.a.Get(context.Background(), id); return err == nil })
	go h.a.Decide(context.Background(), Decide{ID: id, Approve: false, Reason: "no", By: api("api_key")})
	if w := recv(t, wait); w.Status != StatusRejected {
		t.Fatalf("waiter got %+v", w)
	}
	if ev := h.events.durableTypes(id); strings.Join(ev, ",") != "approval.requested,approval.rejected" {
		t.Fatalf("durable events when the waiter was released: %v", ev)
	}
}

// An index entry or a decided record that does not decode is moved aside;
// the supervisor loads the rest instead of failing on every start.
func TestUndecodableRecordsAreQuarantined(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	keep := h.create("a1", "shell_exec")
	broken := h.create("a2", "file_write")
	decided := h.create("a3", "file_write")
	if _, err := h.a.Decide(context.Background(), Decide{ID: decided.ID, Approve: true, By: api("api_key")}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h.db.Update(func(tx *store.Txn) error {
		if err := tx.Set([]byte("approvals-index/"+broken.ID), []byte(`{"status":`)); err != nil {
			return err
		}
		return tx.Set([]byte("approvals/"+decided.ID), []byte(`[`))
	})
	h.start()
	page, err := h.a.List(context.Background(), "", 0, 10)
	if err != nil || page.Total != 1 || page.Approvals[0].ID != keep.ID {
		t.Fatalf("list after damage: %+v %v", page, err)
	}
	keys, total, _ := h.db.QuarantinedKeys(10)
	if total != 2 {
		t.Fatalf("quarantined: %v", keys)
	}
}
