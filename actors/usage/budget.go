package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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

// Limits are the global budget. 0 means unlimited. Fields added after
// the first release are omitted when unset, so a budget stored before them
// reads and writes the same.
type Limits struct {
	DailyLimitUSD    float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  float64 `json:"monthly_limit_usd"`
	AlertThreshold   float64 `json:"alert_threshold"`
	HourlyTokenLimit int64   `json:"hourly_token_limit"`
	HourlyLimitUSD   float64 `json:"hourly_limit_usd,omitempty"`
	// DefaultAgentTokensPerHour applies to every agent without its own.
	DefaultAgentTokensPerHour int64 `json:"default_max_llm_tokens_per_hour,omitempty"`
}

// AgentLimits are one agent's budget. 0 means unlimited.
type AgentLimits struct {
	DailyLimitUSD   float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD float64 `json:"monthly_limit_usd"`
	HourlyLimitUSD  float64 `json:"hourly_limit_usd,omitempty"`
	// TokensPerHour is the agent's own hourly token limit (0 unlimited);
	// nil takes the global default.
	TokensPerHour *int64 `json:"max_llm_tokens_per_hour,omitempty"`
}

// ProviderLimits are one LLM provider's budget, over every agent's calls
// to it. 0 means unlimited.
type ProviderLimits struct {
	HourlyLimitUSD  float64 `json:"hourly_limit_usd"`
	DailyLimitUSD   float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD float64 `json:"monthly_limit_usd"`
	TokensPerHour   int64   `json:"max_tokens_per_hour"`
}

// UserLimits are one user's budget (LibreFang's UserBudgetConfig), over
// the calls made on the user's behalf. 0 means unlimited; AlertThreshold
// is the user's own warning share.
type UserLimits struct {
	MaxHourlyUSD   float64 `json:"max_hourly_usd"`
	MaxDailyUSD    float64 `json:"max_daily_usd"`
	MaxMonthlyUSD  float64 `json:"max_monthly_usd"`
	AlertThreshold float64 `json:"alert_threshold"`
}

// MaxScopeID bounds a provider or user id.
const MaxScopeID = 128

