package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
)

// DefaultAlertThreshold is the share of a limit at which budget_warning fires.
const DefaultAlertThreshold = 0.8

// MaxLimitUSD bounds a limit so that it fits in nano-USD in an int64.
const MaxLimitUSD = 1e9

// MaxHourlyTokens bounds hourly_token_limit.
const MaxHourlyTokens = int64(1e15)

// Limits are the global budget. 0 means unlimited.
type Limits struct {
	DailyLimitUSD    float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  float64 `json:"monthly_limit_usd"`
	AlertThreshold   float64 `json:"alert_threshold"`
	HourlyTokenLimit int64   `json:"hourly_token_limit"`
}

// AgentLimits are one agent's budget. 0 means unlimited.
type AgentLimits struct {
	DailyLimitUSD   float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD float64 `json:"monthly_limit_usd"`
}

// Status values.
const (
	StatusOK       = "ok"
	StatusWarning  = "warning"
	StatusExceeded = "exceeded"
)

func nanos(usd float64) int64        { return int64(math.Round(usd * 1e9)) }
func dollars(n int64) float64        { return float64(n) / 1e9 }
func hourWindow(t time.Time) string  { return t.UTC().Format("2006-01-02T15") }
func dayWindow(t time.Time) string   { return t.UTC().Format("2006-01-02") }
func monthWindow(t time.Time) string { return t.UTC().Format("2006-01") }

// windowOf names the window a limit is counted in at t. Formatting times
// is slow enough to matter on the reservation path, so it is done only for
// a violation or an alert.
func windowOf(limit string, t time.Time) string {
	switch limit {
	case "daily":
		return dayWindow(t)
	case "monthly":
		return monthWindow(t)
	}
	return hourWindow(t)
}

// CheckUSD validates a limit in USD.
func CheckUSD(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > MaxLimitUSD {
		return kernel.Invalid("%s must be a number from 0 (unlimited) to %.0f, got %v", field, MaxLimitUSD, v)
	}
	return nil
}

// violation is a limit a reservation would pass, or spend has reached.
type violation struct {
	scope     string // "global" or "agent"
	agentID   string
	agentName string
	limit     string // "daily", "monthly", "hourly_tokens"
	window    string
	spent     int64 // nano-USD, or tokens for hourly_tokens
	held      int64 // reserved by calls in flight
	max       int64
}

func (v *violation) tokens() bool { return v.limit == "hourly_tokens" }

func (v *violation) amount(n int64) string {
	if v.tokens() {
		return fmt.Sprintf("%d tokens", n)
	}
	return fmt.Sprintf("%.6f USD", dollars(n))
}

func (v *violation) who() string {
	if v.scope == "agent" {
		return fmt.Sprintf("agent %s's", orID(v.agentName, v.agentID))
	}
	return "the global"
}

func orID(name, id string) string {
	if name != "" {
		return name
	}
	return id
}

func (v *violation) message(m *Reserve) string {
	want := m.CostNanos
	if v.tokens() {
		want = m.Tokens
	}
	return fmt.Sprintf("budget exceeded: %s %s limit is %s; spent %s, held by calls in progress %s, and this call may use up to %s",
		v.who(), strings.ReplaceAll(v.limit, "_", " "), v.amount(v.max), v.amount(v.spent), v.amount(v.held), v.amount(want))
}

