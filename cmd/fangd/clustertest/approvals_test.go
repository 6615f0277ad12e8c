//go:build cluster

package clustertest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type approvalJSON struct {
	ID        string `json:"id"`
	AgentName string `json:"agent_name"`
	ToolName  string `json:"tool_name"`
	Status    string `json:"status"`
	Node      string `json:"node"`
	DecidedBy string `json:"decided_by"`
}

// approvalsOn lists n's approvals with the given status.
func approvalsOn(t *testing.T, n *node, status string) []approvalJSON {
	t.Helper()
	var page struct {
		Approvals []approvalJSON `json:"approvals"`
	}
	if code := getJSON(t, n.url+"/api/approvals?status="+status, &page); code != 200 {
		t.Fatalf("%s: GET /api/approvals: %d", n.name, code)
	}
	return page.Approvals
}

// waitApproval waits until n lists an approval with status that match
// accepts, and returns it.
func waitApproval(t *testing.T, n *node, status string, within time.Duration, match func(approvalJSON) bool) approvalJSON {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, a := range approvalsOn(t, n, status) {
			if match(a) {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s approval as expected within %s", n.name, status, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type agentTurn struct {
	Response  string `json:"response"`
	ToolCalls []struct {
		Tool       string `json:"tool"`
		Outcome    string `json:"outcome"`
		ApprovalID string `json:"approval_id"`
	} `json:"tool_calls"`
}

// Issue 18, approvals: an agent's gated tool call on node a (a2a_send,
// which A2A offers agents by default; its unknown target makes the run an
// error result the model reads) waits for an approval that node b lists
// and approves; a's turn completes with the tool run. A second request whose origin is killed with -9 is marked
// expired by b at its deadline and cannot be decided any more.
func TestApprovalAcrossNodesAndExpiryAfterOriginKill9(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := a2aSendLLM(t)
	const timeout = 8
	nodes := channelNodesWith(t, etcd, oai, "\n[approval]\nrequire_approval = [\"a2a_send\"]\ntimeout_secs = 8\n", "a", "b")
	a, b := nodes[0], nodes[1]
	if code, body := post(t, a.url+"/api/agents", `{"name":"ops","model":"fakeoai/gpt-test","tools":["a2a_send"]}`); code != 201 {
		t.Fatalf("create ops: %d %s", code, body)
	}
	var kinds clusterStatus
	getJSON(t, b.url+"/api/cluster", &kinds)
	for _, k := range kinds.Kinds {
		if k.Kind == "approval" && k.Mode != "cluster" {
			t.Fatalf("approval kind %+v", k)
		}
	}
	send := func() chan agentTurn {
		out := make(chan agentTurn, 1)
		go func() {
			var turn agentTurn
			if _, b, err := tryRequest("POST", a.url+"/api/agents/ops/message", `{"message":"go"}`, nil); err == nil {
				json.Unmarshal(b, &turn)
			}
			out <- turn
		}()
		return out
	}

	reply := send()
	first := waitApproval(t, b, "pending", 20*time.Second, func(x approvalJSON) bool { return x.AgentName == "ops" })
	if first.Node != "a" || first.ToolName != "a2a_send" {
		t.Fatalf("b lists %+v", first)
	}
	if code, body := post(t, b.url+"/api/approvals/"+first.ID+"/approve", `{}`); code != 200 {
		t.Fatalf("approve through b: %d %s", code, body)
	}
	select {
	case turn := <-reply:
		if len(turn.ToolCalls) != 1 || turn.ToolCalls[0].ApprovalID != first.ID || !strings.Contains(turn.Response, "the tool said:") {
			t.Fatalf("a's turn %+v", turn)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a's turn did not complete after b approved")
	}
	// Decided once: the origin refuses another decision with the single
	// node's 409.
	if code, body := post(t, a.url+"/api/approvals/"+first.ID+"/reject", `{}`); code != 409 || !strings.Contains(string(body), "approval_already_decided") {
		t.Fatalf("reject on a after b approved: %d %s", code, body)
	}

	_ = send()
	second := waitApproval(t, b, "pending", 20*time.Second, func(x approvalJSON) bool { return x.AgentName == "ops" && x.ID != first.ID })
	killed := a.kill(t)
	exp := waitApproval(t, b, "expired", timeout*time.Second+10*time.Second, func(x approvalJSON) bool { return x.ID == second.ID })
	t.Logf("b shows the approval expired %.1f s after a's kill (timeout %d s)", time.Since(killed).Seconds(), timeout)
	if exp.Node != "a" {
		t.Fatalf("expired record %+v", exp)
	}
	if code, body := post(t, b.url+"/api/approvals/"+second.ID+"/approve", `{}`); code != 410 || !strings.Contains(string(body), "approval_expired") {
		t.Fatalf("approve after the deadline: %d %s", code, body)
	}
}
