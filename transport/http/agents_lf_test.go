package http

import (
	"encoding/json"
	"strings"
	"testing"
)

// lfManifestTOML is shaped like LibreFang's example manifests.
const lfManifestTOML = `name = "researcher"
version = "0.1.0"
description = "Answers questions."
author = "someone"
module = "builtin:chat"
tags = ["research"]

[model]
provider = "fake"
model = "m"
max_tokens = 512
temperature = 0.3
system_prompt = "You research."

[resources]
max_cost_per_day_usd = 3.0

[capabilities]
tools = ["shell_exec"]
network = ["*"]
`

// LibreFang's POST /api/agents (routes/agents/lifecycle.rs SpawnRequest:
// manifest_toml, template, name) answers 201 {agent_id, name}; fangd's
// answer is its agent with agent_id beside id.
func TestCreateAgentFromLibreFangManifest(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	body, _ := json.Marshal(map[string]any{"manifest_toml": lfManifestTOML})
	r := ts.mustStatus(t, 201, "POST", "/api/agents", string(body))
	var a map[string]any
	r.json(t, &a)
	if a["agent_id"] != a["id"] || a["agent_id"] == nil || a["name"] != "researcher" || a["model"] != "fake/m" ||
		a["system_prompt"] != "You research." || a["max_tokens"] != float64(512) || a["description"] != "Answers questions." ||
		a["temperature"] != 0.3 {
		t.Fatalf("created: %s", r.body)
	}
	w, _ := json.Marshal(a["warnings"])
	// [model] temperature is applied (sent to the provider), so no warning.
	if strings.Contains(string(w), "temperature") || !strings.Contains(string(w), "capabilities.network") {
		t.Fatalf("warnings: %s", w)
	}
	// [resources] max_cost_per_day_usd is the agent's budget.
	var b map[string]any
	ts.mustStatus(t, 200, "GET", "/api/budget/agents/"+a["id"].(string), "").json(t, &b)
	if b["daily_limit_usd"] != 3.0 {
		t.Fatalf("budget: %v", b)
	}
	// It is just an agent: it answers.
	var turn map[string]any
	ts.mustStatus(t, 200, "POST", "/api/agents/researcher/message", `{"message":"hi"}`).json(t, &turn)
	if turn["response"] != "echo: hi" {
		t.Fatalf("turn: %v", turn)
	}
	// The same manifest with LibreFang's name override: a second agent.
	body, _ = json.Marshal(map[string]any{"manifest_toml": lfManifestTOML, "name": "researcher-2"})
	a = nil
	ts.mustStatus(t, 201, "POST", "/api/agents", string(body)).json(t, &a)
	if a["name"] != "researcher-2" {
		t.Fatalf("name override: %v", a)
	}
	// The seed's shape still works and answers agent_id too.
	a = nil
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"plain","model":"fake/m"}`).json(t, &a)
	if a["agent_id"] != a["id"] || a["warnings"] != nil {
		t.Fatalf("seed shape: %v", a)
	}
}

func TestCreateAgentFromTemplate(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	var a map[string]any
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"template":"assistant","name":"helper","model":"fake/m"}`).json(t, &a)
	if a["name"] != "helper" || a["agent_id"] != a["id"] || a["model"] != "fake/m" || !strings.Contains(a["system_prompt"].(string), "assistant") ||
		a["warnings"] != nil {
		t.Fatalf("from template: %v", a)
	}
	a = nil
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"template":"tutor","model":"fake/m"}`).json(t, &a)
	if a["name"] != "tutor" {
		t.Fatalf("template's own name: %v", a)
	}

	// The template routes: list, detail with the manifest summary, raw TOML.
	var list struct {
		Templates []map[string]any `json:"templates"`
		Total     int              `json:"total"`
	}
	ts.mustStatus(t, 200, "GET", "/api/templates", "").json(t, &list)
	if list.Total != len(list.Templates) || list.Total < 10 || list.Templates[0]["name"] == nil || list.Templates[0]["description"] == "" {
		t.Fatalf("templates: %+v", list)
	}
	var d map[string]any
	ts.mustStatus(t, 200, "GET", "/api/templates/code-reviewer", "").json(t, &d)
	m := d["manifest"].(map[string]any)
	if d["name"] != "code-reviewer" || m["name"] != "code-reviewer" || m["model"].(map[string]any)["provider"] != "default" ||
		m["capabilities"].(map[string]any)["tools"] == nil || !strings.Contains(d["manifest_toml"].(string), "[model]") {
		t.Fatalf("template detail: %v", d)
	}
	r := ts.mustStatus(t, 200, "GET", "/api/templates/code-reviewer/toml", "")
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || string(r.body) != d["manifest_toml"] {
		t.Fatalf("toml: %s %s", r.header.Get("Content-Type"), r.body)
	}
	for _, p := range []string{"/api/templates/nope", "/api/templates/a.b", "/api/templates/nope/toml"} {
		if r := ts.authed(t, "GET", p, ""); r.status != 404 || r.envelope(t).Code != "template_not_found" {
			t.Fatalf("%s: %d %s", p, r.status, r.body)
		}
	}
}

// Bad LibreFang-shaped creates are 4xx naming what is wrong, and create
// nothing.
func TestCreateAgentLibreFangBadInput(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	// Each create costs 50 rate-limit cells (LibreFang's table): off here.
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 0 }, extra)
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	for _, c := range []struct {
		body   string
		status int
		code   string
		names  string
	}{
		{`{"template":"assistant"}`, 400, "no_default_model", "default_model"},
		{`{"template":"nope","model":"fake/m"}`, 404, "template_not_found", "nope"},
		{`{"template":"../etc/passwd","model":"fake/m"}`, 400, "invalid_template_name", "template"},
		{`{"manifest_toml":""}`, 400, "invalid_manifest", "manifest_toml"},
		{`{"manifest_toml":"name = \"x\"\n[model\n","model":"fake/m"}`, 400, "invalid_manifest", "line"},
		{j(map[string]any{"manifest_toml": "name = \"x\"\nwidgets = 3\n", "model": "fake/m"}), 400, "unknown_manifest_field", "widgets"},
		{j(map[string]any{"manifest_toml": "name = \"x\"\n[resources]\nmax_llm_tokens_per_hour = 1000\n", "model": "fake/m"}), 400, "unsupported_manifest_field", "max_llm_tokens_per_hour"},
		{j(map[string]any{"manifest_toml": lfManifestTOML, "signed_manifest": "{}"}), 400, "unsupported_field", "signed_manifest"},
		{j(map[string]any{"manifest_toml": lfManifestTOML, "tools": []string{"x"}}), 400, "invalid_input", "tools"},
		{j(map[string]any{"manifest_toml": lfManifestTOML, "system_prompt": "x"}), 400, "invalid_input", "system_prompt"},
		{j(map[string]any{"manifest_toml": strings.Replace(lfManifestTOML, `provider = "fake"`, `provider = "nobody"`, 1)}), 400, "unknown_provider", "nobody"},
		{j(map[string]any{"manifest_toml": "name = \"x\"\n" + strings.Repeat("#", 1<<20)}), 413, "manifest_too_large", "manifest_toml"},
		{`{"template":"assistant","model":"fake/m","colour":"red"}`, 400, "", "colour"},
	} {
		r := ts.authed(t, "POST", "/api/agents", c.body)
		e := r.envelope(t)
		if r.status != c.status || (c.code != "" && e.Code != c.code) || !strings.Contains(e.Error, c.names) {
			t.Errorf("%.80s: %d %s", c.body, r.status, r.body)
		}
	}
	var list struct{ Total int }
	ts.mustStatus(t, 200, "GET", "/api/agents", "").json(t, &list)
	if list.Total != 0 {
		t.Fatalf("%d agents exist after refused creates", list.Total)
	}
}

// LibreFang's PATCH /api/agents/{id} (lifecycle.rs patch_agent) takes a
// bare model with provider beside it and answers {status: "ok", agent_id,
// name}; DELETE (kill_agent) answers 200 {status: "killed", agent_id}.
// fangd's fields stay in both answers; a bad patch changes nothing.
func TestPatchAndDeleteAgentLibreFangShape(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	var a map[string]any
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"ops","model":"fake/m"}`).json(t, &a)
	id := a["id"].(string)
	for _, bad := range []string{`{"provider":"fake"}`, `{"provider":"nobody","model":"m"}`, `{"model":"m","provider":"fake","temperature":9}`, `{"schedule":"continuous"}`} {
		if r := ts.authed(t, "PATCH", "/api/agents/"+id, bad); r.status != 400 {
			t.Fatalf("%s: %d %s", bad, r.status, r.body)
		}
	}
	var p map[string]any
	ts.mustStatus(t, 200, "PATCH", "/api/agents/"+id, `{"name":"ops2","description":"d","model":"m","provider":"fake","system_prompt":"be brief","temperature":0.2}`).json(t, &p)
	if p["status"] != "ok" || p["agent_id"] != id || p["id"] != id || p["name"] != "ops2" || p["model"] != "fake/m" ||
		p["system_prompt"] != "be brief" || p["temperature"] != 0.2 {
		t.Fatalf("patch: %v", p)
	}
	var d map[string]any
	ts.mustStatus(t, 200, "DELETE", "/api/agents/"+id+"?confirm=true", "").json(t, &d)
	if d["status"] != "killed" || d["agent_id"] != id || d["name"] != "ops2" {
		t.Fatalf("delete: %v", d)
	}
	if r := ts.authed(t, "GET", "/api/agents/"+id, ""); r.status != 404 {
		t.Fatalf("after delete: %d", r.status)
	}
}
