//go:build cluster

package clustertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/approval/approvaltest"
)

// The TOTP enrolment is the cluster's: enrolled through node a and
// confirmed through node b; a's agent's gated call is listed on b, where
// approving without a code is refused, the confirming code is a replay,
// and a recovery code approves it (a's turn completes); the spent
// recovery code is refused through a.
func TestTOTPEnrolledOnOneNodeDecidesOnAnother(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := a2aSendLLM(t)
	nodes := channelNodesWith(t, etcd, oai, "\n[approval]\nrequire_approval = [\"a2a_send\"]\nsecond_factor = \"totp\"\ntimeout_secs = 60\n", "a", "b")
	a, b := nodes[0], nodes[1]

	code, body := post(t, a.url+"/api/approvals/totp/setup", `{}`)
	var enr struct {
		Secret        string   `json:"secret"`
		RecoveryCodes []string `json:"recovery_codes"`
	}
	if code != 200 || json.Unmarshal(body, &enr) != nil || enr.Secret == "" || len(enr.RecoveryCodes) == 0 {
		t.Fatalf("setup through a: %d %s", code, body)
	}
	confirmCode := approvaltest.TOTP(t, enr.Secret, time.Now())
	if code, body := post(t, b.url+"/api/approvals/totp/confirm", `{"code":"`+confirmCode+`"}`); code != 200 {
		t.Fatalf("confirm through b: %d %s", code, body)
	}
	var st struct {
		Confirmed bool `json:"confirmed"`
		Enforced  bool `json:"enforced"`
	}
	if code := getJSON(t, a.url+"/api/approvals/totp/status", &st); code != 200 || !st.Confirmed || !st.Enforced {
		t.Fatalf("a's status after b's confirm: %d %+v", code, st)
	}

	if code, body := post(t, a.url+"/api/agents", `{"name":"ops","model":"fakeoai/gpt-test","tools":["a2a_send"]}`); code != 201 {
		t.Fatalf("create ops: %d %s", code, body)
	}
	reply := make(chan agentTurn, 1)
	go func() {
		var turn agentTurn
		res, err := http.Post(a.url+"/api/agents/ops/message", "application/json", strings.NewReader(`{"message":"go"}`))
		if err == nil {
			json.NewDecoder(res.Body).Decode(&turn)
			res.Body.Close()
		}
		reply <- turn
	}()
	req := waitApproval(t, b, "pending", 20*time.Second, func(x approvalJSON) bool { return x.AgentName == "ops" })
	if code, body := post(t, b.url+"/api/approvals/"+req.ID+"/approve", `{}`); code != 400 || !strings.Contains(string(body), "totp_required") {
		t.Fatalf("approve through b without a code: %d %s", code, body)
	}
	// Within the confirming code's step (and the one after, the skew) it
	// is a replay, whichever node checks it; later it would be invalid.
	if code, body := post(t, b.url+"/api/approvals/"+req.ID+"/approve", `{"totp_code":"`+confirmCode+`"}`); code != 400 ||
		(!strings.Contains(string(body), "totp_replayed") && !strings.Contains(string(body), "totp_invalid")) {
		t.Fatalf("approve through b with the confirming code: %d %s", code, body)
	}
	rc := enr.RecoveryCodes[0]
	if code, body := post(t, b.url+"/api/approvals/"+req.ID+"/approve", `{"totp_code":"`+rc+`"}`); code != 200 {
		t.Fatalf("approve through b with a recovery code: %d %s", code, body)
	}
	select {
	case turn := <-reply:
		if len(turn.ToolCalls) != 1 || turn.ToolCalls[0].ApprovalID != req.ID {
			t.Fatalf("a's turn %+v", turn)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a's turn did not complete after b approved")
	}
	// The recovery code is spent for the whole cluster.
	if code, body := post(t, a.url+"/api/approvals/totp/revoke", `{"code":"`+rc+`"}`); code != 400 || !strings.Contains(string(body), "totp_invalid") {
		t.Fatalf("the spent recovery code through a: %d %s", code, body)
	}
}
