package usage

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// callAs is h.call with the user and provider set on the reservation and
// the event.
func (h *harness) callAs(user, provider string, worstUSD float64, tokens int64, e Event) error {
	e.User, e.Provider = user, provider
	res, err := h.m.Reserve(context.Background(), Reserve{AgentID: e.AgentID, AgentName: e.AgentName, Provider: provider, Model: e.Model, User: user,
		CostNanos: nanos(worstUSD), Tokens: tokens})
	if err != nil {
		return err
	}
	_, err = h.m.Settle(context.Background(), res.ID, e)
	return err
}

func refused(t *testing.T, err error, want string) {
	t.Helper()
	e := kernel.AsError(err)
	if e == nil || e.Code != "budget_exceeded" || e.Kind != kernel.KindPaymentRequired || !strings.Contains(e.Msg, want) {
		t.Fatalf("want a budget_exceeded refusal naming %q, got %v", want, err)
	}
}

func f(v float64) *float64 { return &v }
func n(v int64) *int64     { return &v }

// The global hourly limit counts the rolling last 60 minutes, refuses a
// call whose worst case would pass it, and survives a restart (the
// rolling hour is rebuilt from the raw events).
func TestGlobalHourlyLimitRollsAndSurvivesRestart(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	if _, err := h.m.SetBudget(context.Background(), SetBudget{HourlyLimitUSD: f(1)}); err != nil {
		t.Fatal(err)
	}
	if err := h.call(0.7, 0, ev("a", "m", 1, 1, 0.6)); err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(20 * time.Minute)
	h.restart()
	st, _ := h.m.Budget(context.Background())
	if st.HourlyLimit != 1 || st.HourlyLimitUSD != 1 || !near(st.HourlySpend, 0.6) || !near(st.HourlyPct, 0.6) || !near(st.HourSpentUSD, 0.6) {
		t.Fatalf("after restart: %+v", st)
	}
	refused(t, h.call(0.5, 0, ev("a", "m", 1, 1, 0.1)), "the global hourly limit")
	// 41 minutes after the first call it has left the window.
	h.clk.Advance(41 * time.Minute)
	if err := h.call(0.5, 0, ev("a", "m", 1, 1, 0.1)); err != nil {
		t.Fatalf("the window rolled: %v", err)
	}
	if _, ex := h.alerts(); ex != 1 {
		t.Fatalf("%d budget_exceeded alerts, want the one refusal", ex)
	}
	_ = ctx
}

