package usage

// Budgets per LLM provider and per user: the same limits as the global
// and per-agent ones (checked by check on every reservation, alerted by
// checkAlerts), stored beside them and answered under LibreFang's names.

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// held is what calls in flight hold against a provider or a user.
type held struct{ cost, tokens int64 }

func (l *ledger) providerRow(id string, now time.Time) ProviderBudget {
	s := scope{kind: 'p', id: id}
	pl, configured := l.provLimits[id]
	c, thr := l.capsOf(s)
	sp := l.spendOf(s, now, true)
	heldCost, _ := l.heldBy(s)
	row := ProviderBudget{Provider: id, Unconfigured: !configured,
		CapHourlyUSD: pl.HourlyLimitUSD, CapDailyUSD: pl.DailyLimitUSD, CapMonthlyUSD: pl.MonthlyLimitUSD, CapTokensPerHour: pl.TokensPerHour,
		SpendHourlyUSD: dollars(sp.hour), SpendDailyUSD: dollars(sp.day), SpendMonthlyUSD: dollars(sp.month), TokensThisHour: sp.tokens,
		ReservedUSD: dollars(heldCost),
		Status: worst(status(sp.day, c.daily, thr), status(sp.month, c.monthly, thr),
			status(sp.hour, c.hourly, thr), status(sp.tokens, c.tokens, thr)),
	}
	// Exhausted while a cap is reached; a daily or monthly one says when it
	// resets, the rolling hour frees up as calls leave it (no fixed time).
	var reset time.Time
	switch {
	case c.monthly > 0 && sp.month >= c.monthly:
		t := now.UTC()
		reset = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	case c.daily > 0 && sp.day >= c.daily:
		reset = dayTime(dayOf(now) + 1)
	case (c.hourly > 0 && sp.hour >= c.hourly) || (c.tokens > 0 && sp.tokens >= c.tokens):
	default:
		return row
	}
	reason := "budget_exceeded"
	row.IsExhausted, row.ExhaustionReason = true, &reason
	if !reset.IsZero() {
		ms := reset.Sub(now).Milliseconds()
		row.ExhaustionRemainingMS = &ms
	}
	return row
}

// providerBudgets lists every provider with a budget or with usage this
// month, by name.
func (l *ledger) providerBudgets() *ProviderBudgets {
	now := l.now().UTC()
	l.r.month(now)
	ids := map[string]struct{}{}
	for id := range l.provLimits {
		ids[id] = struct{}{}
	}
	for id := range l.r.provMonth {
		ids[id] = struct{}{}
	}
	out := &ProviderBudgets{Providers: make([]ProviderBudget, 0, len(ids)), AlertThreshold: l.limits.AlertThreshold}
	for id := range ids {
		out.Providers = append(out.Providers, l.providerRow(id, now))
	}
	sort.Slice(out.Providers, func(i, j int) bool { return out.Providers[i].Provider < out.Providers[j].Provider })
	return out
}

func (l *ledger) setProviderBudget(c actor.Context, m *SetProviderBudget) any {
	if err := CheckScopeID("provider id", m.Provider); err != nil {
		return err
	}
	key := []byte(pProvLimit + m.Provider)
	if m.Clear {
		if _, ok := l.provLimits[m.Provider]; ok {
			if err := writeKVs(l.db, []kv{{key: key, del: true}}); err != nil {
				return err
			}
			delete(l.provLimits, m.Provider)
		}
		return &ProviderLimitsSet{Provider: m.Provider}
	}
	next := l.provLimits[m.Provider]
	if m.HourlyLimitUSD == nil && m.DailyLimitUSD == nil && m.MonthlyLimitUSD == nil && m.TokensPerHour == nil {
		// Nothing to change (LibreFang's empty partial update): answer
		// the caps as they are, without making the provider configured.
		return &ProviderLimitsSet{Provider: m.Provider, MaxCostPerHourUSD: next.HourlyLimitUSD, MaxCostPerDayUSD: next.DailyLimitUSD,
			MaxCostPerMonthUSD: next.MonthlyLimitUSD, MaxTokensPerHour: next.TokensPerHour}
	}
	for _, err := range []error{
		setUSD("max_cost_per_hour_usd", m.HourlyLimitUSD, &next.HourlyLimitUSD),
		setUSD("max_cost_per_day_usd", m.DailyLimitUSD, &next.DailyLimitUSD),
		setUSD("max_cost_per_month_usd", m.MonthlyLimitUSD, &next.MonthlyLimitUSD),
		setTokens("max_tokens_per_hour", m.TokensPerHour, &next.TokensPerHour),
	} {
		if err != nil {
			return err
		}
	}
	raw, _ := json.Marshal(next)
	if err := writeKVs(l.db, []kv{{key: key, val: raw}}); err != nil {
		return err
	}
	l.provLimits[m.Provider] = next
	l.checkAlerts(c, l.now().UTC(), "", "", m.Provider, "")
	return &ProviderLimitsSet{Provider: m.Provider, MaxCostPerHourUSD: next.HourlyLimitUSD, MaxCostPerDayUSD: next.DailyLimitUSD,
		MaxCostPerMonthUSD: next.MonthlyLimitUSD, MaxTokensPerHour: next.TokensPerHour}
}

