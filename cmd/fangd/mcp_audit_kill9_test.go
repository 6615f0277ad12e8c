package main

import (
	"strings"
	"syscall"
	"testing"
)

// A POST /mcp tools/call commits its two audit entries (the exposer's
// tool_invoked and the request's api_request) together, in one synced
// commit, before the answer goes out: a kill -9 right after a 200 loses
// neither, and they sit next to each other in that order.
func TestMCPToolCallAuditSurvivesKill9(t *testing.T) {
	_, _, cfg := fakes(t, "")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	for i := range 3 {
		r := td.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_list","arguments":{"path":""}}}`)
		if r.status != 200 || !strings.Contains(string(r.raw), `"result"`) || strings.Contains(string(r.raw), `"isError":true`) {
			t.Fatalf("call %d: %d %s", i, r.status, r.raw)
		}
	}
	td.p.cmd.Process.Signal(syscall.SIGKILL)
	td.p.done <- <-td.p.done // the launcher's cleanup waits for it too
	td.start()

	var rec struct {
		Entries []struct {
			EventType string `json:"event_type"`
			Details   string `json:"details"`
		} `json:"entries"`
	}
	td.must(200, "GET", "/api/audit/recent?limit=500", nil, &rec)
	var order []string
	for i := len(rec.Entries) - 1; i >= 0; i-- { // oldest first
		e := rec.Entries[i]
		switch {
		case e.EventType == "tool_invoked" && strings.Contains(e.Details, "tool=file_list"):
			order = append(order, "tool")
		case e.EventType == "api_request" && strings.HasPrefix(e.Details, "POST /mcp -> 200"):
			order = append(order, "request")
		case len(order) > 0 && order[len(order)-1] == "tool":
			order = append(order, e.EventType) // something between the pair
		}
	}
	if got := strings.Join(order, ","); got != "tool,request,tool,request,tool,request" {
		t.Fatalf("after kill -9 the call entries read %s", got)
	}
}
