package main

// Contract tests for issue 16: LibreFang's clients send its request shapes
// and read its response fields; fangd must accept the one and answer with
// the other alongside the seed page's fields. The expected shapes are
// written here from LibreFang's route handlers (crates/librefang-api/src/
// routes/*.rs, openapi.json 2026.8.19), not copied from its files.

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// has fails unless m has every key.
func has(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			raw, _ := json.Marshal(m)
			t.Fatalf("%s: no %q in %s", what, k, raw)
		}
	}
}

// LibreFang's approvals routes beyond the seed page: count, audit, batch,
// modify and the per-session ones (routes/approvals.rs).
func TestLibreFangApprovalsContract(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "[approval]\ntimeout_secs = 600\n")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	var a agentJSON
	td.must(201, "POST", "/api/agents", map[string]any{"name": "ops", "model": "fakeoai/gpt-test"}, &a)
	sid := uuid.NewString()
	mk := func(tool, session string) string {
		var r map[string]any
		body := map[string]any{"agent_id": a.ID, "tool_name": tool, "description": "d"}
		if session != "" {
			body["session_id"] = session
		}
		td.must(201, "POST", "/api/approvals", body, &r)
		return r["id"].(string)
	}
	ids := []string{mk("shell_exec", sid), mk("file_write", sid), mk("file_delete", ""), mk("web_fetch", ""), mk("apply_patch", "")}

	// count: {"pending": n} (a path LibreFang's dashboard polls for its badge).
	var cnt map[string]any
	td.must(200, "GET", "/api/approvals/count", nil, &cnt)
	if cnt["pending"] != float64(5) {
		t.Fatalf("count: %v", cnt)
	}

	// session listing: LibreFang's pending/count/has_pending, fangd's approvals/total.
	var sess map[string]any
	td.must(200, "GET", "/api/approvals/session/"+sid, nil, &sess)
	has(t, "session", sess, "session_id", "pending", "count", "has_pending", "approvals", "total")
	if sess["count"] != float64(2) || sess["has_pending"] != true || len(sess["pending"].([]any)) != 2 {
		t.Fatalf("session: %v", sess)
	}
	// approve_all refuses a stale view (409) and changes nothing.
	if r := td.do("POST", "/api/approvals/session/"+sid+"/approve_all", map[string]any{"expected_count": 3}); r.status != 409 {
		t.Fatalf("stale approve_all: %d %s", r.status, r.raw)
	}
	if r := td.do("POST", "/api/approvals/session/not-a-session/approve_all", nil); r.status != 400 {
		t.Fatalf("bad session id: %d %s", r.status, r.raw)
	}
	var all map[string]any
	td.must(200, "POST", "/api/approvals/session/"+sid+"/approve_all", map[string]any{"expected_ids": []string{ids[0], ids[1]}}, &all)
	if all["resolved"] != float64(2) || all["decision"] != "approved" || all["session_id"] != sid {
		t.Fatalf("approve_all: %v", all)
	}
	td.must(200, "POST", "/api/approvals/session/"+sid+"/reject_all", nil, &all)
	if all["resolved"] != float64(0) || all["decision"] != "rejected" {
		t.Fatalf("reject_all on an empty session: %v", all)
	}

	// modify: the call goes back with feedback; status "modified".
	var mod map[string]any
	td.must(200, "POST", "/api/approvals/"+ids[2]+"/modify", map[string]any{"feedback": "only delete files under /tmp"}, &mod)
	has(t, "modify", mod, "id", "status", "decided_at", "agent_id", "reason")
	if mod["id"] != ids[2] || mod["status"] != "modified" || mod["reason"] != "only delete files under /tmp" {
		t.Fatalf("modify: %v", mod)
	}
	if r := td.do("POST", "/api/approvals/"+ids[2]+"/modify", map[string]any{"feedback": "again"}); r.status != 409 {
		t.Fatalf("modify twice: %d %s", r.status, r.raw)
	}
	if r := td.do("POST", "/api/approvals/"+ids[3]+"/modify", map[string]any{"feedback": "x", "bogus": 1}); r.status != 400 {
		t.Fatalf("unknown field: %d %s", r.status, r.raw)
	}

	// batch: 400 on a bad decision (nothing decided), 207 when an item fails.
	if r := td.do("POST", "/api/approvals/batch", map[string]any{"ids": []string{ids[3]}, "decision": "maybe"}); r.status != 400 {
		t.Fatalf("bad decision: %d %s", r.status, r.raw)
	}
	var batch struct {
		Results []map[string]any `json:"results"`
	}
	r := td.must(207, "POST", "/api/approvals/batch", map[string]any{"ids": []string{ids[3], ids[4], "nope", ids[0]}, "decision": "reject"}, &batch)
	if len(batch.Results) != 4 {
		t.Fatalf("batch: %s", r.raw)
	}
	byID := map[string]map[string]any{}
	for _, x := range batch.Results {
		byID[x["id"].(string)] = x
	}
	if x := byID[ids[3]]; x["status"] != "ok" || x["decision"] != "denied" || x["decided_at"] == nil {
		t.Fatalf("batch item: %v", x)
	}
	if byID["nope"]["status"] != "error" || byID[ids[0]]["status"] != "error" {
		t.Fatalf("batch errors: %s", r.raw)
	}
	td.must(200, "GET", "/api/approvals/count", nil, &cnt)
	if cnt["pending"] != float64(0) {
		t.Fatalf("count after: %v", cnt)
	}

	// audit: LibreFang's items with decision words, filters, paging.
	var aud struct {
		Items []map[string]any `json:"items"`
		Total int              `json:"total"`
		Limit int              `json:"limit"`
	}
	td.must(200, "GET", "/api/approvals/audit?limit=10", nil, &aud)
	if aud.Total != 5 || len(aud.Items) != 5 || aud.Limit != 10 {
		t.Fatalf("audit: %+v", aud)
	}
	has(t, "audit item", aud.Items[0], "id", "request_id", "agent_id", "tool_name", "description", "action_summary",
		"risk_level", "decision", "decided_by", "decided_at", "requested_at", "feedback", "second_factor_used", "status")
	td.must(200, "GET", "/api/approvals/audit?tool_name=file_delete", nil, &aud)
	if aud.Total != 1 || aud.Items[0]["decision"] != "modify_and_retry" || aud.Items[0]["feedback"] != "only delete files under /tmp" {
		t.Fatalf("audit filtered: %+v", aud)
	}
	// The seed page's list still shows the modified status.
	var list map[string]any
	td.must(200, "GET", "/api/approvals?status=modified", nil, &list)
	if list["total"] != float64(1) {
		t.Fatalf("list modified: %v", list)
	}
}