// CheckScopeID validates a provider or user id (what names it in a path
// and in the store): 1 to MaxScopeID bytes of UTF-8 with no control
// characters.
func CheckScopeID(what, id string) error {
	if id == "" || len(id) > MaxScopeID || !utf8.ValidString(id) {
		return kernel.Invalid("%s must be 1 to %d bytes of UTF-8", what, MaxScopeID)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return kernel.Invalid("%s must not contain control characters", what)
		}
	}
	return nil
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
	scope     string // "global", "agent", "provider" or "user"
	agentID   string
	agentName string
	id        string // the provider or user
	limit     string // "hourly", "daily", "monthly", "hourly_tokens"
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
	switch v.scope {
	case "agent":
		return fmt.Sprintf("agent %s's", orID(v.agentName, v.agentID))
	case "provider", "user":
		return fmt.Sprintf("%s %s's", v.scope, v.id)
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

// scope is one set of limits a call counts against: kind 'a' its agent,
// 'g' global, 'p' its provider, 'u' its user (the kinds of rollups.hourUse).
type scope struct {
	kind byte
	id   string
}

var scopeNames = map[byte]string{'a': "agent", 'g': "global", 'p': "provider", 'u': "user"}

// caps are a scope's limits in nano-USD (hourly is the rolling 60
// minutes) and tokens per rolling hour; 0 means none.
type caps struct{ hourly, daily, monthly, tokens int64 }

// capsOf returns s's limits and, for alerts, its warning threshold.
func (l *ledger) capsOf(s scope) (caps, float64) {
	thr := l.limits.AlertThreshold
	switch s.kind {
	case 'a':
		al := l.agentLimitsOf(s.id)
		tok := l.limits.DefaultAgentTokensPerHour
		if al.TokensPerHour != nil {
			tok = *al.TokensPerHour
		}
		return caps{nanos(al.HourlyLimitUSD), nanos(al.DailyLimitUSD), nanos(al.MonthlyLimitUSD), tok}, thr
	case 'p':
		pl := l.provLimits[s.id]
		return caps{nanos(pl.HourlyLimitUSD), nanos(pl.DailyLimitUSD), nanos(pl.MonthlyLimitUSD), pl.TokensPerHour}, thr
	case 'u':
		ul, ok := l.userLimits[s.id]
		if ok {
			thr = ul.AlertThreshold
		}
		return caps{nanos(ul.MaxHourlyUSD), nanos(ul.MaxDailyUSD), nanos(ul.MaxMonthlyUSD), 0}, thr
	}
	g := l.limits
	return caps{nanos(g.HourlyLimitUSD), nanos(g.DailyLimitUSD), nanos(g.MonthlyLimitUSD), g.HourlyTokenLimit}, thr
}

// agentTokenLimit is the hourly token limit in force for an agent.
func (l *ledger) agentTokenLimit(id string) int64 {
	if t := l.agentLimitsOf(id).TokensPerHour; t != nil {
		return *t
	}
	return l.limits.DefaultAgentTokensPerHour
}

// heldBy is what calls in flight hold against s.
func (l *ledger) heldBy(s scope) (cost, tokens int64) {
	if v, ok := l.view[s]; ok {
		return v.HeldCost, v.HeldTokens
	}
	switch s.kind {
	case 'a':
		return l.agentRes[s.id], l.agentResTok[s.id]
	case 'p':
		h := l.provRes[s.id]
		return h.cost, h.tokens
	case 'u':
		return l.userRes[s.id].cost, 0
	}
	return l.reservedCost, l.reservedTok
}

// spend is what s has spent in each window at now; hour and tokens are
// summed only when asked (they walk the rolling hour's minutes).
type spend struct{ hour, day, month, tokens int64 }

func (l *ledger) spendOf(s scope, now time.Time, hour bool) spend {
	if v, ok := l.view[s]; ok {
		return spend{hour: v.Hour, day: v.Day, month: v.Month, tokens: v.Tokens}
	}
	var sp spend
	if hour {
		sp.hour, sp.tokens = l.r.hourUse(s.kind, s.id, now)
	}
	if s.kind == 'g' {
		sp.day = l.r.costRange(dayOf(now), dayOf(now))
	} else {
		sp.day = l.r.dayCost(s.kind, s.id, dayOf(now))
	}
	sp.month = l.r.monthCostOf(s.kind, s.id, now)
	return sp
}

// scopesOf lists the scopes a call counts against, in the order their
// limits are checked.
func scopesOf(agentID, provider, user string) [4]scope {
	return [4]scope{{'a', agentID}, {'g', ""}, {'p', provider}, {'u', user}}
}

// check returns the first limit m's worst case would pass, or nil.
func (l *ledger) check(now time.Time, m *Reserve) (violation, bool) {
	// Scopes and limits are fixed arrays filled in place: this runs on
	// every reservation and must not allocate.
	for _, s := range scopesOf(m.AgentID, m.Provider, m.User) {
		if s.kind == 'u' && s.id == "" {
			continue
		}
		c, _ := l.capsOf(s)
		if c == (caps{}) {
			continue
		}
		heldCost, heldTok := l.heldBy(s)
		sp := l.spendOf(s, now, c.hourly > 0 || c.tokens > 0)
		lims := [4]struct {
			name       string
			max, spent int64
			held, want int64
		}{
			{"daily", c.daily, sp.day, heldCost, m.CostNanos},
			{"monthly", c.monthly, sp.month, heldCost, m.CostNanos},
			{"hourly", c.hourly, sp.hour, heldCost, m.CostNanos},
			{"hourly_tokens", c.tokens, sp.tokens, heldTok, m.Tokens},
		}
		for _, x := range lims {
			// Admit only if everything already spent, everything held by
			// calls in flight and this call's worst case together stay
			// within the limit: then no interleaving of settlements can
			// pass it.
			if x.max <= 0 || x.spent+x.held+x.want <= x.max {
				continue
			}
			v := violation{scope: scopeNames[s.kind], limit: x.name, max: x.max, spent: x.spent, held: x.held,
				agentID: m.AgentID, agentName: m.AgentName, window: windowOf(x.name, now)}
			if s.kind == 'p' || s.kind == 'u' {
				v.id = s.id
			}
			return v, true
		}
	}
	return violation{}, false
}

// checkAlerts raises budget_warning / budget_exceeded for limits of the
// scopes given that settled spend has crossed (global always; agent,
// provider and user when named).
func (l *ledger) checkAlerts(c actor.Context, now time.Time, agentID, agentName, provider, user string) {
	for _, s := range scopesOf(agentID, provider, user) {
		if s.kind != 'g' && s.id == "" {
			continue
		}
		lim, thr := l.capsOf(s)
		if lim == (caps{}) {
			continue
		}
		sp := l.spendOf(s, now, lim.hourly > 0 || lim.tokens > 0)
		for _, x := range [4]struct {
			name       string
			max, spent int64
		}{{"daily", lim.daily, sp.day}, {"monthly", lim.monthly, sp.month}, {"hourly", lim.hourly, sp.hour}, {"hourly_tokens", lim.tokens, sp.tokens}} {
			kind := ""
			switch status(x.spent, x.max, thr) {
			case StatusExceeded:
				kind = "budget_exceeded"
			case StatusWarning:
				kind = "budget_warning"
			default:
				continue
			}
			v := violation{scope: scopeNames[s.kind], limit: x.name, max: x.max, spent: x.spent, window: windowOf(x.name, now)}
			switch s.kind {
			case 'a':
				v.agentID, v.agentName = agentID, agentName
			case 'p', 'u':
				v.id = s.id
			}
			l.raise(c, kind, &v, now, false, thr)
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
func (l *ledger) raise(c actor.Context, kind string, v *violation, now time.Time, refused bool, threshold float64) {
	scope := v.scope
	switch scope {
	case "agent":
		scope = "agent:" + v.agentID
	case "provider", "user":
		scope += ":" + v.id
	}
	key := kind + "|" + scope + "|" + v.limit + "|" + v.window
	if l.alerts[key] {
		return
	}
	l.alerts[key] = true
	l.dirty[dirtyKey{kind: 'x', s1: pAlert + key}] = []byte(`"` + now.Format(time.RFC3339Nano) + `"`)
	alert := BudgetAlert{Scope: v.scope, AgentID: v.agentID, AgentName: v.agentName, ScopeID: v.id, Limit: v.limit, Window: v.window,
		Spent: dollars(v.spent), Max: dollars(v.max), Refused: refused, At: now}
	if v.tokens() {
		alert.Spent, alert.Max = float64(v.spent), float64(v.max)
	}
	var details string
	if kind == "budget_warning" {
		c.ActorSystem().EventStream.Publish(&BudgetWarning{alert})
		details = fmt.Sprintf("%s %s spend %s reached %.0f%% of its limit %s (window %s)",
			v.who(), strings.ReplaceAll(v.limit, "_", " "), v.amount(v.spent), threshold*100, v.amount(v.max), v.window)
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

// pct is spend as a fraction of limit, 0 without a limit (LibreFang's).
func pct(spent, limit int64) float64 {
	if limit <= 0 {
		return 0
	}
	return float64(spent) / float64(limit)
}

func window(spent, limit int64) Window {
	return Window{Spend: dollars(spent), Limit: dollars(limit), Pct: pct(spent, limit)}
}

func (l *ledger) budgetStatus() *BudgetStatus {
	now := l.now().UTC()
	lim := l.limits
	c, thr := l.capsOf(scope{kind: 'g'})
	sp := l.spendOf(scope{kind: 'g'}, now, true)
	held, _ := l.heldBy(scope{kind: 'g'})
	holds := len(l.reservations)
	if v, ok := l.view[scope{kind: 'g'}]; ok {
		holds = v.Holds
	}
	return &BudgetStatus{
		DailyLimitUSD: lim.DailyLimitUSD, MonthlyLimitUSD: lim.MonthlyLimitUSD,
		TodaySpentUSD: dollars(sp.day), MonthSpentUSD: dollars(sp.month),
		Status: worst(status(sp.day, c.daily, thr), status(sp.month, c.monthly, thr),
			status(sp.hour, c.hourly, thr), status(sp.tokens, c.tokens, thr)),
		HourlyLimitUSD: lim.HourlyLimitUSD, HourSpentUSD: dollars(sp.hour),
		HourlyTokenLimit: lim.HourlyTokenLimit, HourlyTokensUsed: sp.tokens, AlertThreshold: thr,
		ReservedUSD: dollars(held), Reservations: holds,

		HourlySpend: dollars(sp.hour), HourlyLimit: lim.HourlyLimitUSD, HourlyPct: pct(sp.hour, c.hourly),
		DailySpend: dollars(sp.day), DailyLimit: lim.DailyLimitUSD, DailyPct: pct(sp.day, c.daily),
		MonthlySpend: dollars(sp.month), MonthlyLimit: lim.MonthlyLimitUSD, MonthlyPct: pct(sp.month, c.monthly),
		DefaultMaxLLMTokensPerHour: lim.DefaultAgentTokensPerHour,
	}
}

// setUSD validates and applies one optional USD limit.
func setUSD(field string, v *float64, dst *float64) error {
	if v == nil {
		return nil
	}
	if err := CheckUSD(field, *v); err != nil {
		return err
	}
	*dst = *v
	return nil
}

// setTokens validates and applies one optional token limit.
func setTokens(field string, v *int64, dst *int64) error {
	if v == nil {
		return nil
	}
	if t := *v; t < 0 || t > MaxHourlyTokens {
		return kernel.Invalid("%s must be an integer from 0 (unlimited) to %d, got %d", field, MaxHourlyTokens, t)
	}
	*dst = *v
	return nil
}

// checkThreshold validates an alert threshold.
func checkThreshold(t float64) error {
	if math.IsNaN(t) || t < 0 || t > 1 {
		return kernel.Invalid("alert_threshold must be a number from 0 (no warnings) to 1, got %v", t)
	}
	return nil
}

func (l *ledger) setBudget(c actor.Context, m *SetBudget) any {
	next := l.limits
	if m.AlertThreshold != nil {
		if err := checkThreshold(*m.AlertThreshold); err != nil {
			return err
		}
		next.AlertThreshold = *m.AlertThreshold
	}
	for _, err := range []error{
		setUSD("hourly_limit_usd", m.HourlyLimitUSD, &next.HourlyLimitUSD),
		setUSD("daily_limit_usd", m.DailyLimitUSD, &next.DailyLimitUSD),
		setUSD("monthly_limit_usd", m.MonthlyLimitUSD, &next.MonthlyLimitUSD),
		setTokens("hourly_token_limit", m.HourlyTokenLimit, &next.HourlyTokenLimit),
		setTokens("default_max_llm_tokens_per_hour", m.DefaultAgentTokensPerHour, &next.DefaultAgentTokensPerHour),
	} {
		if err != nil {
			return err
		}
	}
	raw, _ := json.Marshal(next)
	if err := writeKVs(l.db, []kv{{key: []byte(kBudget), val: raw}}); err != nil {
		return err
	}
	l.limits = next
	// New limits may put today's spend over a threshold already.
	l.checkAlerts(c, l.now().UTC(), "", "", "", "")
	return l.budgetStatus()
}

func (l *ledger) agentBudget(id, name string) *AgentBudget {
	now := l.now().UTC()
	al := l.agentLimitsOf(id)
	s := scope{kind: 'a', id: id}
	c, thr := l.capsOf(s)
	sp := l.spendOf(s, now, true)
	heldCost, _ := l.heldBy(s)
	b := &AgentBudget{AgentID: id, AgentName: name, DailyLimitUSD: al.DailyLimitUSD, MonthlyLimitUSD: al.MonthlyLimitUSD,
		TodaySpentUSD: dollars(sp.day), MonthSpentUSD: dollars(sp.month), ReservedUSD: dollars(heldCost),
		AlertThreshold: thr,
		Status: worst(status(sp.day, c.daily, thr), status(sp.month, c.monthly, thr),
			status(sp.hour, c.hourly, thr), status(sp.tokens, c.tokens, thr)),
		HourlyLimitUSD: al.HourlyLimitUSD, HourSpentUSD: dollars(sp.hour),
		Hourly: window(sp.hour, c.hourly), Daily: window(sp.day, c.daily), Monthly: window(sp.month, c.monthly),
		Tokens:            TokenWindow{Used: sp.tokens, Limit: c.tokens, Pct: pct(sp.tokens, c.tokens)},
		MaxCostPerHourUSD: al.HourlyLimitUSD, MaxCostPerDayUSD: al.DailyLimitUSD, MaxCostPerMonthUSD: al.MonthlyLimitUSD,
		MaxLLMTokensPerHour: al.TokensPerHour,
	}
	if t := l.r.agents[id]; t != nil {
		b.TotalCostUSD = dollars(t.CostNanos)
	}
	return b
}

func (l *ledger) setAgentBudget(c actor.Context, m *SetAgentBudget) any {
	next := l.agentLimitsOf(m.AgentID)
	for _, err := range []error{
		setUSD("max_cost_per_hour_usd", m.HourlyLimitUSD, &next.HourlyLimitUSD),
		setUSD("daily_limit_usd", m.DailyLimitUSD, &next.DailyLimitUSD),
		setUSD("monthly_limit_usd", m.MonthlyLimitUSD, &next.MonthlyLimitUSD),
	} {
		if err != nil {
			return err
		}
	}
	if m.TokensPerHour != nil {
		var t int64
		if err := setTokens("max_llm_tokens_per_hour", m.TokensPerHour, &t); err != nil {
			return err
		}
		next.TokensPerHour = &t
	}
	raw, _ := json.Marshal(next)
	if err := writeKVs(l.db, []kv{{key: []byte(pAgentLimit + m.AgentID), val: raw}}); err != nil {
		return err
	}
	l.agentLimits[m.AgentID] = next
	l.checkAlerts(c, l.now().UTC(), m.AgentID, m.AgentName, "", "")
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
