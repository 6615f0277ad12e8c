package main

// Contract tests for issue 16 items 1 and 5, against the real binary:
// POST /api/agents with LibreFang's SpawnRequest (manifest_toml, template,
// name) and its template routes (routes/agents/lifecycle.rs,
// routes/agent_templates.rs), and GET /api/audit/query and /export
// (routes/audit.rs). Expected shapes written from those handlers.

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
)

const lfManifest = `name = "support-bot"
version = "0.1.0"
description = "Answers support questions."
author = "ops"
module = "builtin:chat"
tags = ["support"]

[model]
provider = "default"
model = "default"
max_tokens = 256
temperature = 0.3
system_prompt = "You answer support questions."

[resources]
max_cost_per_month_usd = 12.5

[capabilities]
tools = []
memory_read = ["self.*"]
`

func TestLibreFangAgentManifestsAndTemplates(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, "\n[default_model]\nprovider = \"fakeoai\"\nmodel = \"gpt-test\"\n")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)

	// A template by name: the daemon's [default_model] stands for
	// "default"; LibreFang's answer fields agent_id and name.
	var a map[string]any
	td.must(201, "POST", "/api/agents", map[string]any{"template": "assistant"}, &a)
	if a["agent_id"] == nil || a["agent_id"] != a["id"] || a["name"] != "assistant" || a["model"] != "fakeoai/gpt-test" {
		t.Fatalf("from template: %v", a)
	}
	assistantID := a["id"].(string)

	// A manifest: its monthly cap becomes the agent's budget; what has no
	// effect here is named in warnings.
	a = nil
	td.must(201, "POST", "/api/agents", map[string]any{"manifest_toml": lfManifest}, &a)
	if a["name"] != "support-bot" || a["max_tokens"] != float64(256) || a["temperature"] != 0.3 ||
		strings.Contains(a["warnings"].([]any)[0].(string), "temperature") {
		t.Fatalf("from manifest: %v", a)
	}
	// A temperature out of the provider's range is a 400 that creates
	// nothing, in a manifest and in fangd's own body.
	hot := strings.Replace(strings.Replace(lfManifest, "temperature = 0.3", "temperature = 2.5", 1), `"support-bot"`, `"hot"`, 1)
	for _, body := range []map[string]any{{"manifest_toml": hot}, {"name": "hot", "model": "fakeoai/gpt-test", "temperature": -1}} {
		if r := td.do("POST", "/api/agents", body); r.status != 400 || !strings.Contains(string(r.raw), "temperature") {
			t.Fatalf("bad temperature: %d %s", r.status, r.raw)
		}
	}
	if r := td.do("GET", "/api/agents/hot", nil); r.status != 404 {
		t.Fatalf("a refused temperature left an agent: %d", r.status)
	}
	botID := a["id"].(string)
	var b map[string]any
	td.must(200, "GET", "/api/budget/agents/"+botID, nil, &b)
	if b["monthly_limit_usd"] != 12.5 {
		t.Fatalf("budget: %v", b)
	}

	// LibreFang's built-in tools are not tools fangd offers: refused by
	// name, nothing created.
	bad := strings.Replace(lfManifest, "tools = []", `tools = ["web_search"]`, 1)
	bad = strings.Replace(bad, `"support-bot"`, `"other"`, 1)
	if r := td.do("POST", "/api/agents", map[string]any{"manifest_toml": bad}); r.status != 400 || r.code() != "unknown_tool" ||
		!strings.Contains(string(r.raw), "web_search") {
		t.Fatalf("unknown tool: %d %s", r.status, r.raw)
	}
	if r := td.do("GET", "/api/agents/other", nil); r.status != 404 {
		t.Fatalf("a refused manifest left an agent: %d", r.status)
	}

	var tl struct {
		Templates []struct{ Name, Description string }
		Total     int
	}
	td.must(200, "GET", "/api/templates", nil, &tl)
	if tl.Total < 10 || tl.Templates[0].Description == "" {
		t.Fatalf("templates: %+v", tl)
	}
	r := td.must(200, "GET", "/api/v1/templates/assistant/toml", nil, nil)
	if !strings.Contains(string(r.raw), `name = "assistant"`) {
		t.Fatalf("toml: %s", r.raw)
	}

	// They are just agents: they survive a restart and answer.
	td.restart()
	td.must(200, "GET", "/api/agents/"+assistantID, nil, nil)
	var turn turnJSON
	td.must(200, "POST", "/api/agents/support-bot/message", map[string]any{"message": "hello"}, &turn)
	if turn.Response == "" || turn.Model != "gpt-test" {
		t.Fatalf("turn: %+v", turn)
	}
	// The manifest's temperature survived the restart and reached the provider.
	reqs := oai.Requests()
	if got := reqs[len(reqs)-1].Temperature; got == nil || *got != 0.3 {
		t.Fatalf("the provider got temperature %v", got)
	}
	td.must(200, "GET", "/api/budget/agents/"+botID, nil, &b)
	if b["monthly_limit_usd"] != 12.5 {
		t.Fatalf("budget after restart: %v", b)
	}
}

