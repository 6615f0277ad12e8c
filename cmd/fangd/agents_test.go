package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

const (
	oaiKey  = "sk-fangd-test-openai-4f9a1c0b"
	anthKey = "sk-ant-fangd-test-77d2e3aa"
)

// loopbackPolicy lets fangd reach fake platforms and receivers on
// loopback, which the network policy refuses unless allow-listed.
const loopbackPolicy = "\n[network_policy]\nallow_hosts = [\"127.0.0.1/32\"]\n"

// keyEnv hands the fake providers' keys to the daemon's environment.
var keyEnv = []string{"FANGD_TEST_OAI_KEY=" + oaiKey, "FANGD_TEST_ANTH_KEY=" + anthKey}

// fakes starts both fake providers and returns the config that points
// fangd at them, with the given extra TOML appended.
func fakes(t *testing.T, extra string) (*llmtest.Fake, *llmtest.Fake, string) {
	t.Helper()
	oai, anth := llmtest.NewOpenAI(oaiKey), llmtest.NewAnthropic(anthKey)
	t.Cleanup(oai.Close)
	t.Cleanup(anth.Close)
	cfg := fmt.Sprintf(`
[rate_limit]
api_requests_per_minute = 0

[providers.fakeoai]
api = "openai"
base_url = %q
trusted = true # a local fake on loopback
api_key_env = "FANGD_TEST_OAI_KEY"

[providers.fakeanth]
api = "anthropic"
base_url = %q
trusted = true # a local fake on loopback
api_key_env = "FANGD_TEST_ANTH_KEY"

[[models]]
provider = "fakeoai"
id = "gpt-test"
input_per_m = 2.0
cached_input_per_m = 0.5
output_per_m = 8.0
context_window = 128000

[[models]]
provider = "fakeanth"
id = "claude-test"
input_per_m = 3.0
cached_input_per_m = 0.3
output_per_m = 15.0
context_window = 200000
%s`, oai.BaseURL, anth.BaseURL, extra)
	return oai, anth, cfg
}

type agentJSON struct {
	ID, Name, Model, Provider, State string
	ModelID                          string   `json:"model_id"`
	SystemPrompt                     string   `json:"system_prompt"`
	MaxTokens                        int      `json:"max_tokens"`
	Tags                             []string `json:"tags"`
	Tools                            []string `json:"tools"`
	DefaultSessionID                 string   `json:"default_session_id"`
}

type turnJSON struct {
	Response          string  `json:"response"`
	InputTokens       int64   `json:"input_tokens"`
	CachedInputTokens int64   `json:"cached_input_tokens"`
	OutputTokens      int64   `json:"output_tokens"`
	CostUSD           float64 `json:"cost_usd"`
	Model             string  `json:"model"`
	Provider          string  `json:"provider"`
	SessionID         string  `json:"session_id"`
	PricingKnown      bool    `json:"pricing_known"`
}

type usageJSON struct {
	Period            string  `json:"period"`
	TotalInputTokens  int64   `json:"total_input_tokens"`
	TotalOutputTokens int64   `json:"total_output_tokens"`
	TotalCostUSD      float64 `json:"total_cost_usd"`
	RequestCount      int64   `json:"request_count"`
	FailedRequests    int64   `json:"failed_requests"`
	ActiveAgents      int     `json:"active_agents"`
}

type budgetJSON struct {
	DailyLimitUSD    float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  float64 `json:"monthly_limit_usd"`
	TodaySpentUSD    float64 `json:"today_spent_usd"`
	MonthSpentUSD    float64 `json:"month_spent_usd"`
	Status           string  `json:"status"`
	HourlyTokenLimit int64   `json:"hourly_token_limit"`
	AlertThreshold   float64 `json:"alert_threshold"`
	ReservedUSD      float64 `json:"reserved_usd"`
}

