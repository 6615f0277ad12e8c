package http

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// shellTool is a toolbox with one tool the tests gate (shell_exec).
type shellTool struct {
	mu  sync.Mutex
	ran []string
}

func (s *shellTool) Tools() []llm.Tool {
	return []llm.Tool{{Name: "shell_exec", Description: "run a command", InputSchema: json.RawMessage(`{"type":"object","properties":{"cmd":{"type":"string"}}}`)}}
}

func (s *shellTool) runs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ran)
}

func (s *shellTool) Call(_ context.Context, inv agent.ToolInvocation) (agent.ToolOutput, error) {
	s.mu.Lock()
	s.ran = append(s.ran, string(inv.Arguments))
	s.mu.Unlock()
	return agent.ToolOutput{Text: "output of " + string(inv.Arguments) + ": 42 files"}, nil
}

// withApprovals adds agents (on a fake OpenAI provider whose model calls
// shell_exec when asked to "run" something) and approvals to a test server.
// shellModel is the fake model the approval tests talk to: "run CMD"
// (with tools offered) calls shell_exec with CMD, a tool result is
// answered "tool said: ...", anything else is echoed.
func shellModel(r llmtest.Request) llmtest.Reply {
	last := r.LastMessage()
	if last.Role == "tool" {
		return llmtest.Reply{Text: "tool said: " + last.Content}
	}
	if i := strings.Index(last.Content, "run "); i >= 0 && len(r.Tools) > 0 {
		return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "shell_exec", Arguments: `{"cmd":"` + last.Content[i+4:] + `"}`}}}
	}
	return llmtest.Reply{Text: "echo: " + last.Content}
}