// check returns the first limit m's worst case would pass, or nil.
func (l *ledger) check(now time.Time, m *Reserve) (violation, bool) {
	today := dayOf(now)
	al := l.agentLimits[m.AgentID]
	held := l.agentRes[m.AgentID]
	// A fixed array, filled in place: this runs on every reservation and
	// must not allocate.
	cands := [5]struct {
		v    violation
		want int64
	}{
		{violation{scope: "agent", limit: "daily", max: nanos(al.DailyLimitUSD),
			spent: l.r.agentRange(m.AgentID, today, today), held: held}, m.CostNanos},
		{violation{scope: "agent", limit: "monthly", max: nanos(al.MonthlyLimitUSD),
			spent: l.r.agentMonthCost(m.AgentID, now), held: held}, m.CostNanos},
		{violation{scope: "global", limit: "daily", max: nanos(l.limits.DailyLimitUSD),
			spent: l.r.costRange(today, today), held: l.reservedCost}, m.CostNanos},
		{violation{scope: "global", limit: "monthly", max: nanos(l.limits.MonthlyLimitUSD),
			spent: l.r.monthCostNow(now), held: l.reservedCost}, m.CostNanos},
	}
	if l.limits.HourlyTokenLimit > 0 {
		used, _ := l.r.hourTokens(now)
		cands[4].v = violation{scope: "global", limit: "hourly_tokens", max: l.limits.HourlyTokenLimit,
			spent: used, held: l.reservedTok}
		cands[4].want = m.Tokens
	}
	for i := range cands {
		c := &cands[i]
		if c.v.max <= 0 {
			continue
		}
		// Admit only if everything already spent, everything held by calls
		// in flight and this call's worst case together stay within the
		// limit: then no interleaving of settlements can pass it.
		if c.v.spent+c.v.held+c.want > c.v.max {
			c.v.agentID, c.v.agentName = m.AgentID, m.AgentName
			c.v.window = windowOf(c.v.limit, now)
			return c.v, true
		}
	}
	return violation{}, false
}

// checkAlerts raises budget_warning / budget_exceeded for limits that
// settled spend has crossed.
func (l *ledger) checkAlerts(c actor.Context, now time.Time, agentID, agentName string) {
	thr := l.limits.AlertThreshold
	today := dayOf(now)
	// A fixed array: this runs on every settlement and must not allocate.
	var vs [5]violation
	n := 0
	add := func(v violation) {
		if v.max > 0 {
			vs[n] = v
			n++
		}
	}
	if l.limits.DailyLimitUSD > 0 {
		add(violation{scope: "global", limit: "daily", max: nanos(l.limits.DailyLimitUSD), spent: l.r.costRange(today, today)})
	}
	if l.limits.MonthlyLimitUSD > 0 {
		add(violation{scope: "global", limit: "monthly", max: nanos(l.limits.MonthlyLimitUSD), spent: l.r.monthCostNow(now)})
	}
	if l.limits.HourlyTokenLimit > 0 {
		used, _ := l.r.hourTokens(now)
		add(violation{scope: "global", limit: "hourly_tokens", max: l.limits.HourlyTokenLimit, spent: used})
	}
	if al, ok := l.agentLimits[agentID]; ok && agentID != "" {
		if al.DailyLimitUSD > 0 {
			add(violation{scope: "agent", agentID: agentID, agentName: agentName, limit: "daily",
				max: nanos(al.DailyLimitUSD), spent: l.r.agentRange(agentID, today, today)})
		}
		if al.MonthlyLimitUSD > 0 {
			add(violation{scope: "agent", agentID: agentID, agentName: agentName, limit: "monthly",
				max: nanos(al.MonthlyLimitUSD), spent: l.r.agentMonthCost(agentID, now)})
		}
	}
	for i := 0; i < n; i++ {
		v := &vs[i]
		switch status(v.spent, v.max, thr) {
		case StatusExceeded:
			v.window = windowOf(v.limit, now)
			l.raise(c, "budget_exceeded", v, now, false)
		case StatusWarning:
			v.window = windowOf(v.limit, now)
			l.raise(c, "budget_warning", v, now, false)
		}
	}
}

func status(spent, limit int64, threshold float64) string {
	switch {
	case limit <= 0:
		return StatusOK
	case spent >= limit:
		return StatusExceeded
	case threshold > 0 && float64(spent) >= threshold*float64(limit):
		return StatusWarning
	}
	return StatusOK
}

func worst(statuses ...string) string {
	out := StatusOK
	for _, s := range statuses {
		if s == StatusExceeded {
			return s
		}
		if s == StatusWarning {
			out = s
		}
	}
	return out
}