func TestLibreFangAuditQueryAndExport(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	home := t.TempDir()
	td := runFangd(t, home, cfg, keyEnv...)
	for _, n := range []string{"a1", "a2", "a3"} {
		td.must(201, "POST", "/api/agents", map[string]any{"name": n, "model": "fakeoai/gpt-test"}, nil)
	}
	td.must(200, "DELETE", "/api/agents/a2", nil, nil)

	// LibreFang's action names; its item fields beside fangd's.
	var q struct {
		Items   []map[string]any
		Entries []map[string]any
		Total   int
		Limit   int
	}
	td.must(200, "GET", "/api/audit/query?action=AgentSpawn&limit=2", nil, &q)
	if q.Total != 3 || len(q.Items) != 2 || q.Limit != 2 || len(q.Entries) != 2 {
		t.Fatalf("query: %+v", q)
	}
	has(t, "query item", q.Items[0], "seq", "timestamp", "agent_id", "action", "detail", "outcome", "user_id", "channel", "hash",
		"id", "event_type", "details")
	if q.Items[0]["action"] != "agent_spawned" || q.Items[0]["seq"].(float64) < q.Items[1]["seq"].(float64) {
		t.Fatalf("query items: %v", q.Items)
	}
	td.must(200, "GET", "/api/audit/query?action=AgentKill", nil, &q)
	if q.Total != 1 {
		t.Fatalf("AgentKill: %+v", q)
	}
	if r := td.do("GET", "/api/audit/query?from=last-tuesday", nil); r.status != 400 || r.code() != "invalid_query" || !strings.Contains(string(r.raw), `\"from\"`) {
		t.Fatalf("bad from: %d %s", r.status, r.raw)
	}

	// Export survives a restart (it reads the store) and replays the chain.
	td.restart()
	r := td.must(200, "GET", "/api/audit/export?format=csv&order=asc&limit=100000", nil, nil)
	rows, err := csv.NewReader(bytes.NewReader(r.raw)).ReadAll()
	if err != nil || len(rows) < 6 || rows[0][0] != "seq" || rows[1][0] != "1" {
		t.Fatalf("csv: %v %d rows", err, len(rows))
	}
	for i := 2; i < len(rows); i++ {
		if rows[i][9] != rows[i-1][8] {
			t.Fatalf("row %d does not chain to the one before", i)
		}
	}
	r = td.must(200, "GET", "/api/audit/export", nil, nil) // LibreFang's default: a JSON array, newest first
	var arr []map[string]any
	if err := json.Unmarshal(r.raw, &arr); err != nil || len(arr) != len(rows)-1 && len(arr) != len(rows) {
		t.Fatalf("json export: %v, %d entries vs %d rows", err, len(arr), len(rows)-1)
	}
}