func withApprovals(t *testing.T, mod func(*approval.Policy)) (func(*Server), *shellTool) {
	tools := &shellTool{}
	return func(s *Server) {
		fake := llmtest.NewOpenAI("")
		t.Cleanup(fake.Close)
		fake.SetResponder(shellModel)
		d := s.deps
		vault := testVault(t, s)
		p := approval.DefaultPolicy()
		p.RequireApproval = []string{"shell_*"}
		// Only shell_* waits (the tests' other tools run at once).
		p.AutoApprove = approval.AutoApprove{All: true}
		if mod != nil {
			mod(&p)
		}
		apps, err := approval.Start(d.Kernel, d.Store, vault, d.Audit, approval.Options{Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		testAgents(t, s, fakeRegistry(t, "", fake.BaseURL), agent.Options{Tools: tools, Gate: apps})
		s.deps.Approvals = apps
	}, tools
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("status %d: %v: %s", r.status, err, r.body)
	}
}

func (ts *testServer) mustStatus(t *testing.T, want int, method, path, body string) response {
	t.Helper()
	r := ts.authed(t, method, path, body)
	if r.status != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

func (ts *testServer) newAgent(t *testing.T, name string) agent.Agent {
	t.Helper()
	var a agent.Agent
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"`+name+`","model":"fake/m","tools":["shell_exec"]}`).json(t, &a)
	return a
}

func TestApprovalEndpoints(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "ops")

	// The seed's body, plus LibreFang's names.
	r := ts.mustStatus(t, 201, "POST", "/api/approvals", `{"agent_id":"`+a.ID+`","action":"delete_file","description":"Agent wants to delete /important/config.toml","payload":{"path":"/important/config.toml"}}`)
	var rec map[string]any
	r.json(t, &rec)
	for _, f := range []string{"id", "agent_id", "agent_name", "action", "tool_name", "description", "action_summary", "payload", "risk_level",
		"status", "requested_at", "created_at", "expires_at", "timeout_secs", "decided_at", "decided_by", "decided_via", "second_factor", "reason"} {
		if _, ok := rec[f]; !ok {
			t.Fatalf("field %s missing from %s", f, r.body)
		}
	}
	id := rec["id"].(string)
	if rec["status"] != "pending" || rec["agent_name"] != "ops" || rec["risk_level"] != "high" || rec["payload"].(map[string]any)["path"] != "/important/config.toml" {
		t.Fatalf("created %s", r.body)
	}
	ts.mustStatus(t, 201, "POST", "/api/v1/approvals", `{"agent_id":"ops","tool_name":"file_write","risk_level":"critical"}`)

	var page approval.Page
	ts.mustStatus(t, 200, "GET", "/api/approvals?status=pending&limit=1", "").json(t, &page)
	if page.Total != 2 || len(page.Approvals) != 1 || page.Approvals[0].ID != id || page.Limit != 1 {
		t.Fatalf("page %+v", page)
	}

	// A long poll answers as soon as someone decides.
	polled := make(chan response, 1)
	go func() { polled <- ts.authed(t, "GET", "/api/approvals/"+id+"?wait=30", "") }()
	time.Sleep(50 * time.Millisecond) // let the poll start; the assertion below does not depend on it
	ts.mustStatus(t, 200, "POST", "/api/approvals/"+id+"/approve", `{}`).json(t, &rec)
	if rec["status"] != "approved" || rec["decided_by"] != "api_key" || rec["decided_via"] != "api" || rec["decided_at"] == nil {
		t.Fatalf("approved %v", rec)
	}
	select {
	case p := <-polled:
		var got approval.Approval
		p.json(t, &got)
		if got.Status != "approved" {
			t.Fatalf("the long poll returned %s", p.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll did not return on the decision")
	}
	// A short poll on a pending one returns it pending after the wait.
	var other approval.Approval
	ts.mustStatus(t, 200, "GET", "/api/approvals?status=pending", "").json(t, &page)
	ts.mustStatus(t, 200, "GET", "/api/approvals/"+page.Approvals[0].ID+"?wait=1", "").json(t, &other)
	if other.Status != "pending" || other.Action != "file_write" || other.RiskLevel != "critical" {
		t.Fatalf("%+v", other)
	}

	// Re-deciding is a conflict; nothing changes.
	if e := ts.mustStatus(t, 409, "POST", "/api/approvals/"+id+"/reject", `{"reason":"late"}`).envelope(t); e.Code != "approval_already_decided" {
		t.Fatal(e)
	}
	// Bad input.
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/api/approvals/not-a-uuid", "", 400, "invalid_approval_id"},
		{"POST", "/api/approvals/../x/approve", "{}", 404, "not_found"},
		{"GET", "/api/approvals/00000000-0000-4000-8000-000000000000", "", 404, "approval_not_found"},
		{"POST", "/api/approvals/00000000-0000-4000-8000-000000000000/approve", "{}", 404, "approval_not_found"},
		{"GET", "/api/approvals?status=maybe", "", 400, "invalid_query"},
		{"GET", "/api/approvals?limit=501", "", 400, "invalid_query"},
		{"GET", "/api/approvals/" + id + "?wait=61", "", 400, "invalid_query"},
		{"POST", "/api/approvals", `{"agent_id":"` + a.ID + `","action":"x","extra":1}`, 400, "unknown_field"},
		{"POST", "/api/approvals", `{"agent_id":"nobody","action":"x"}`, 404, "agent_not_found"},
		{"POST", "/api/approvals", `{"agent_id":"` + a.ID + `"}`, 400, "invalid_input"},
		{"POST", "/api/approvals", `{"agent_id":"` + a.ID + `","action":"rm -rf /"}`, 400, "invalid_action"},
		{"POST", "/api/approvals", `{"agent_id":"` + a.ID + `","action":"x","payload":"` + strings.Repeat("p", 70<<10) + `"}`, 413, "payload_too_large"},
		{"POST", "/api/approvals", `{"agent_id":"` + a.ID + `","action":"x","risk_level":"extreme"}`, 400, "invalid_risk_level"},
		{"POST", "/api/approvals/" + id + "/approve", `{"totp_code":1}`, 400, "invalid_json"},
	} {
		r := ts.authed(t, c.method, c.path, c.body)
		if r.status != c.status {
			t.Fatalf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
		if e := r.envelope(t); e.Code != c.code {
			t.Fatalf("%s %s: code %s", c.method, c.path, e.Code)
		}
	}
	// More than max_pending_per_agent pending: 429.
	for i := 0; i < 4; i++ {
		ts.mustStatus(t, 201, "POST", "/api/approvals", `{"agent_id":"ops","action":"a`+strconv.Itoa(i)+`"}`)
	}
	if e := ts.mustStatus(t, 429, "POST", "/api/approvals", `{"agent_id":"ops","action":"one_too_many"}`).envelope(t); e.Code != "too_many_pending_approvals" {
		t.Fatal(e)
	}
	ts.mustStatus(t, 200, "GET", "/api/approvals", "").json(t, &page)
	if page.Total != 6 || page.Approvals[5].ID != id {
		t.Fatalf("pending first, then decided: %+v", page)
	}
	// Every change and refusal is in the audit log.
	var types []string
	for _, e := range ts.recent(t, 200) {
		types = append(types, e.EventType+":"+e.Outcome)
	}
	all := strings.Join(types, " ")
	for _, want := range []string{"approval_requested:pending", "approval_approved:approved", "approval_decision_refused:rejected"} {
		if !strings.Contains(all, want) {
			t.Fatalf("audit lacks %s: %s", want, all)
		}
	}
}

// The seed's promise end to end over HTTP: the agent's gated tool call
// waits; approving through the API runs it and the agent's reply has its
// result; a rejection reaches the agent as a refusal.
func TestGatedToolThroughTheAPI(t *testing.T) {
	t.Parallel()
	extra, tools := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "ops")
	reply := make(chan response, 1)
	go func() {
		reply <- ts.authed(t, "POST", "/api/agents/"+a.ID+"/message", `{"message":"please run ls /srv"}`)
	}()
	var page approval.Page
	deadline := time.Now().Add(20 * time.Second)
	for page.Total == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		ts.mustStatus(t, 200, "GET", "/api/approvals?status=pending", "").json(t, &page)
	}
	if page.Total != 1 || page.Approvals[0].Action != "shell_exec" || string(page.Approvals[0].Payload) != `{"cmd":"ls /srv"}` {
		t.Fatalf("pending %+v", page)
	}
	if tools.runs() != 0 {
		t.Fatal("ran before approval")
	}
	ts.mustStatus(t, 200, "POST", "/api/approvals/"+page.Approvals[0].ID+"/approve", ``)
	r := <-reply
	var res agent.TurnResult
	r.json(t, &res)
	if r.status != 200 || !strings.Contains(res.Response, "42 files") || len(res.ToolCalls) != 1 || res.ToolCalls[0].ApprovalID != page.Approvals[0].ID {
		t.Fatalf("message answer %d %s", r.status, r.body)
	}

	go func() { reply <- ts.authed(t, "POST", "/api/agents/"+a.ID+"/message", `{"message":"run rm -rf /"}`) }()
	page.Total = 0
	for page.Total == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		ts.mustStatus(t, 200, "GET", "/api/approvals?status=pending", "").json(t, &page)
	}
	ts.mustStatus(t, 200, "POST", "/api/approvals/"+page.Approvals[0].ID+"/reject", `{"reason":"absolutely not"}`)
	(<-reply).json(t, &res)
	if !strings.Contains(res.Response, "rejected") || !strings.Contains(res.Response, "absolutely not") || tools.runs() != 1 {
		t.Fatalf("after rejection: %+v, ran %d", res, tools.runs())
	}
}

func TestOnlyApproversDecide(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, func(p *approval.Policy) { p.Approvers = []string{"oncall"} })
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "ops")
	var rec approval.Approval
	ts.mustStatus(t, 201, "POST", "/api/approvals", `{"agent_id":"`+a.ID+`","action":"x"}`).json(t, &rec)
	if e := ts.mustStatus(t, 403, "POST", "/api/approvals/"+rec.ID+"/approve", `{}`).envelope(t); e.Code != "not_an_approver" {
		t.Fatal(e)
	}
	ts.mustStatus(t, 200, "GET", "/api/approvals/"+rec.ID, "").json(t, &rec)
	if rec.Status != "pending" {
		t.Fatal("a refused decision changed the request")
	}
}

func TestTOTPEndpoints(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, func(p *approval.Policy) { p.SecondFactor = "totp"; p.MaxPendingPerAgent = 50 })
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "ops")
	var st approval.TOTPStatus
	ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", "").json(t, &st)
	if st.Enrolled || st.Confirmed || st.Enforced || st.RemainingRecoveryCodes != 0 {
		t.Fatalf("%+v", st)
	}
	if e := ts.mustStatus(t, 400, "DELETE", "/api/approvals/totp", `{"code":"123456"}`).envelope(t); e.Code != "totp_not_enrolled" {
		t.Fatal(e)
	}
	var enr approval.Enrolment
	r := ts.mustStatus(t, 200, "POST", "/api/approvals/totp/setup", ``)
	r.json(t, &enr)
	if !strings.HasPrefix(enr.QRCode, "data:image/png;base64,") || !strings.HasPrefix(enr.OtpauthURI, "otpauth://totp/") || len(enr.RecoveryCodes) != 8 {
		t.Fatalf("setup %s", r.body)
	}
	ts.mustStatus(t, 409, "POST", "/api/approvals/totp/setup", `{}`)
	ts.mustStatus(t, 400, "POST", "/api/approvals/totp/confirm", `{"code":"000000"}`)
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/confirm", `{"code":"`+approvaltest.TOTP(t, enr.Secret, time.Now())+`"}`)
	ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", "").json(t, &st)
	if !st.Enrolled || !st.Confirmed || !st.Enforced || st.RemainingRecoveryCodes != 8 {
		t.Fatalf("%+v", st)
	}
	// GETs never show the secret.
	if r := ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", ""); strings.Contains(string(r.body), enr.Secret) {
		t.Fatal("status leaks the secret")
	}

	newApproval := func() string {
		var rec approval.Approval
		ts.mustStatus(t, 201, "POST", "/api/approvals", `{"agent_id":"`+a.ID+`","action":"shell_exec"}`).json(t, &rec)
		return rec.ID
	}
	id := newApproval()
	if e := ts.mustStatus(t, 400, "POST", "/api/approvals/"+id+"/approve", `{}`).envelope(t); e.Code != "totp_required" {
		t.Fatal(e)
	}
	if e := ts.mustStatus(t, 400, "POST", "/api/approvals/"+id+"/approve", `{"totp_code":"999999x"}`).envelope(t); e.Code != "totp_invalid" {
		t.Fatal(e)
	}
	// The confirmation used the current step; the next step's code is
	// within the allowed skew and new.
	next := approvaltest.TOTP(t, enr.Secret, time.Now().Add(30*time.Second))
	var rec approval.Approval
	ts.mustStatus(t, 200, "POST", "/api/approvals/"+id+"/approve", `{"totp_code":"`+next+`"}`).json(t, &rec)
	if rec.SecondFactor != "totp" {
		t.Fatalf("%+v", rec)
	}
	id2 := newApproval()
	if e := ts.mustStatus(t, 400, "POST", "/api/approvals/"+id2+"/approve", `{"totp_code":"`+next+`"}`).envelope(t); e.Code != "totp_replayed" {
		t.Fatal(e)
	}
	ts.mustStatus(t, 200, "POST", "/api/approvals/"+id2+"/approve", `{"totp_code":"`+enr.RecoveryCodes[0]+`"}`).json(t, &rec)
	if rec.SecondFactor != "recovery_code" {
		t.Fatalf("%+v", rec)
	}
	// Lockout: five bad codes in a row (the two above were followed by a
	// success, which reset the count).
	id3 := newApproval()
	var locked response
	for i := 0; i < 5; i++ {
		locked = ts.authed(t, "POST", "/api/approvals/"+id3+"/approve", `{"totp_code":"00000`+strconv.Itoa(i)+`"}`, "Content-Type", "application/json")
	}
	if locked.status != 429 || locked.envelope(t).Code != "totp_locked" {
		t.Fatalf("fifth bad code: %d %s", locked.status, locked.body)
	}
	if ra, _ := strconv.Atoi(locked.header.Get("Retry-After")); ra < 290 || ra > 300 {
		t.Fatalf("Retry-After %q", locked.header.Get("Retry-After"))
	}
	// Locked means locked: a recovery code does not get through, and the
	// revoke is refused too.
	ts.mustStatus(t, 429, "POST", "/api/approvals/"+id3+"/approve", `{"totp_code":"`+enr.RecoveryCodes[1]+`"}`)
	ts.mustStatus(t, 429, "DELETE", "/api/approvals/totp", `{"code":"`+enr.RecoveryCodes[1]+`"}`)
	var entries []string
	for _, e := range ts.recent(t, 300) {
		if strings.HasPrefix(e.EventType, "totp_") {
			entries = append(entries, e.EventType)
		}
		for _, secret := range append([]string{enr.Secret}, enr.RecoveryCodes...) {
			if strings.Contains(e.Details, secret) {
				t.Fatalf("audit entry leaks a secret: %+v", e)
			}
		}
	}
	if got := strings.Join(entries, ","); !strings.Contains(got, "totp_locked") || !strings.Contains(got, "totp_recovery_code_used") || !strings.Contains(got, "totp_confirmed") {
		t.Fatalf("audit %s", got)
	}
}

func TestTOTPRevoke(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, func(p *approval.Policy) { p.SecondFactor = "totp" })
	ts := newTestServer(t, nil, extra)
	var enr approval.Enrolment
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/setup", `{}`).json(t, &enr)
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/confirm", `{"code":"`+approvaltest.TOTP(t, enr.Secret, time.Now())+`"}`)
	ts.mustStatus(t, 400, "POST", "/api/approvals/totp/setup", `{}`) // confirmed: needs a current code
	ts.mustStatus(t, 400, "DELETE", "/api/approvals/totp", `{"code":"1234-5678-9abc-def0"}`)
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/revoke", `{"code":"`+enr.RecoveryCodes[7]+`"}`)
	var st approval.TOTPStatus
	ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", "").json(t, &st)
	if st.Enrolled || st.Confirmed || st.Enforced {
		t.Fatalf("%+v", st)
	}
	ts.mustStatus(t, 400, "DELETE", "/api/approvals/totp", `{"code":"`+enr.RecoveryCodes[6]+`"}`)
}

// A setup answer that never arrived leaves an enrolment whose secret
// nobody has: it can be neither confirmed nor revoked with a code, and it
// blocks a new setup. DELETE /api/approvals/totp/setup drops it, audited,
// and leaves a confirmed enrolment in force.
func TestTOTPCancelPendingSetup(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, func(p *approval.Policy) { p.SecondFactor = "totp" })
	ts := newTestServer(t, nil, extra)
	if e := ts.mustStatus(t, 400, "DELETE", "/api/approvals/totp/setup", ``).envelope(t); e.Code != "totp_not_pending" {
		t.Fatal(e)
	}
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/setup", `{}`) // the answer is "lost"
	ts.mustStatus(t, 409, "POST", "/api/approvals/totp/setup", `{}`)
	var res approval.TOTPResult
	ts.mustStatus(t, 200, "DELETE", "/api/approvals/totp/setup", ``).json(t, &res)
	if res.Status != "cancelled" {
		t.Fatalf("%+v", res)
	}
	var st approval.TOTPStatus
	ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", "").json(t, &st)
	if st.Enrolled || st.PendingConfirmation || st.Confirmed {
		t.Fatalf("after cancel: %+v", st)
	}

	// With a confirmed enrolment, cancelling a pending re-enrolment keeps
	// the confirmed secret enforced.
	var enr approval.Enrolment
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/setup", `{}`).json(t, &enr)
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/confirm", `{"code":"`+approvaltest.TOTP(t, enr.Secret, time.Now())+`"}`)
	ts.mustStatus(t, 200, "POST", "/api/approvals/totp/setup", `{"current_code":"`+enr.RecoveryCodes[0]+`"}`)
	ts.mustStatus(t, 200, "DELETE", "/api/approvals/totp/setup", ``)
	ts.mustStatus(t, 200, "GET", "/api/approvals/totp/status", "").json(t, &st)
	if !st.Confirmed || !st.Enforced || st.PendingConfirmation || st.RemainingRecoveryCodes != 7 {
		t.Fatalf("after cancelling a re-enrolment: %+v", st)
	}
	n := 0
	for _, e := range ts.recent(t, 100) {
		if e.EventType == "totp_setup_cancelled" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d totp_setup_cancelled audit entries, want 2", n)
	}
}