// raise records, publishes and audits an alert, once per limit and window.
func (l *ledger) raise(c actor.Context, kind string, v *violation, now time.Time, refused bool) {
	scope := v.scope
	if scope == "agent" {
		scope = "agent:" + v.agentID
	}
	key := kind + "|" + scope + "|" + v.limit + "|" + v.window
	if l.alerts[key] {
		return
	}
	l.alerts[key] = true
	l.dirty[dirtyKey{kind: 'x', s1: pAlert + key}] = []byte(`"` + now.Format(time.RFC3339Nano) + `"`)
	alert := BudgetAlert{Scope: v.scope, AgentID: v.agentID, AgentName: v.agentName, Limit: v.limit, Window: v.window,
		Spent: dollars(v.spent), Max: dollars(v.max), Refused: refused, At: now}
	if v.tokens() {
		alert.Spent, alert.Max = float64(v.spent), float64(v.max)
	}
	var details string
	if kind == "budget_warning" {
		c.ActorSystem().EventStream.Publish(&BudgetWarning{alert})
		details = fmt.Sprintf("%s %s spend %s reached %.0f%% of its limit %s (window %s)",
			v.who(), strings.ReplaceAll(v.limit, "_", " "), v.amount(v.spent), l.limits.AlertThreshold*100, v.amount(v.max), v.window)
	} else {
		c.ActorSystem().EventStream.Publish(&BudgetExceeded{alert})
		details = fmt.Sprintf("%s %s limit %s reached: spent %s (window %s)",
			v.who(), strings.ReplaceAll(v.limit, "_", " "), v.amount(v.max), v.amount(v.spent), v.window)
		if refused {
			details = fmt.Sprintf("%s %s limit %s would be passed: spent %s, a call was refused (window %s)",
				v.who(), strings.ReplaceAll(v.limit, "_", " "), v.amount(v.max), v.amount(v.spent), v.window)
		}
	}
	if l.audit != nil {
		auditLog, logger, agentID := l.audit, l.log, v.agentID
		outcome := "warning"
		if kind == "budget_exceeded" {
			outcome = "exceeded"
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
			defer cancel()
			if _, err := auditLog.Append(ctx, audit.Event{EventType: kind, AgentID: agentID, Details: details,
				Outcome: outcome, Actor: "usage_ledger"}); err != nil {
				logger.Error().Err(err).Str("event", kind).Msg("budget alert could not be audited")
			}
		}()
	}
	l.flush()
}

// alertCurrent reports whether an alert mark's window is still open.
func (l *ledger) alertCurrent(key string, now time.Time) bool {
	i := strings.LastIndexByte(key, '|')
	if i < 0 {
		return false
	}
	w := key[i+1:]
	return w == dayWindow(now) || w == monthWindow(now) || w == hourWindow(now)
}

func (l *ledger) budgetStatus() *BudgetStatus {
	now := l.now().UTC()
	today := dayOf(now)
	spentDay, spentMonth := l.r.costRange(today, today), l.r.monthCostNow(now)
	used, _ := l.r.hourTokens(now)
	lim := l.limits
	return &BudgetStatus{
		DailyLimitUSD: lim.DailyLimitUSD, MonthlyLimitUSD: lim.MonthlyLimitUSD,
		TodaySpentUSD: dollars(spentDay), MonthSpentUSD: dollars(spentMonth),
		Status: worst(status(spentDay, nanos(lim.DailyLimitUSD), lim.AlertThreshold),
			status(spentMonth, nanos(lim.MonthlyLimitUSD), lim.AlertThreshold),
			status(used, lim.HourlyTokenLimit, lim.AlertThreshold)),
		HourlyTokenLimit: lim.HourlyTokenLimit, HourlyTokensUsed: used, AlertThreshold: lim.AlertThreshold,
		ReservedUSD: dollars(l.reservedCost), Reservations: len(l.reservations),
	}
}

