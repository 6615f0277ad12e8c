package http

// Contract tests for issue 16 item 4: LibreFang's budget and usage
// request shapes are accepted with the same meaning and its response
// fields are answered beside the seed page's. The expected shapes are
// written from LibreFang's handlers (crates/librefang-api/src/routes/
// budget.rs, openapi.json 2026.8.19), not copied from its files.

import (
	"encoding/json"
	"math"
	"testing"
)

// obj decodes a JSON object answer.
func (r response) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

// hasKeys fails unless m has every key.
func hasKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Fatalf("%s: no %q in %v", what, k, m)
		}
	}
}

// refusedWith fails unless r is a 4xx error envelope with code.
func refusedWith(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.envelope(t).Code != code {
		t.Fatalf("want %d %s, got %d %s", status, code, r.status, r.body)
	}
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestLibreFangGlobalBudgetContract(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)

	// LibreFang's canonical names; its GET's names are aliases too.
	b := ts.mustStatus(t, 200, "PUT", "/api/budget", `{"max_hourly_usd":5,"max_daily_usd":10,"max_monthly_usd":100,"alert_threshold":0.5,"default_max_llm_tokens_per_hour":null}`).obj(t)
	hasKeys(t, "PUT /api/budget", b, "hourly_spend", "hourly_limit", "hourly_pct", "daily_spend", "daily_limit", "daily_pct",
		"monthly_spend", "monthly_limit", "monthly_pct", "alert_threshold", "default_max_llm_tokens_per_hour",
		"daily_limit_usd", "monthly_limit_usd", "today_spent_usd", "month_spent_usd", "status")
	if b["hourly_limit"] != 5.0 || b["daily_limit"] != 10.0 || b["monthly_limit"] != 100.0 || b["daily_limit_usd"] != 10.0 ||
		b["monthly_limit_usd"] != 100.0 || b["alert_threshold"] != 0.5 || b["status"] != "ok" {
		t.Fatalf("PUT answer %v", b)
	}
	ts.mustStatus(t, 200, "PUT", "/api/budget", `{"hourly_limit":6,"daily_limit_usd":11}`)

	// Bad input is a 400 and changes nothing.
	for _, body := range []string{`{"max_daily_usd":-1}`, `{"max_hourly_usd":"1"}`, `{"max_daily_usd":1,"daily_limit_usd":2}`,
		`{"max_monthly_usd":7,"monthly_limit":8}`, `{"alert_threshold":2}`, `{"default_max_llm_tokens_per_hour":-1}`,
		`{"default_max_llm_tokens_per_hour":1.5}`, `{"max_hourly_usd":1e999}`, `{"max_daily_usd":1,"bogus":1}`, `{}`} {
		if r := ts.authed(t, "PUT", "/api/budget", body); r.status != 400 {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
	}
	g := ts.mustStatus(t, 200, "GET", "/api/budget", "").obj(t)
	if g["hourly_limit"] != 6.0 || g["hourly_limit_usd"] != 6.0 || g["daily_limit"] != 11.0 || g["monthly_limit"] != 100.0 ||
		g["alert_threshold"] != 0.5 || g["default_max_llm_tokens_per_hour"] != 0.0 {
		t.Fatalf("after refused changes: %v", g)
	}
}

func TestLibreFangAgentBudgetContract(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "coder")
	ts.newAgent(t, "idle")

	r := ts.mustStatus(t, 200, "PUT", "/api/budget/agents/coder",
		`{"max_cost_per_hour_usd":1,"max_cost_per_day_usd":2,"max_cost_per_month_usd":30,"max_llm_tokens_per_hour":100000}`).obj(t)
	hasKeys(t, "PUT agent budget", r, "max_cost_per_hour_usd", "max_cost_per_day_usd", "max_cost_per_month_usd", "max_llm_tokens_per_hour",
		"agent_id", "daily_limit_usd", "monthly_limit_usd")
	if r["max_cost_per_hour_usd"] != 1.0 || r["max_cost_per_day_usd"] != 2.0 || r["daily_limit_usd"] != 2.0 ||
		r["max_cost_per_month_usd"] != 30.0 || r["max_llm_tokens_per_hour"] != 100000.0 {
		t.Fatalf("PUT answer %v", r)
	}
	for _, body := range []string{`{}`, `{"max_llm_tokens_per_hour":1.5}`, `{"max_llm_tokens_per_hour":-1}`, `{"max_cost_per_day_usd":-1}`,
		`{"max_cost_per_day_usd":1,"daily_limit_usd":3}`, `{"max_cost_per_hour_usd":"1"}`, `{"max_memory_bytes":1}`} {
		if r := ts.authed(t, "PUT", "/api/budget/agents/coder", body); r.status != 400 {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
	}
	turn := ts.mustStatus(t, 200, "POST", "/api/agents/coder/message", `{"message":"hello"}`).obj(t)
	cost := turn["cost_usd"].(float64)

	g := ts.mustStatus(t, 200, "GET", "/api/budget/agents/"+a.ID, "").obj(t)
	hasKeys(t, "agent budget", g, "agent_id", "agent_name", "hourly", "daily", "monthly", "tokens", "daily_limit_usd", "today_spent_usd", "status")
	hourly, tokens := g["hourly"].(map[string]any), g["tokens"].(map[string]any)
	if g["agent_name"] != "coder" || hourly["limit"] != 1.0 || !approx(hourly["spend"].(float64), cost) ||
		!approx(hourly["pct"].(float64), cost) || tokens["limit"] != 100000.0 || tokens["used"].(float64) <= 0 ||
		g["max_cost_per_day_usd"] != 2.0 {
		t.Fatalf("agent budget %v", g)
	}

	// The seed's bare array, with LibreFang's ranking fields on each item.
	var ranked []map[string]any
	ts.mustStatus(t, 200, "GET", "/api/budget/agents", "").json(t, &ranked)
	if len(ranked) != 2 {
		t.Fatalf("ranking %v", ranked)
	}
	hasKeys(t, "ranking", ranked[0], "agent_id", "agent_name", "total_cost_usd", "today_cost_usd", "name", "daily_cost_usd",
		"hourly_limit", "daily_limit", "monthly_limit", "max_llm_tokens_per_hour")
	if ranked[0]["name"] != "coder" || ranked[0]["hourly_limit"] != 1.0 || !approx(ranked[0]["daily_cost_usd"].(float64), cost) ||
		ranked[1]["name"] != "idle" || ranked[1]["max_llm_tokens_per_hour"] != 0.0 {
		t.Fatalf("ranking %v", ranked)
	}

	// A token limit the next call's worst case does not fit refuses it
	// before the provider is called.
	ts.mustStatus(t, 200, "PUT", "/api/budget/agents/coder", `{"max_llm_tokens_per_hour":10}`)
	refusedWith(t, ts.authed(t, "POST", "/api/agents/coder/message", `{"message":"again"}`), 402, "budget_exceeded")
	// The default applies to agents without their own limit.
	ts.mustStatus(t, 200, "PUT", "/api/budget", `{"default_max_llm_tokens_per_hour":10}`)
	refusedWith(t, ts.authed(t, "POST", "/api/agents/idle/message", `{"message":"hi"}`), 402, "budget_exceeded")
}

func TestLibreFangUserBudgetContract(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	ts.newAgent(t, "coder")
	ts.newAgent(t, "writer")

	// LibreFang's message fields name the sender: the user is "<channel_type>:<sender_id>".
	turn := ts.mustStatus(t, 200, "POST", "/api/agents/coder/message", `{"message":"hi","sender_id":"42","channel_type":"telegram"}`).obj(t)
	cost := turn["cost_usd"].(float64)
	var list struct {
		Users []map[string]any `json:"users"`
		Total int              `json:"total"`
		Limit int              `json:"limit"`
	}
	ts.mustStatus(t, 200, "GET", "/api/budget/users", "").json(t, &list)
	if list.Total != 1 || list.Limit != 25 || list.Users[0]["user_id"] != "telegram:42" || list.Users[0]["call_count"] != 1.0 ||
		!approx(list.Users[0]["daily_cost_usd"].(float64), cost) || list.Users[0]["limits"] != nil {
		t.Fatalf("users %+v", list)
	}
	hasKeys(t, "user row", list.Users[0], "user_id", "name", "hourly_cost_usd", "daily_cost_usd", "monthly_cost_usd", "call_count", "limits")

	// A full replacement; half of one more call's cost is left today.
	set := ts.mustStatus(t, 200, "PUT", "/api/budget/users/telegram:42",
		`{"max_hourly_usd":0,"max_daily_usd":`+jsonNum(cost*1.5)+`,"max_monthly_usd":0,"alert_threshold":0.5}`).obj(t)
	if set["max_daily_usd"] != cost*1.5 || set["alert_threshold"] != 0.5 || len(set) != 4 {
		t.Fatalf("PUT user answer %v", set)
	}
	// Any agent's call for that user is refused; others' calls are not.
	refusedWith(t, ts.authed(t, "POST", "/api/agents/writer/message", `{"message":"more","sender_id":"42","channel_type":"telegram"}`), 402, "budget_exceeded")
	ts.mustStatus(t, 200, "POST", "/api/agents/writer/message", `{"message":"more","sender_id":"43","channel_type":"telegram"}`)
	ts.mustStatus(t, 200, "POST", "/api/agents/writer/message", `{"message":"mine"}`)

	u := ts.mustStatus(t, 200, "GET", "/api/budget/users/telegram:42", "").obj(t)
	hasKeys(t, "user budget", u, "user_id", "name", "role", "hourly", "daily", "monthly", "alert_threshold", "alert_breach", "enforced")
	if u["enforced"] != true || u["alert_breach"] != true || u["role"] != nil || u["daily"].(map[string]any)["limit"] != cost*1.5 {
		t.Fatalf("user budget %v", u)
	}
	ts.mustStatus(t, 200, "GET", "/api/budget/users", "").json(t, &list)
	if list.Total != 3 {
		t.Fatalf("users after: %+v", list)
	}
	var ids []any
	for _, x := range list.Users {
		ids = append(ids, x["user_id"])
	}
	if !contains(ids, "api_key") || !contains(ids, "telegram:43") || !contains(ids, "telegram:42") {
		t.Fatalf("the caller credential and the other sender are users too: %v", ids)
	}

	// Bad input is a 4xx and changes nothing.
	for _, c := range []struct{ path, body string }{
		{"/api/budget/users/telegram:42", `{"max_hourly_usd":0,"max_daily_usd":5,"max_monthly_usd":0}`},
		{"/api/budget/users/telegram:42", `{"max_hourly_usd":0,"max_daily_usd":-5,"max_monthly_usd":0,"alert_threshold":0.8}`},
		{"/api/budget/users/telegram:42", `{"max_hourly_usd":0,"max_daily_usd":5,"max_monthly_usd":0,"alert_threshold":1.5}`},
		{"/api/budget/users/telegram:42", `{"max_hourly_usd":"0","max_daily_usd":5,"max_monthly_usd":0,"alert_threshold":0.8}`},
		{"/api/budget/users/%01x", `{"max_hourly_usd":0,"max_daily_usd":5,"max_monthly_usd":0,"alert_threshold":0.8}`},
	} {
		if r := ts.authed(t, "PUT", c.path, c.body); r.status != 400 {
			t.Fatalf("%s %s: %d %s", c.path, c.body, r.status, r.body)
		}
	}
	if r := ts.authed(t, "POST", "/api/agents/coder/message", `{"message":"x","channel_type":"telegram"}`); r.status != 400 {
		t.Fatalf("channel_type without sender_id: %d %s", r.status, r.body)
	}
	u = ts.mustStatus(t, 200, "GET", "/api/budget/users/telegram:42", "").obj(t)
	if u["daily"].(map[string]any)["limit"] != cost*1.5 {
		t.Fatalf("a refused change leaked: %v", u)
	}

	if r := ts.authed(t, "DELETE", "/api/budget/users/telegram:42", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	ts.mustStatus(t, 200, "POST", "/api/agents/writer/message", `{"message":"free again","sender_id":"42","channel_type":"telegram"}`)
}

func TestLibreFangProviderBudgetContract(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	ts.newAgent(t, "coder")
	cost := ts.mustStatus(t, 200, "POST", "/api/agents/coder/message", `{"message":"hi"}`).obj(t)["cost_usd"].(float64)

	var list struct {
		Providers      []map[string]any `json:"providers"`
		AlertThreshold float64          `json:"alert_threshold"`
	}
	ts.mustStatus(t, 200, "GET", "/api/budget/providers", "").json(t, &list)
	if len(list.Providers) != 1 || list.Providers[0]["provider"] != "fake" || list.Providers[0]["unconfigured"] != true ||
		list.AlertThreshold != 0.8 {
		t.Fatalf("providers %+v", list)
	}
	hasKeys(t, "provider row", list.Providers[0], "provider", "unconfigured", "cap_hourly_usd", "cap_daily_usd", "cap_monthly_usd",
		"cap_tokens_per_hour", "spend_hourly_usd", "spend_daily_usd", "spend_monthly_usd", "tokens_this_hour", "is_exhausted",
		"exhaustion_reason", "exhaustion_remaining_ms")

	// Partial: the caps absent stay; the day's cap is what was spent.
	ts.mustStatus(t, 200, "PUT", "/api/budget/providers/fake", `{"max_tokens_per_hour":1000000}`)
	p := ts.mustStatus(t, 200, "PUT", "/api/budget/providers/fake", `{"max_cost_per_day_usd":`+jsonNum(cost)+`,"max_cost_per_hour_usd":null}`).obj(t)
	if p["provider"] != "fake" || p["max_cost_per_day_usd"] != cost || p["max_tokens_per_hour"] != 1e6 || p["max_cost_per_hour_usd"] != 0.0 {
		t.Fatalf("PUT provider answer %v", p)
	}
	refusedWith(t, ts.authed(t, "POST", "/api/agents/coder/message", `{"message":"more"}`), 402, "budget_exceeded")
	row := ts.mustStatus(t, 200, "GET", "/api/budget/providers/fake", "").obj(t)
	if row["is_exhausted"] != true || row["exhaustion_reason"] != "budget_exceeded" || row["unconfigured"] != false ||
		row["exhaustion_remaining_ms"].(float64) <= 0 || row["cap_tokens_per_hour"] != 1e6 {
		t.Fatalf("exhausted provider %v", row)
	}

	for _, body := range []string{`{"max_tokens_per_hour":-1}`, `{"max_tokens_per_hour":1.5}`, `{"max_cost_per_day_usd":"x"}`,
		`{"max_cost_per_month_usd":-0.5}`, `{"max_cost_per_day_usd":1,"max_memory_bytes":1}`} {
		if r := ts.authed(t, "PUT", "/api/budget/providers/fake", body); r.status != 400 {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
	}
	if r := ts.authed(t, "PUT", "/api/budget/providers/%7F", `{"max_cost_per_day_usd":1}`); r.status != 400 {
		t.Fatalf("control character id: %d %s", r.status, r.body)
	}
	row = ts.mustStatus(t, 200, "GET", "/api/budget/providers/fake", "").obj(t)
	if row["cap_daily_usd"] != cost || row["cap_monthly_usd"] != 0.0 {
		t.Fatalf("a refused change leaked: %v", row)
	}
	// An empty partial update changes nothing, not even "configured".
	if e := ts.mustStatus(t, 200, "PUT", "/api/budget/providers/groq", `{}`).obj(t); e["provider"] != "groq" || e["max_cost_per_day_usd"] != 0.0 {
		t.Fatalf("empty PUT %v", e)
	}
	if row := ts.mustStatus(t, 200, "GET", "/api/budget/providers/groq", "").obj(t); row["unconfigured"] != true {
		t.Fatalf("empty PUT configured the provider: %v", row)
	}
	if r := ts.authed(t, "DELETE", "/api/budget/providers/fake", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	ts.mustStatus(t, 200, "POST", "/api/agents/coder/message", `{"message":"free again"}`)
}

func TestLibreFangUsageContract(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	a := ts.newAgent(t, "coder")
	var cost float64
	for _, m := range []string{"one", "two"} {
		cost += ts.mustStatus(t, 200, "POST", "/api/agents/coder/message", `{"message":"`+m+`"}`).obj(t)["cost_usd"].(float64)
	}

	u := ts.mustStatus(t, 200, "GET", "/api/usage", "").obj(t)
	hasKeys(t, "usage", u, "period", "total_cost_usd", "request_count", "items", "total", "offset", "limit")
	items := u["items"].([]any)
	if len(items) != 1 || u["total"] != 1.0 || u["request_count"] != 2.0 {
		t.Fatalf("usage %v", u)
	}
	it := items[0].(map[string]any)
	hasKeys(t, "usage item", it, "agent_id", "name", "is_hand", "total_tokens", "input_tokens", "output_tokens", "total_cost_usd", "cost", "call_count")
	if it["agent_id"] != a.ID || it["name"] != "coder" || it["call_count"] != 2.0 || !approx(it["cost"].(float64), cost) ||
		it["total_tokens"] != it["input_tokens"].(float64)+it["output_tokens"].(float64) {
		t.Fatalf("usage item %v", it)
	}

	// A query naming a period gets the seed's totals alone, unless it
	// asks for a page of the items.
	if u := ts.mustStatus(t, 200, "GET", "/api/usage?period=week", "").obj(t); u["items"] != nil || u["request_count"] != 2.0 {
		t.Fatalf("usage with a period %v", u)
	}
	if u := ts.mustStatus(t, 200, "GET", "/api/usage?period=week&limit=1", "").obj(t); len(u["items"].([]any)) != 1 || u["limit"] != 1.0 {
		t.Fatalf("usage with a period and a page %v", u)
	}

	s := ts.mustStatus(t, 200, "GET", "/api/usage/summary", "").obj(t)
	hasKeys(t, "summary", s, "today", "quota", "total_input_tokens", "total_output_tokens", "total_cost_usd", "call_count")
	if s["call_count"] != 2.0 || !approx(s["total_cost_usd"].(float64), cost) {
		t.Fatalf("summary %v", s)
	}

	var bm struct{ Models []map[string]any }
	ts.mustStatus(t, 200, "GET", "/api/usage/by-model", "").json(t, &bm)
	if len(bm.Models) != 1 || bm.Models[0]["call_count"] != 2.0 || bm.Models[0]["request_count"] != 2.0 ||
		bm.Models[0]["total_cost_usd"] != bm.Models[0]["cost_usd"] || bm.Models[0]["total_input_tokens"] != bm.Models[0]["input_tokens"] {
		t.Fatalf("by-model %v", bm)
	}

	var perf struct{ Models []map[string]any }
	ts.mustStatus(t, 200, "GET", "/api/usage/by-model/performance", "").json(t, &perf)
	if len(perf.Models) != 1 {
		t.Fatalf("performance %v", perf)
	}
	pm := perf.Models[0]
	hasKeys(t, "performance", pm, "model", "total_cost_usd", "total_input_tokens", "total_output_tokens", "call_count",
		"avg_latency_ms", "min_latency_ms", "max_latency_ms", "cost_per_call", "avg_latency_per_call")
	if pm["model"] != "m" || pm["call_count"] != 2.0 || !approx(pm["cost_per_call"].(float64), cost/2) ||
		pm["min_latency_ms"].(float64) > pm["max_latency_ms"].(float64) || pm["avg_latency_per_call"] != pm["avg_latency_ms"] {
		t.Fatalf("performance %v", pm)
	}

	var d struct{ Days []map[string]any }
	ts.mustStatus(t, 200, "GET", "/api/usage/daily", "").json(t, &d)
	today := d.Days[len(d.Days)-1]
	if today["calls"] != 2.0 || today["requests"] != 2.0 || today["tokens"] != today["input_tokens"].(float64)+today["output_tokens"].(float64) {
		t.Fatalf("daily %v", today)
	}
}

func jsonNum(v float64) string { b, _ := json.Marshal(v); return string(b) }

func contains(xs []any, x any) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