// costOf prices what a fake reported for r: (in-cached)*in + cached*cin + out*outp per million.
func costOf(r llmtest.Request, cached, out int64, in, cin, outp float64) float64 {
	total := llmtest.InputTokens(r)
	return math.Round((float64(total-cached)*in+float64(cached)*cin+float64(out)*outp)*1e3) / 1e9
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestAgentTurnsUsageAndBudgetOverHTTP(t *testing.T) {
	t.Parallel()
	oai, anth, cfg := fakes(t, "")
	oai.SetCachedTokens(4)
	anth.SetCachedTokens(3)
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	var bodies []string
	keep := func(r response) response { bodies = append(bodies, string(r.raw)); return r }

	var coder, writer agentJSON
	keep(td.must(201, "POST", "/api/agents", map[string]any{"name": "coder", "model": "fakeoai/gpt-test",
		"system_prompt": "You write Go.", "max_tokens": 50, "tags": []string{"dev"}, "tools": []string{"file_read"}}, &coder))
	if coder.Provider != "fakeoai" || coder.ModelID != "gpt-test" || coder.MaxTokens != 50 || coder.State != "running" || len(coder.Tools) != 1 {
		t.Fatalf("created %+v", coder)
	}
	keep(td.must(201, "POST", "/api/v1/agents", map[string]any{"name": "writer", "model": "fakeanth/claude-test"}, &writer))
	if writer.MaxTokens != 1024 {
		t.Fatalf("default max_tokens: %d", writer.MaxTokens)
	}
	var list struct {
		Items []agentJSON
		Total int
	}
	keep(td.must(200, "GET", "/api/agents", nil, &list))
	if list.Total != 2 || list.Items[0].Name != "coder" {
		t.Fatalf("list %+v", list)
	}
	var page struct {
		Items         []agentJSON
		Total, Offset int
		Limit         int
	}
	keep(td.must(200, "GET", "/api/agents?offset=1&limit=500", nil, &page))
	if page.Total != 2 || len(page.Items) != 1 || page.Items[0].Name != "writer" || page.Offset != 1 || page.Limit != 100 {
		t.Fatalf("page %+v", page)
	}
	var byName agentJSON
	keep(td.must(200, "GET", "/api/agents/coder", nil, &byName))
	if byName.ID != coder.ID {
		t.Fatal("lookup by name")
	}

	// One turn on each provider.
	var t1, t2 turnJSON
	keep(td.must(200, "POST", "/api/agents/coder/message", map[string]any{"message": "hello"}, &t1))
	session := "0b7e4a52-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	keep(td.must(200, "POST", "/api/agents/"+writer.ID+"/message", map[string]any{"message": "hi there", "session_id": session}, &t2))
	r1, r2 := oai.Requests()[0], anth.Requests()[0]
	if r1.System != "You write Go." || r1.MaxTokens != 50 || r2.MaxTokens != 1024 {
		t.Fatalf("providers received %+v / %+v", r1, r2)
	}
	cost1, cost2 := costOf(r1, 4, 12, 2, 0.5, 8), costOf(r2, 3, 12, 3, 0.3, 15)
	if t1.Response != "echo: hello" || t1.InputTokens != llmtest.InputTokens(r1) || t1.CachedInputTokens != 4 ||
		t1.OutputTokens != 12 || !near(t1.CostUSD, cost1) || t1.Model != "gpt-test" || t1.SessionID != coder.DefaultSessionID || !t1.PricingKnown {
		t.Fatalf("turn 1 %+v (want cost %v)", t1, cost1)
	}
	if t2.Response != "echo: hi there" || t2.InputTokens != llmtest.InputTokens(r2) || t2.CachedInputTokens != 3 ||
		!near(t2.CostUSD, cost2) || t2.SessionID != session || t2.Provider != "fakeanth" {
		t.Fatalf("turn 2 %+v (want cost %v)", t2, cost2)
	}

	// Usage, every shape.
	in, out, cost := t1.InputTokens+t2.InputTokens, int64(24), cost1+cost2
	for _, p := range []string{"", "?period=hour", "?period=day", "?period=week", "?period=month"} {
		var u usageJSON
		keep(td.must(200, "GET", "/api/usage"+p, nil, &u))
		if u.TotalInputTokens != in || u.TotalOutputTokens != out || !near(u.TotalCostUSD, cost) || u.RequestCount != 2 || u.ActiveAgents != 2 {
			t.Fatalf("usage%s: %+v", p, u)
		}
		if p == "" && u.Period != "day" {
			t.Fatalf("default period %q", u.Period)
		}
	}
	var sum struct {
		Today struct {
			InputTokens, OutputTokens, Requests int64
			CostUSD                             float64 `json:"cost_usd"`
		}
		Quota struct {
			HourlyTokenLimit int64  `json:"hourly_token_limit"`
			HourlyTokensUsed int64  `json:"hourly_tokens_used"`
			HourlyResetAt    string `json:"hourly_reset_at"`
		}
	}
	keep(td.must(200, "GET", "/api/usage/summary", nil, &sum))
	if sum.Today.Requests != 2 || !near(sum.Today.CostUSD, cost) || sum.Quota.HourlyTokensUsed != in+out {
		t.Fatalf("summary %+v", sum)
	}
	if reset, err := time.Parse(time.RFC3339, sum.Quota.HourlyResetAt); err != nil || time.Until(reset) < 58*time.Minute {
		t.Fatalf("hourly_reset_at %q", sum.Quota.HourlyResetAt)
	}
	var bm struct {
		Models []struct {
			Model, Provider string
			InputTokens     int64   `json:"input_tokens"`
			CostUSD         float64 `json:"cost_usd"`
			RequestCount    int64   `json:"request_count"`
		}
	}
	keep(td.must(200, "GET", "/api/usage/by-model", nil, &bm))
	if len(bm.Models) != 2 || bm.Models[0].Provider != "fakeanth" || bm.Models[0].Model != "claude-test" || !near(bm.Models[0].CostUSD, cost2) {
		t.Fatalf("by-model %+v", bm)
	}
	var daily struct {
		Days []struct {
			Date     string
			Requests int64
			CostUSD  float64 `json:"cost_usd"`
		}
	}
	keep(td.must(200, "GET", "/api/usage/daily?days=3", nil, &daily))
	today := time.Now().UTC().Format("2006-01-02")
	if len(daily.Days) != 3 || daily.Days[2].Date != today || daily.Days[2].Requests != 2 || daily.Days[0].Requests != 0 {
		t.Fatalf("daily %+v", daily)
	}
	keep(td.must(200, "GET", "/api/usage/daily", nil, &daily))
	if len(daily.Days) != 7 {
		t.Fatalf("default days: %d", len(daily.Days))
	}

	// The model catalog.
	var models struct {
		Models []struct {
			Provider, ID, Source string
			PricingKnown         bool    `json:"pricing_known"`
			InputPerM            float64 `json:"input_per_m"`
			ContextWindow        int     `json:"context_window"`
		}
		DefaultPricing struct {
			InputPerM float64 `json:"input_per_m"`
		} `json:"default_pricing"`
	}
	keep(td.must(200, "GET", "/api/models?provider=fakeoai", nil, &models))
	if len(models.Models) != 1 || models.Models[0].InputPerM != 2 || models.Models[0].Source != "config" || models.DefaultPricing.InputPerM != 1 {
		t.Fatalf("models %+v", models)
	}
	keep(td.must(200, "GET", "/api/models", nil, &models))
	if len(models.Models) < 30 {
		t.Fatalf("the shipped catalog has %d models", len(models.Models))
	}

	// Budgets: a daily limit just above today's spend refuses the next call.
	var b budgetJSON
	keep(td.must(200, "GET", "/api/budget", nil, &b))
	if b.Status != "ok" || b.DailyLimitUSD != 0 || !near(b.TodaySpentUSD, cost) || b.AlertThreshold != 0.8 {
		t.Fatalf("budget %+v", b)
	}
	limit := cost * 1.01
	keep(td.must(200, "PUT", "/api/budget", map[string]any{"daily_limit_usd": limit, "monthly_limit_usd": 10.0}, &b))
	if b.DailyLimitUSD != limit || b.MonthlyLimitUSD != 10 || b.Status != "warning" {
		t.Fatalf("after PUT %+v", b)
	}
	r := keep(td.do("POST", "/api/agents/coder/message", map[string]any{"message": "one more"}))
	if r.status != 402 || r.code() != "budget_exceeded" || !strings.Contains(string(r.raw), "daily limit") {
		t.Fatalf("over budget: %d %s", r.status, r.raw)
	}
	if len(oai.Requests()) != 1 {
		t.Fatal("a refused call reached the provider")
	}
	var ranked []struct {
		AgentID      string  `json:"agent_id"`
		AgentName    string  `json:"agent_name"`
		TotalCostUSD float64 `json:"total_cost_usd"`
		TodayCostUSD float64 `json:"today_cost_usd"`
	}
	keep(td.must(200, "GET", "/api/budget/agents", nil, &ranked))
	if len(ranked) != 2 || ranked[0].AgentName != "writer" || !near(ranked[0].TotalCostUSD, cost2) || !near(ranked[1].TodayCostUSD, cost1) {
		t.Fatalf("ranking %+v", ranked)
	}
	var ab struct {
		AgentID       string  `json:"agent_id"`
		AgentName     string  `json:"agent_name"`
		DailyLimitUSD float64 `json:"daily_limit_usd"`
		TodaySpentUSD float64 `json:"today_spent_usd"`
		MonthSpentUSD float64 `json:"month_spent_usd"`
		Status        string
	}
	keep(td.must(200, "PUT", "/api/budget/agents/coder", map[string]any{"daily_limit_usd": 1.5}, &ab))
	keep(td.must(200, "GET", "/api/budget/agents/"+coder.ID, nil, &ab))
	if ab.AgentName != "coder" || ab.DailyLimitUSD != 1.5 || !near(ab.TodaySpentUSD, cost1) || !near(ab.MonthSpentUSD, cost1) || ab.Status != "ok" {
		t.Fatalf("agent budget %+v", ab)
	}

	// Delete: 200 with LibreFang's {status: "killed", agent_id}, then 404 everywhere.
	if r := td.do("DELETE", "/api/agents/writer", nil); r.status != 200 || !strings.Contains(string(r.raw), `"status":"killed"`) ||
		!strings.Contains(string(r.raw), `"agent_id":"`+writer.ID+`"`) {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	for _, p := range []string{"/api/agents/writer", "/api/agents/" + writer.ID, "/api/budget/agents/writer"} {
		if r := td.do("GET", p, nil); r.status != 404 || r.code() != "agent_not_found" {
			t.Fatalf("GET %s after delete: %d %s", p, r.status, r.raw)
		}
	}
	if r := td.do("POST", "/api/agents/writer/message", map[string]any{"message": "x"}); r.status != 404 {
		t.Fatalf("message to a deleted agent: %d", r.status)
	}

	// The audit log shows the domain events; no secret leaked anywhere.
	var rec struct {
		Entries []struct {
			EventType string `json:"event_type"`
			Outcome   string
			Details   string
		}
	}
	keep(td.must(200, "GET", "/api/audit/recent?limit=500", nil, &rec))
	seen := map[string]bool{}
	for _, e := range rec.Entries {
		seen[e.EventType+":"+e.Outcome] = true
	}
	for _, want := range []string{"agent_spawned:ok", "agent_message:ok", "agent_message:denied", "agent_terminated:ok",
		"budget_warning:warning", "budget_exceeded:exceeded"} {
		if !seen[want] {
			t.Fatalf("audit log lacks %s: %v", want, seen)
		}
	}
	everything := strings.Join(bodies, "\n") + td.stop()
	for _, k := range []string{oaiKey, anthKey} {
		if strings.Contains(everything, k) {
			t.Fatal("an API key appeared in a response, the audit log or the daemon's log")
		}
	}
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	var a agentJSON
	td.must(201, "POST", "/api/agents", map[string]any{"name": "a1", "model": "fakeoai/gpt-test"}, &a)
	td.must(200, "PUT", "/api/budget", map[string]any{"daily_limit_usd": 5.0}, nil)
	long := strings.Repeat("x", 100_001)
	cases := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/api/agents", map[string]any{"name": "b", "model": "nosuch/m"}, 400, "unknown_provider"},
		{"POST", "/api/agents", map[string]any{"name": "b", "model": "gpt-4o"}, 400, "invalid_model"},
		{"POST", "/api/agents", map[string]any{"name": "b c", "model": "fakeoai/gpt-test"}, 400, "invalid_input"},
		{"POST", "/api/agents", map[string]any{"name": "a1", "model": "fakeoai/gpt-test"}, 409, "agent_name_taken"},
		{"POST", "/api/agents", map[string]any{"name": "b", "model": "fakeoai/gpt-test", "max_tokens": -1}, 400, "invalid_input"},
		{"POST", "/api/agents", map[string]any{"name": "b", "model": "fakeoai/gpt-test", "max_tokens": "many"}, 400, "invalid_json"},
		{"POST", "/api/agents", map[string]any{"name": "b", "model": "fakeoai/gpt-test", "colour": "red"}, 400, "unknown_field"},
		{"POST", "/api/agents", "{", 400, "invalid_json"},
		{"PATCH", "/api/agents/a1", map[string]any{"model": "nosuch/x"}, 400, "unknown_provider"},
		{"PATCH", "/api/agents/a1", map[string]any{}, 400, "invalid_input"},
		{"POST", "/api/agents/a1/message", map[string]any{"message": ""}, 400, "empty_message"},
		{"POST", "/api/agents/a1/message", map[string]any{"message": "  \n\t"}, 400, "empty_message"},
		{"POST", "/api/agents/a1/message", map[string]any{"message": long}, 413, "message_too_large"},
		{"POST", "/api/agents/a1/message", map[string]any{"message": "hi", "session_id": "not-a-uuid"}, 400, "invalid_session_id"},
		{"POST", "/api/agents/a1/message", map[string]any{"text": "hi"}, 400, "unknown_field"},
		{"POST", "/api/agents/bad%20id/message", map[string]any{"message": "hi"}, 400, "invalid_agent_id"},
		{"GET", "/api/agents/bad%20id", nil, 400, "invalid_agent_id"},
		{"GET", "/api/agents/" + strings.Repeat("a", 70), nil, 400, "invalid_agent_id"},
		{"GET", "/api/agents/00000000-0000-4000-8000-000000000000", nil, 404, "agent_not_found"},
		{"DELETE", "/api/agents/nobody", nil, 404, "agent_not_found"},
		{"GET", "/api/budget/agents/bad%20id", nil, 400, "invalid_agent_id"},
		{"GET", "/api/budget/agents/nobody", nil, 404, "agent_not_found"},
		{"PUT", "/api/budget/agents/nobody", map[string]any{"daily_limit_usd": 1}, 404, "agent_not_found"},
		{"PUT", "/api/budget/agents/a1", map[string]any{"daily_limit_usd": -1}, 400, "invalid_input"},
		{"PUT", "/api/budget/agents/a1", map[string]any{}, 400, "invalid_input"},
		{"PUT", "/api/budget", map[string]any{"daily_limit_usd": -0.01}, 400, "invalid_input"},
		{"PUT", "/api/budget", `{"daily_limit_usd": NaN}`, 400, "invalid_json"},
		{"PUT", "/api/budget", map[string]any{"daily_limit_usd": "NaN"}, 400, "invalid_json"},
		{"PUT", "/api/budget", map[string]any{"monthly_limit_usd": "10"}, 400, "invalid_json"},
		{"PUT", "/api/budget", map[string]any{"monthly_limit_usd": true}, 400, "invalid_json"},
		{"PUT", "/api/budget", `{"daily_limit_usd": 1e999}`, 400, "invalid_json"},
		{"PUT", "/api/budget", map[string]any{"alert_threshold": 1.5}, 400, "invalid_input"},
		{"PUT", "/api/budget", map[string]any{"hourly_token_limit": 1.5}, 400, "invalid_json"},
		{"PUT", "/api/budget", map[string]any{"hourly_token_limit": -5}, 400, "invalid_input"},
		{"PUT", "/api/budget", map[string]any{"daily_limit_usd": 1, "monthly_limit_usd": -1}, 400, "invalid_input"},
		{"PUT", "/api/budget", map[string]any{}, 400, "invalid_input"},
		{"GET", "/api/usage?period=year", nil, 400, "invalid_query"},
		{"GET", "/api/usage/by-model?period=", nil, 400, "invalid_query"},
		{"GET", "/api/usage/daily?days=0", nil, 400, "invalid_query"},
		{"GET", "/api/usage/daily?days=367", nil, 400, "invalid_query"},
		{"GET", "/api/usage/daily?days=seven", nil, 400, "invalid_query"},
		{"GET", "/api/models?provider=nosuch", nil, 400, "unknown_provider"},
	}
	for _, c := range cases {
		r := td.do(c.method, c.path, c.body)
		if r.status != c.status || r.code() != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, r.status, r.raw, c.status, c.code)
		}
	}
	// Nothing was written: one agent, the first budget, no usage.
	var list struct{ Total int }
	td.must(200, "GET", "/api/agents", nil, &list)
	var b budgetJSON
	td.must(200, "GET", "/api/budget", nil, &b)
	var u usageJSON
	td.must(200, "GET", "/api/usage?period=month", nil, &u)
	var got agentJSON
	td.must(200, "GET", "/api/agents/a1", nil, &got)
	if list.Total != 1 || b.DailyLimitUSD != 5 || b.MonthlyLimitUSD != 0 || b.AlertThreshold != 0.8 || b.HourlyTokenLimit != 0 ||
		u.RequestCount != 0 || got.Model != "fakeoai/gpt-test" {
		t.Fatalf("bad input changed state: agents=%d budget=%+v usage=%+v agent=%+v", list.Total, b, u, got)
	}
}

