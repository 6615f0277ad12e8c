package main

// Budgets the LibreFang way against the real binary (issue 16 item 4):
// its request shapes set hourly windows, agent token limits, provider and
// user budgets; a kill -9 loses none of them, and the rolling hour's spend
// is still enforced after the restart.

import (
	"strings"
	"syscall"
	"testing"
)

func TestLibreFangBudgetsSurviveKill9(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	td.must(201, "POST", "/api/agents", map[string]any{"name": "keeper", "model": "fakeoai/gpt-test"}, nil)

	var t1 turnJSON
	td.must(200, "POST", "/api/agents/keeper/message", map[string]any{"message": "hi", "sender_id": "7", "channel_type": "telegram"}, &t1)
	c := t1.CostUSD
	// The next call's worst case does not fit what is left of the hour.
	td.must(200, "PUT", "/api/budget", map[string]any{"max_hourly_usd": c * 1.2, "max_daily_usd": 10, "alert_threshold": 0.9,
		"default_max_llm_tokens_per_hour": 500000}, nil)
	td.must(200, "PUT", "/api/budget/agents/keeper", map[string]any{"max_cost_per_hour_usd": 3, "max_llm_tokens_per_hour": 400000}, nil)
	td.must(200, "PUT", "/api/budget/providers/fakeoai", map[string]any{"max_cost_per_day_usd": 1, "max_tokens_per_hour": 300000}, nil)
	td.must(200, "PUT", "/api/budget/users/telegram:7", map[string]any{"max_hourly_usd": 0, "max_daily_usd": 2, "max_monthly_usd": 0,
		"alert_threshold": 0.7}, nil)

	td.p.cmd.Process.Signal(syscall.SIGKILL)
	td.p.done <- <-td.p.done // the launcher's cleanup waits for it too
	td.start()

	var b map[string]any
	td.must(200, "GET", "/api/budget", nil, &b)
	if !near(b["hourly_spend"].(float64), c) || b["hourly_limit"] != c*1.2 || b["daily_limit"] != 10.0 || b["alert_threshold"] != 0.9 ||
		b["default_max_llm_tokens_per_hour"] != 500000.0 || !near(b["hourly_pct"].(float64), 1/1.2) {
		t.Fatalf("global budget after kill -9: %v", b)
	}
	r := td.do("POST", "/api/agents/keeper/message", map[string]any{"message": "again"})
	if r.status != 402 || r.code() != "budget_exceeded" || !strings.Contains(string(r.raw), "global hourly limit") {
		t.Fatalf("the rolling hour's spend after the restart: %d %s", r.status, r.raw)
	}
	var ab map[string]any
	td.must(200, "GET", "/api/budget/agents/keeper", nil, &ab)
	if ab["max_cost_per_hour_usd"] != 3.0 || ab["tokens"].(map[string]any)["limit"] != 400000.0 || !near(ab["hourly"].(map[string]any)["spend"].(float64), c) {
		t.Fatalf("agent budget after kill -9: %v", ab)
	}
	var pb map[string]any
	td.must(200, "GET", "/api/budget/providers/fakeoai", nil, &pb)
	if pb["cap_daily_usd"] != 1.0 || pb["cap_tokens_per_hour"] != 300000.0 || !near(pb["spend_daily_usd"].(float64), c) ||
		pb["tokens_this_hour"].(float64) != float64(t1.InputTokens+t1.OutputTokens) {
		t.Fatalf("provider budget after kill -9: %v", pb)
	}
	var ub map[string]any
	td.must(200, "GET", "/api/budget/users/telegram:7", nil, &ub)
	if ub["enforced"] != true || ub["alert_threshold"] != 0.7 || ub["daily"].(map[string]any)["limit"] != 2.0 ||
		!near(ub["daily"].(map[string]any)["spend"].(float64), c) {
		t.Fatalf("user budget after kill -9: %v", ub)
	}

	// Lifting the hourly limit lets calls through again.
	td.must(200, "PUT", "/api/budget", map[string]any{"max_hourly_usd": 0}, nil)
	td.must(200, "POST", "/api/agents/keeper/message", map[string]any{"message": "again", "sender_id": "7", "channel_type": "telegram"}, nil)
	var users struct {
		Users []map[string]any `json:"users"`
	}
	td.must(200, "GET", "/api/budget/users", nil, &users)
	if len(users.Users) != 1 || users.Users[0]["user_id"] != "telegram:7" || users.Users[0]["call_count"] != 2.0 {
		t.Fatalf("users %v", users.Users)
	}
}