// An agent's hourly cost and token limits, and the default token limit
// for agents without their own.
func TestAgentHourlyLimits(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	if _, err := h.m.SetAgentBudget(context.Background(), SetAgentBudget{AgentID: "a1", HourlyLimitUSD: f(0.5), TokensPerHour: n(1000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.SetBudget(context.Background(), SetBudget{DefaultAgentTokensPerHour: n(100)}); err != nil {
		t.Fatal(err)
	}
	if err := h.call(0.1, 900, ev("a1", "m", 400, 400, 0.1)); err != nil {
		t.Fatal(err)
	}
	refused(t, h.call(0.1, 300, ev("a1", "m", 1, 1, 0)), "hourly tokens limit")
	refused(t, h.call(0.45, 10, ev("a1", "m", 1, 1, 0)), "agent name-a1's hourly limit")
	// a2 has no limit of its own: the default 100 tokens applies.
	refused(t, h.call(0, 101, ev("a2", "m", 1, 1, 0)), "agent name-a2's hourly tokens limit")
	if err := h.call(0, 100, ev("a2", "m", 1, 1, 0)); err != nil {
		t.Fatal(err)
	}
	h.restart()
	ab, _ := h.m.AgentBudget(context.Background(), "a1", "x")
	if ab.Tokens.Used != 800 || ab.Tokens.Limit != 1000 || ab.MaxLLMTokensPerHour == nil || *ab.MaxLLMTokensPerHour != 1000 ||
		ab.MaxCostPerHourUSD != 0.5 || !near(ab.Hourly.Spend, 0.1) || !near(ab.Hourly.Pct, 0.2) {
		t.Fatalf("agent budget after restart %+v", ab)
	}
	ab, _ = h.m.AgentBudget(context.Background(), "a2", "x")
	if ab.Tokens.Limit != 100 || ab.MaxLLMTokensPerHour != nil {
		t.Fatalf("default token limit %+v", ab)
	}
}

// A provider's limits hold over every agent's calls to it and not to
// other providers; they survive a restart.
func TestProviderBudgetEnforcedAcrossAgents(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	set, err := h.m.SetProviderBudget(ctx, SetProviderBudget{Provider: "groq", DailyLimitUSD: f(1), TokensPerHour: n(10_000)})
	if err != nil || set.MaxCostPerDayUSD != 1 || set.MaxTokensPerHour != 10_000 || set.MaxCostPerHourUSD != 0 {
		t.Fatalf("set %+v %v", set, err)
	}
	if err := h.callAs("", "groq", 0.7, 100, ev("a1", "m", 10, 10, 0.6)); err != nil {
		t.Fatal(err)
	}
	refused(t, h.callAs("", "groq", 0.5, 100, ev("a2", "m", 1, 1, 0.1)), "provider groq's daily limit")
	if err := h.callAs("", "openai", 0.5, 100, ev("a2", "m", 1, 1, 0.5)); err != nil {
		t.Fatalf("another provider is not limited: %v", err)
	}
	h.restart()
	refused(t, h.callAs("", "groq", 0.5, 100, ev("a2", "m", 1, 1, 0.1)), "provider groq's daily limit")
	list, err := h.m.ProviderBudgets(ctx)
	if err != nil || len(list.Providers) != 2 {
		t.Fatalf("providers %+v %v", list, err)
	}
	g, o := list.Providers[0], list.Providers[1]
	if g.Provider != "groq" || g.Unconfigured || g.CapDailyUSD != 1 || !near(g.SpendDailyUSD, 0.6) || g.TokensThisHour != 20 || g.IsExhausted {
		t.Fatalf("groq %+v", g)
	}
	if o.Provider != "openai" || !o.Unconfigured || !near(o.SpendMonthlyUSD, 0.5) {
		t.Fatalf("openai %+v", o)
	}
	// Reaching the cap exhausts the provider until midnight UTC.
	if _, err := h.m.SetProviderBudget(ctx, SetProviderBudget{Provider: "groq", DailyLimitUSD: f(0.6)}); err != nil {
		t.Fatal(err)
	}
	row, _ := h.m.ProviderBudget(ctx, "groq")
	if !row.IsExhausted || row.ExhaustionReason == nil || *row.ExhaustionReason != "budget_exceeded" ||
		row.ExhaustionRemainingMS == nil || *row.ExhaustionRemainingMS != 12*3600*1000 || row.CapTokensPerHour != 10_000 {
		t.Fatalf("exhausted row %+v", row)
	}
	if _, err := h.m.SetProviderBudget(ctx, SetProviderBudget{Provider: "groq", Clear: true}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if err := h.callAs("", "groq", 0.5, 100, ev("a2", "m", 1, 1, 0.1)); err != nil {
		t.Fatalf("cleared provider budget still enforced: %v", err)
	}
}

// A user's limits hold over the calls made on the user's behalf by any
// agent; calls for nobody or for another user are not counted.
func TestUserBudgetEnforced(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	got, err := h.m.SetUserBudget(ctx, "telegram:42", UserLimits{MaxHourlyUSD: 0, MaxDailyUSD: 1, MaxMonthlyUSD: 0, AlertThreshold: 0.5})
	if err != nil || got.MaxDailyUSD != 1 || got.AlertThreshold != 0.5 {
		t.Fatalf("set %+v %v", got, err)
	}
	if err := h.callAs("telegram:42", "groq", 0.7, 0, ev("a1", "m", 1, 1, 0.6)); err != nil {
		t.Fatal(err)
	}
	if w, _ := h.alerts(); w != 1 {
		t.Fatalf("%d warnings at 60%% of the user's limit with its threshold 50%%", w)
	}
	refused(t, h.callAs("telegram:42", "openai", 0.5, 0, ev("a2", "m", 1, 1, 0.1)), "user telegram:42's daily limit")
	for _, who := range []string{"", "api_key"} {
		if err := h.callAs(who, "groq", 0.5, 0, ev("a2", "m", 1, 1, 0.5)); err != nil {
			t.Fatalf("a call for %q is not the user's: %v", who, err)
		}
	}
	h.restart()
	refused(t, h.callAs("telegram:42", "openai", 0.5, 0, ev("a2", "m", 1, 1, 0.1)), "user telegram:42's daily limit")
	ub, err := h.m.UserBudget(ctx, "telegram:42")
	if err != nil || !ub.Enforced || !ub.Configured || !ub.AlertBreach || !near(ub.Daily.Spend, 0.6) || ub.Daily.Limit != 1 ||
		ub.CallCount != 1 || ub.Role != nil || ub.AlertThreshold != 0.5 {
		t.Fatalf("user budget %+v %v", ub, err)
	}
	rank, _ := h.m.UserBudgets(ctx, 25)
	if len(rank.Users) != 2 || rank.Users[0].UserID != "telegram:42" || rank.Users[0].Limits == nil ||
		rank.Users[1].UserID != "api_key" || rank.Users[1].Limits != nil || !near(rank.Users[1].DailyCostUSD, 0.5) {
		t.Fatalf("ranking %+v", rank)
	}
	if err := h.m.ClearUserBudget(ctx, "telegram:42"); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if err := h.callAs("telegram:42", "openai", 0.5, 0, ev("a2", "m", 1, 1, 0.1)); err != nil {
		t.Fatalf("cleared user budget still enforced: %v", err)
	}
}

// Bad limits and ids are refused and change nothing, across a restart.
func TestBadScopedLimitsChangeNothing(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	if _, err := h.m.SetProviderBudget(ctx, SetProviderBudget{Provider: "groq", DailyLimitUSD: f(2)}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []SetProviderBudget{{Provider: "groq", DailyLimitUSD: f(-1)}, {Provider: "groq", HourlyLimitUSD: f(math.NaN())},
		{Provider: "groq", TokensPerHour: n(-1)}, {Provider: "", DailyLimitUSD: f(1)}, {Provider: "a\nb", DailyLimitUSD: f(1)},
		{Provider: "groq", DailyLimitUSD: f(3), MonthlyLimitUSD: f(math.Inf(1))}} {
		if _, err := h.m.SetProviderBudget(ctx, s); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Fatalf("%+v accepted: %v", s, err)
		}
	}
	for _, u := range []UserLimits{{MaxDailyUSD: -1}, {MaxHourlyUSD: math.NaN()}, {AlertThreshold: 1.5}, {MaxMonthlyUSD: 2e9}} {
		if _, err := h.m.SetUserBudget(ctx, "u1", u); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Fatalf("%+v accepted: %v", u, err)
		}
	}
	if _, err := h.m.SetUserBudget(ctx, strings.Repeat("x", MaxScopeID+1), UserLimits{}); err == nil {
		t.Fatal("overlong user id accepted")
	}
	for _, s := range []SetBudget{{HourlyLimitUSD: f(-1)}, {DefaultAgentTokensPerHour: n(-1)}} {
		if _, err := h.m.SetBudget(context.Background(), s); err == nil {
			t.Fatalf("%+v accepted", s)
		}
	}
	if _, err := h.m.SetAgentBudget(context.Background(), SetAgentBudget{AgentID: "a", TokensPerHour: n(-5)}); err == nil {
		t.Fatal("negative agent token limit accepted")
	}
	h.restart()
	row, _ := h.m.ProviderBudget(ctx, "groq")
	ub, _ := h.m.UserBudget(ctx, "u1")
	st, _ := h.m.Budget(context.Background())
	ab, _ := h.m.AgentBudget(context.Background(), "a", "a")
	if row.CapDailyUSD != 2 || row.CapMonthlyUSD != 0 || row.CapHourlyUSD != 0 || ub.Configured || st.HourlyLimitUSD != 0 ||
		st.DefaultMaxLLMTokensPerHour != 0 || ab.MaxLLMTokensPerHour != nil {
		t.Fatalf("a refused change leaked: %+v %+v %+v %+v", row, ub, st, ab)
	}
}

// Events with a user use the second binary format; events without one
// are byte for byte what they were.
func TestEventUserEncoding(t *testing.T) {
	e := ev("a", "m", 1, 2, 0.5)
	e.Time = time.Unix(0, 1234567890).UTC()
	plain := appendEventBinary(nil, &e)
	if plain[0] != eventFormatBinary {
		t.Fatalf("format %d", plain[0])
	}
	e.User = "slack:U1"
	withUser := appendEventBinary(nil, &e)
	var back Event
	if withUser[0] != eventFormatBinaryUser || decodeEvent(withUser, &back) != nil || back != e {
		t.Fatalf("round trip %+v", back)
	}
	if len(withUser) != len(plain)+1+len("slack:U1") {
		t.Fatalf("user costs %d bytes", len(withUser)-len(plain))
	}
}