func (l *ledger) setBudget(c actor.Context, m *SetBudget) any {
	next := l.limits
	if m.DailyLimitUSD != nil {
		if err := CheckUSD("daily_limit_usd", *m.DailyLimitUSD); err != nil {
			return err
		}
		next.DailyLimitUSD = *m.DailyLimitUSD
	}
	if m.MonthlyLimitUSD != nil {
		if err := CheckUSD("monthly_limit_usd", *m.MonthlyLimitUSD); err != nil {
			return err
		}
		next.MonthlyLimitUSD = *m.MonthlyLimitUSD
	}
	if m.AlertThreshold != nil {
		if t := *m.AlertThreshold; math.IsNaN(t) || t < 0 || t > 1 {
			return kernel.Invalid("alert_threshold must be a number from 0 (no warnings) to 1, got %v", t)
		}
		next.AlertThreshold = *m.AlertThreshold
	}
	if m.HourlyTokenLimit != nil {
		if t := *m.HourlyTokenLimit; t < 0 || t > MaxHourlyTokens {
			return kernel.Invalid("hourly_token_limit must be an integer from 0 (unlimited) to %d, got %d", MaxHourlyTokens, t)
		}
		next.HourlyTokenLimit = *m.HourlyTokenLimit
	}
	raw, _ := json.Marshal(next)
	if err := writeKVs(l.db, []kv{{key: []byte(kBudget), val: raw}}); err != nil {
		return err
	}
	l.limits = next
	// New limits may put today's spend over a threshold already.
	l.checkAlerts(c, l.now().UTC(), "", "")
	return l.budgetStatus()
}

func (l *ledger) agentBudget(id, name string) *AgentBudget {
	now := l.now().UTC()
	today := dayOf(now)
	al := l.agentLimits[id]
	spentDay, spentMonth := l.r.agentRange(id, today, today), l.r.agentMonthCost(id, now)
	b := &AgentBudget{AgentID: id, AgentName: name, DailyLimitUSD: al.DailyLimitUSD, MonthlyLimitUSD: al.MonthlyLimitUSD,
		TodaySpentUSD: dollars(spentDay), MonthSpentUSD: dollars(spentMonth), ReservedUSD: dollars(l.agentRes[id]),
		AlertThreshold: l.limits.AlertThreshold,
		Status: worst(status(spentDay, nanos(al.DailyLimitUSD), l.limits.AlertThreshold),
			status(spentMonth, nanos(al.MonthlyLimitUSD), l.limits.AlertThreshold))}
	if t := l.r.agents[id]; t != nil {
		b.TotalCostUSD = dollars(t.CostNanos)
	}
	return b
}

func (l *ledger) setAgentBudget(c actor.Context, m *SetAgentBudget) any {
	next := l.agentLimits[m.AgentID]
	if m.DailyLimitUSD != nil {
		if err := CheckUSD("daily_limit_usd", *m.DailyLimitUSD); err != nil {
			return err
		}
		next.DailyLimitUSD = *m.DailyLimitUSD
	}
	if m.MonthlyLimitUSD != nil {
		if err := CheckUSD("monthly_limit_usd", *m.MonthlyLimitUSD); err != nil {
			return err
		}
		next.MonthlyLimitUSD = *m.MonthlyLimitUSD
	}
	raw, _ := json.Marshal(next)
	if err := writeKVs(l.db, []kv{{key: []byte(pAgentLimit + m.AgentID), val: raw}}); err != nil {
		return err
	}
	l.agentLimits[m.AgentID] = next
	l.checkAlerts(c, l.now().UTC(), m.AgentID, m.AgentName)
	return l.agentBudget(m.AgentID, m.AgentName)
}

func (l *ledger) forgetAgent(id string) any {
	if _, ok := l.agentLimits[id]; !ok {
		return &ForgetAgent{AgentID: id}
	}
	if err := writeKVs(l.db, []kv{{key: []byte(pAgentLimit + id), del: true}}); err != nil {
		return err
	}
	delete(l.agentLimits, id)
	return &ForgetAgent{AgentID: id}
}