func TestProviderFailuresMapTo502And503(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, "\n[llm]\ntimeout_secs = 1\n")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	td.must(201, "POST", "/api/agents", map[string]any{"name": "a", "model": "fakeoai/gpt-test"}, nil)
	msg := map[string]any{"message": "hi"}
	oai.FailNext(llmtest.Failure{Status: 429, RetryAfter: 7, Message: "Rate limit reached for gpt-test"},
		llmtest.Failure{Status: 500, Message: "The server had an error while processing your request"},
		llmtest.Failure{Status: 401, Message: "Incorrect API key provided: " + oaiKey})
	r := td.do("POST", "/api/agents/a/message", msg)
	if r.status != 503 || r.code() != "provider_rate_limited" || r.header.Get("Retry-After") != "7" || !strings.Contains(string(r.raw), "Rate limit reached") {
		t.Fatalf("429: %d %v %s", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if r = td.do("POST", "/api/agents/a/message", msg); r.status != 502 || r.code() != "provider_error" || !strings.Contains(string(r.raw), "server had an error") {
		t.Fatalf("500: %d %s", r.status, r.raw)
	}
	if r = td.do("POST", "/api/agents/a/message", msg); r.status != 502 || r.code() != "provider_auth_failed" || strings.Contains(string(r.raw), oaiKey) {
		t.Fatalf("401: %d %s", r.status, r.raw)
	}
	oai.SetLatency(3 * time.Second)
	if r = td.do("POST", "/api/agents/a/message", msg); r.status != 503 || r.code() != "provider_timeout" {
		t.Fatalf("timeout: %d %s", r.status, r.raw)
	}
	var u usageJSON
	td.must(200, "GET", "/api/usage", nil, &u)
	if u.RequestCount != 4 || u.FailedRequests != 4 || u.TotalCostUSD != 0 {
		t.Fatalf("failed calls are metered as failed: %+v", u)
	}
	var b budgetJSON
	td.must(200, "GET", "/api/budget", nil, &b)
	if b.ReservedUSD != 0 {
		t.Fatalf("failed calls left reservations: %+v", b)
	}
	metrics := string(td.must(200, "GET", "/metrics", nil, nil).raw)
	for _, want := range []string{`fangd_llm_calls_total{outcome="rate_limited",provider="fakeoai"} 1`,
		`fangd_llm_calls_total{outcome="timeout",provider="fakeoai"} 1`, `fangd_llm_calls_total{outcome="rejected",provider="fakeoai"} 1`,
		// The scrape-time collectors answer in the whole daemon too.
		`fangd_mcp_servers{status="connected"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	if strings.Contains(td.stop(), oaiKey) {
		t.Fatal("the key reached the log")
	}
}

func TestRestartKeepsAgentsSessionsUsageAndBudgets(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, "")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	var a agentJSON
	td.must(201, "POST", "/api/agents", map[string]any{"name": "keeper", "model": "fakeoai/gpt-test", "system_prompt": "remember"}, &a)
	var t1 turnJSON
	td.must(200, "POST", "/api/agents/keeper/message", map[string]any{"message": "my name is Ada"}, &t1)
	td.must(200, "PUT", "/api/budget", map[string]any{"daily_limit_usd": 3.0, "alert_threshold": 0.6, "hourly_token_limit": 1000000}, nil)
	td.must(200, "PUT", "/api/budget/agents/keeper", map[string]any{"monthly_limit_usd": 2.0}, nil)

	td.restart()

	var got agentJSON
	td.must(200, "GET", "/api/agents/"+a.ID, nil, &got)
	if got.Name != "keeper" || got.SystemPrompt != "remember" || got.State != "running" {
		t.Fatalf("agent after restart %+v", got)
	}
	var u usageJSON
	td.must(200, "GET", "/api/usage", nil, &u)
	if u.RequestCount != 1 || !near(u.TotalCostUSD, t1.CostUSD) || u.ActiveAgents != 1 {
		t.Fatalf("usage after restart %+v", u)
	}
	var b budgetJSON
	td.must(200, "GET", "/api/budget", nil, &b)
	if b.DailyLimitUSD != 3 || b.AlertThreshold != 0.6 || b.HourlyTokenLimit != 1000000 || !near(b.TodaySpentUSD, t1.CostUSD) {
		t.Fatalf("budget after restart %+v", b)
	}
	var ab struct {
		MonthlyLimitUSD float64 `json:"monthly_limit_usd"`
	}
	td.must(200, "GET", "/api/budget/agents/keeper", nil, &ab)
	if ab.MonthlyLimitUSD != 2 {
		t.Fatalf("agent budget after restart %+v", ab)
	}
	var t2 turnJSON
	td.must(200, "POST", "/api/agents/keeper/message", map[string]any{"message": "what is my name?"}, &t2)
	reqs := oai.Requests()
	last := reqs[len(reqs)-1]
	if len(last.Messages) != 3 || last.Messages[0].Content != "my name is Ada" || last.Messages[1].Content != "echo: my name is Ada" {
		t.Fatalf("the session's history did not survive the restart: %+v", last.Messages)
	}
	if t2.SessionID != t1.SessionID {
		t.Fatal("the default session changed across the restart")
	}
}

// TestHundredConcurrentMessagesNeverOverspend drives the ledger's promise
// end to end: 100 messages at once, over HTTP, to agents whose calls
// together would cost far more than the daily budget. Calls are admitted
// on their worst case, so the money actually spent never passes the limit.
func TestHundredConcurrentMessagesNeverOverspend(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, "")
	oai.SetLatency(20 * time.Millisecond)
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	for i := 0; i < 4; i++ {
		td.must(201, "POST", "/api/agents", map[string]any{"name": fmt.Sprintf("w%d", i), "model": "fakeoai/gpt-test", "max_tokens": 50}, nil)
	}
	// Worst case per call: prompt bound (~40 tokens) * $2/M + 50 * $8/M ~ $0.00048.
	const limit = 0.004
	td.must(200, "PUT", "/api/budget", map[string]any{"daily_limit_usd": limit}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var spent float64
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			session := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			r := td.do("POST", fmt.Sprintf("/api/agents/w%d/message", i%4), map[string]any{"message": "go", "session_id": session})
			mu.Lock()
			defer mu.Unlock()
			statuses[r.status]++
			if r.status == 200 {
				var tr turnJSON
				json.Unmarshal(r.raw, &tr)
				spent += tr.CostUSD
			} else if r.status != 402 || r.code() != "budget_exceeded" {
				t.Errorf("unexpected %d %s", r.status, r.raw)
			}
		}(i)
	}
	wg.Wait()
	var b budgetJSON
	td.must(200, "GET", "/api/budget", nil, &b)
	var u usageJSON
	td.must(200, "GET", "/api/usage", nil, &u)
	t.Logf("%d admitted, %d refused; spent %.6f of %.4f USD", statuses[200], statuses[402], b.TodaySpentUSD, limit)
	if b.TodaySpentUSD > limit || spent > limit+1e-12 {
		t.Fatalf("overspent: ledger says %.9f, answers add up to %.9f, limit %.4f", b.TodaySpentUSD, spent, limit)
	}
	if statuses[200]+statuses[402] != 100 || statuses[402] == 0 || statuses[200] < 8 {
		t.Fatalf("statuses %v", statuses)
	}
	if u.RequestCount != int64(statuses[200]) || int64(len(oai.Requests())) != u.RequestCount || !near(u.TotalCostUSD, b.TodaySpentUSD) {
		t.Fatalf("every admitted call is metered once, refused ones never reach the provider: usage %+v, provider saw %d, %v",
			u, len(oai.Requests()), statuses)
	}
	if b.ReservedUSD != 0 {
		t.Fatalf("reservations left: %+v", b)
	}
}
