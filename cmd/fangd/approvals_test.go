package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

type approvalJSON struct {
	ID           string     `json:"id"`
	AgentID      string     `json:"agent_id"`
	AgentName    string     `json:"agent_name"`
	Action       string     `json:"action"`
	Status       string     `json:"status"`
	RiskLevel    string     `json:"risk_level"`
	RequestedAt  time.Time  `json:"requested_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	DecidedAt    *time.Time `json:"decided_at"`
	DecidedBy    string     `json:"decided_by"`
	DecidedVia   string     `json:"decided_via"`
	SecondFactor string     `json:"second_factor"`
}

// Pending approvals and the TOTP enrolment live through a graceful
// restart and a kill -9; expiry keeps counting from requested_at.
func TestApprovalsOnTheBinary(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, `
[approval]
second_factor = "totp"
totp_tools = ["shell_*"]
timeout_secs = 600
`+loopbackPolicy)
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	var a agentJSON
	td.must(201, "POST", "/api/agents", map[string]any{"name": "ops", "model": "fakeoai/gpt-test"}, &a)
	var first approvalJSON
	td.must(201, "POST", "/api/approvals", map[string]any{"agent_id": a.ID, "action": "delete_file",
		"description": "Agent wants to delete /important/config.toml", "payload": map[string]any{"path": "/important/config.toml"}}, &first)
	if first.Status != "pending" || first.AgentName != "ops" || !first.ExpiresAt.Equal(first.RequestedAt.Add(600*time.Second)) {
		t.Fatalf("%+v", first)
	}

	td.restart()
	var got approvalJSON
	td.must(200, "GET", "/api/approvals/"+first.ID, nil, &got)
	if got.Status != "pending" || !got.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatalf("after a graceful restart: %+v", got)
	}
	// Enrol TOTP, then kill -9 the daemon.
	var enr struct {
		Secret        string   `json:"secret"`
		QRCode        string   `json:"qr_code"`
		RecoveryCodes []string `json:"recovery_codes"`
	}
	td.must(200, "POST", "/api/approvals/totp/setup", map[string]any{}, &enr)
	td.must(200, "POST", "/api/approvals/totp/confirm", map[string]any{"code": approvaltest.TOTP(t, enr.Secret, time.Now())}, nil)
	var gated approvalJSON
	td.must(201, "POST", "/api/approvals", map[string]any{"agent_id": "ops", "action": "shell_exec", "payload": map[string]any{"cmd": "uptime"}}, &gated)
	td.p.cmd.Process.Signal(syscall.SIGKILL)
	td.p.done <- <-td.p.done // the launcher's cleanup waits for it too
	td.start()

	var st struct {
		Enrolled, Confirmed, Enforced bool
		Remaining                     int `json:"remaining_recovery_codes"`
	}
	td.must(200, "GET", "/api/approvals/totp/status", nil, &st)
	if !st.Enrolled || !st.Confirmed || !st.Enforced || st.Remaining != 8 {
		t.Fatalf("TOTP after kill -9: %+v", st)
	}
	var page struct {
		Approvals []approvalJSON `json:"approvals"`
		Total     int            `json:"total"`
	}
	td.must(200, "GET", "/api/approvals?status=pending", nil, &page)
	if page.Total != 2 || page.Approvals[0].ID != first.ID || page.Approvals[1].ID != gated.ID {
		t.Fatalf("pending after kill -9: %+v", page)
	}
	// delete_file is outside totp_tools; shell_exec needs the code.
	td.must(200, "POST", "/api/approvals/"+first.ID+"/approve", map[string]any{}, &got)
	if got.Status != "approved" || got.SecondFactor != "none" || got.DecidedVia != "api" || got.DecidedBy != "loopback" {
		t.Fatalf("%+v", got)
	}
	if r := td.do("POST", "/api/approvals/"+gated.ID+"/approve", map[string]any{}); r.status != 400 || r.code() != "totp_required" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	td.must(200, "POST", "/api/approvals/"+gated.ID+"/approve", map[string]any{"totp_code": approvaltest.TOTP(t, enr.Secret, time.Now().Add(30*time.Second))}, &got)
	if got.SecondFactor != "totp" {
		t.Fatalf("%+v", got)
	}
	if r := td.do("POST", "/api/approvals/"+gated.ID+"/reject", nil); r.status != 409 {
		t.Fatalf("re-deciding: %d %s", r.status, r.raw)
	}
	// Every state change is on the comms bus (this run's: the bus keeps
	// its log across restarts, so the first request's event is there too).
	var events struct {
		Items []struct {
			Type   string          `json:"type"`
			Target string          `json:"target"`
			Detail json.RawMessage `json:"detail"`
		} `json:"items"`
	}
	td.must(200, "GET", "/api/comms/events?type=approval.*", nil, &events)
	var seen []string
	for i := len(events.Items) - 1; i >= 0; i-- {
		var d approvalJSON
		json.Unmarshal(events.Items[i].Detail, &d)
		seen = append(seen, events.Items[i].Type+":"+d.ID[:8])
	}
	want := []string{"approval.requested:" + first.ID[:8], "approval.requested:" + gated.ID[:8],
		"approval.approved:" + first.ID[:8], "approval.approved:" + gated.ID[:8]}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("bus events %v, want %v", seen, want)
	}
	// Nothing secret in the data directory in the clear.
	td.stop()
	err := filepath.Walk(filepath.Join(td.home, "data"), func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		raw, _ := os.ReadFile(path)
		if strings.Contains(string(raw), enr.Secret) {
			t.Errorf("%s holds the TOTP secret in the clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep, code := verifyOffline(t, td.home); code != 0 || !rep.Valid() {
		t.Fatalf("audit chain %+v", rep)
	}
}

func TestApprovalExpiresAndThenIsGone(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "[approval]\ntimeout_secs = 1\n"+loopbackPolicy)
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	td.must(201, "POST", "/api/agents", map[string]any{"name": "ops", "model": "fakeoai/gpt-test"}, nil)
	var rec approvalJSON
	td.must(201, "POST", "/api/approvals", map[string]any{"agent_id": "ops", "action": "file_write"}, &rec)
	td.must(200, "GET", "/api/approvals/"+rec.ID+"?wait=30", nil, &rec)
	if rec.Status != "expired" || rec.DecidedVia != "timeout" {
		t.Fatalf("%+v", rec)
	}
	r := td.do("POST", "/api/approvals/"+rec.ID+"/approve", map[string]any{})
	if r.status != 410 || r.code() != "approval_expired" || !strings.Contains(string(r.raw), "expired") || strings.Contains(string(r.raw), "goroutine") {
		t.Fatalf("%d %s", r.status, r.raw)
	}
}

func TestBadApprovalConfigNamesTheField(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ config, want string }{
		{"[approval]\ntimeout_action = \"skip\"\n", "approval.timeout_action"},
		{"[approval]\nsecond_factor = \"sms\"\n", "approval.second_factor"},
		{"[[approval.notify]]\nchannel = \"tg\"\nchat_id = \"1\"\n", "approval.notify[0].approvers"},
		{"[approval]\nrequire_aproval = []\n", "approval.require_aproval"},
	} {
		home := t.TempDir()
		os.WriteFile(filepath.Join(home, "config.toml"), []byte(c.config), 0o600)
		out, err := exec.Command(fangdBin, "serve", "--home", home, "--listen", freeAddr(t)).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%q: err=%v output=%s", c.config, err, out)
		}
	}
}

// Decide from chat on the binary: a request made through the API is
// posted to the Telegram chat named in [[approval.notify]]; an approver's
// /approve there decides it and the answer is posted back; a stranger's
// is refused; a decision made through the API is announced in the chat.
func TestApproveFromTelegramOnTheBinary(t *testing.T) {
	t.Parallel()
	tg := telegramtest.New("555:approve")
	defer tg.Close()
	_, _, cfg := fakes(t, `
[approval]
timeout_secs = 600

[[approval.notify]]
channel = "telegram"
chat_id = "-1001"
approvers = ["@alice", "4242"]
`+loopbackPolicy)
	p := startFangd(t, t.TempDir(), cfg, append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)...)
	if code, body := p.request(t, "POST", "/api/agents", `{"name":"ops","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	connectTelegram(t, p, tg, "555:approve", "ops")
	sent := func(n int) []telegramtest.Sent {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(tg.Sent()) < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if s := tg.Sent(); len(s) >= n {
			return s
		}
		t.Fatalf("waited for %d messages: %+v", n, tg.Sent())
		return nil
	}
	code, body := p.request(t, "POST", "/api/approvals", `{"agent_id":"ops","action":"deploy_prod","description":"Ship build 812 to production"}`)
	if code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	var rec approvalJSON
	json.Unmarshal(body, &rec)
	if n := sent(1)[0]; n.ChatID != "-1001" || !strings.Contains(n.Text, "Ship build 812") || !strings.Contains(n.Text, "/approve "+rec.ID[:8]) {
		t.Fatalf("notice %+v", n)
	}
	tg.UserMessage(-1001, 9, "mallory", "/approve "+rec.ID[:8])
	if m := sent(2)[1]; !strings.Contains(m.Text, "not on the approver list") {
		t.Fatalf("%+v", m)
	}
	tg.UserMessage(-1001, 4242, "bob", "/approve "+rec.ID)
	if m := sent(3)[2]; !strings.Contains(m.Text, "approved by telegram:@bob") {
		t.Fatalf("%+v", m)
	}
	code, body = p.request(t, "GET", "/api/approvals/"+rec.ID, "")
	json.Unmarshal(body, &rec)
	if code != 200 || rec.Status != "approved" || rec.DecidedVia != "channel" || rec.DecidedBy != "telegram:@bob" {
		t.Fatalf("%d %s", code, body)
	}
	// A decision through the API is announced in the chat.
	_, body = p.request(t, "POST", "/api/approvals", `{"agent_id":"ops","action":"deploy_prod"}`)
	json.Unmarshal(body, &rec)
	sent(4)
	p.request(t, "POST", "/api/approvals/"+rec.ID+"/reject", `{"reason":"freeze week"}`)
	if m := sent(5)[4]; !strings.Contains(m.Text, "rejected by api_key: freeze week") {
		t.Fatalf("%+v", m)
	}
}