func (l *ledger) userRow(id string, now time.Time) UserSpend {
	sp := l.spendOf(scope{kind: 'u', id: id}, now, true)
	row := UserSpend{UserID: id, Name: id, HourlyCostUSD: dollars(sp.hour), DailyCostUSD: dollars(sp.day), MonthlyCostUSD: dollars(sp.month)}
	if t := l.r.users[id]; t != nil {
		row.CallCount = t.Requests
	}
	if ul, ok := l.userLimits[id]; ok {
		row.Limits = &ul
	}
	return row
}

// userBudgets ranks the users with usage or a budget by today's spend,
// then this month's, then id; limit rows at most.
func (l *ledger) userBudgets(limit int) *UserBudgets {
	now := l.now().UTC()
	ids := map[string]struct{}{}
	for id := range l.userLimits {
		ids[id] = struct{}{}
	}
	for id := range l.r.users {
		ids[id] = struct{}{}
	}
	rows := make([]UserSpend, 0, len(ids))
	for id := range ids {
		rows = append(rows, l.userRow(id, now))
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.DailyCostUSD != b.DailyCostUSD {
			return a.DailyCostUSD > b.DailyCostUSD
		}
		if a.MonthlyCostUSD != b.MonthlyCostUSD {
			return a.MonthlyCostUSD > b.MonthlyCostUSD
		}
		return a.UserID < b.UserID
	})
	if len(rows) > limit {
		rows = rows[:limit]
	}
	return &UserBudgets{Users: rows, Total: len(rows), Limit: limit}
}

func (l *ledger) userBudget(id string) any {
	if err := CheckScopeID("user id", id); err != nil {
		return err
	}
	now := l.now().UTC()
	s := scope{kind: 'u', id: id}
	c, thr := l.capsOf(s)
	sp := l.spendOf(s, now, true)
	heldCost, _ := l.heldBy(s)
	ul, ok := l.userLimits[id]
	b := &UserBudget{UserID: id, Name: id, Hourly: window(sp.hour, c.hourly), Daily: window(sp.day, c.daily),
		Monthly: window(sp.month, c.monthly), AlertThreshold: thr, Enforced: true, Configured: ok,
		ReservedUSD: dollars(heldCost),
		Status:      worst(status(sp.day, c.daily, thr), status(sp.month, c.monthly, thr), status(sp.hour, c.hourly, thr))}
	if ok {
		b.Limits = &ul
	}
	// LibreFang: a window at or past the threshold share of its limit.
	for _, w := range []Window{b.Hourly, b.Daily, b.Monthly} {
		if w.Limit > 0 && w.Pct >= thr {
			b.AlertBreach = true
		}
	}
	if t := l.r.users[id]; t != nil {
		b.CallCount = t.Requests
	}
	return b
}

func (l *ledger) setUserBudget(c actor.Context, m *SetUserBudget) any {
	if err := CheckScopeID("user id", m.User); err != nil {
		return err
	}
	key := []byte(pUserLimit + m.User)
	if m.Limits == nil {
		if _, ok := l.userLimits[m.User]; ok {
			if err := writeKVs(l.db, []kv{{key: key, del: true}}); err != nil {
				return err
			}
			delete(l.userLimits, m.User)
		}
		return &SetUserBudget{User: m.User}
	}
	ul := *m.Limits
	for _, f := range []struct {
		name string
		v    float64
	}{{"max_hourly_usd", ul.MaxHourlyUSD}, {"max_daily_usd", ul.MaxDailyUSD}, {"max_monthly_usd", ul.MaxMonthlyUSD}} {
		if err := CheckUSD(f.name, f.v); err != nil {
			return err
		}
	}
	if err := checkThreshold(ul.AlertThreshold); err != nil {
		return err
	}
	raw, _ := json.Marshal(ul)
	if err := writeKVs(l.db, []kv{{key: key, val: raw}}); err != nil {
		return err
	}
	l.userLimits[m.User] = ul
	l.checkAlerts(c, l.now().UTC(), "", "", "", m.User)
	return &ul
}
