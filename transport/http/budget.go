package http

import (
	"fmt"
	"sort"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/usage"
)

// getBudget serves GET /api/budget.
func (s *Server) getBudget(ctx *fasthttp.RequestCtx) error {
	st, err := s.deps.Meter.Budget(s.reqCtx(ctx))
	return reply(ctx, st, err)
}

// budgetBody is PUT /api/budget: the seed page's names, fangd's own and
// LibreFang's (max_*_usd, and the names its GET answers with, *_limit).
// null or absent leaves a limit as it is.
type budgetBody struct {
	DailyLimitUSD    *float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  *float64 `json:"monthly_limit_usd"`
	HourlyLimitUSD   *float64 `json:"hourly_limit_usd"`
	AlertThreshold   *float64 `json:"alert_threshold"`
	HourlyTokenLimit *int64   `json:"hourly_token_limit"`

	MaxHourlyUSD               *float64 `json:"max_hourly_usd"`
	MaxDailyUSD                *float64 `json:"max_daily_usd"`
	MaxMonthlyUSD              *float64 `json:"max_monthly_usd"`
	HourlyLimit                *float64 `json:"hourly_limit"`
	DailyLimit                 *float64 `json:"daily_limit"`
	MonthlyLimit               *float64 `json:"monthly_limit"`
	DefaultMaxLLMTokensPerHour *int64   `json:"default_max_llm_tokens_per_hour"`
}

// alias is one limit's value under one of its names.
type alias struct {
	name string
	v    *float64
}

// oneOf merges the names a limit goes by: the value given, nil when none
// is, a 400 when two names give different values (which one the caller
// meant cannot be known).
func oneOf(names ...alias) (*float64, error) {
	var got *alias
	for i := range names {
		a := &names[i]
		if a.v == nil {
			continue
		}
		if got != nil && *got.v != *a.v {
			return nil, badRequest("invalid_input", fmt.Sprintf("%s and %s name the same limit with different values", got.name, a.name))
		}
		got = a
	}
	if got == nil {
		return nil, nil
	}
	return got.v, nil
}

// limitLog describes the limits a request set, for its audit entry.
type limitLog []string

func (l *limitLog) usd(name string, v *float64) {
	if v != nil {
		*l = append(*l, fmt.Sprintf("%s=%g", name, *v))
	}
}

func (l *limitLog) tokens(name string, v *int64) {
	if v != nil {
		*l = append(*l, fmt.Sprintf("%s=%d", name, *v))
	}
}

func (l limitLog) String() string { return strings.Join(l, " ") }

// putBudget serves PUT /api/budget: a partial update; 0 means unlimited.
func (s *Server) putBudget(ctx *fasthttp.RequestCtx) error {
	var b budgetBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	var set usage.SetBudget
	var err error
	if set.HourlyLimitUSD, err = oneOf(alias{"hourly_limit_usd", b.HourlyLimitUSD}, alias{"max_hourly_usd", b.MaxHourlyUSD}, alias{"hourly_limit", b.HourlyLimit}); err != nil {
		return err
	}
	if set.DailyLimitUSD, err = oneOf(alias{"daily_limit_usd", b.DailyLimitUSD}, alias{"max_daily_usd", b.MaxDailyUSD}, alias{"daily_limit", b.DailyLimit}); err != nil {
		return err
	}
	if set.MonthlyLimitUSD, err = oneOf(alias{"monthly_limit_usd", b.MonthlyLimitUSD}, alias{"max_monthly_usd", b.MaxMonthlyUSD}, alias{"monthly_limit", b.MonthlyLimit}); err != nil {
		return err
	}
	set.AlertThreshold, set.HourlyTokenLimit, set.DefaultAgentTokensPerHour = b.AlertThreshold, b.HourlyTokenLimit, b.DefaultMaxLLMTokensPerHour
	if set == (usage.SetBudget{}) {
		return badRequest("invalid_input", "provide at least one of daily_limit_usd, monthly_limit_usd, alert_threshold, hourly_token_limit, "+
			"max_hourly_usd, max_daily_usd, max_monthly_usd, default_max_llm_tokens_per_hour")
	}
	st, err := s.deps.Meter.SetBudget(s.reqCtx(ctx), set)
	if err != nil {
		return err
	}
	var l limitLog
	l.usd("hourly_limit_usd", set.HourlyLimitUSD)
	l.usd("daily_limit_usd", set.DailyLimitUSD)
	l.usd("monthly_limit_usd", set.MonthlyLimitUSD)
	l.usd("alert_threshold", set.AlertThreshold)
	l.tokens("hourly_token_limit", set.HourlyTokenLimit)
	l.tokens("default_max_llm_tokens_per_hour", set.DefaultAgentTokensPerHour)
	auditDetails(ctx, "global budget set: "+l.String())
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}

// budgetAgents serves GET /api/budget/agents: the agents ranked by
// lifetime spend, then today's, paged with ?offset=&limit= (default 100,
// max 1000). The seed's shape is a bare array: the total and the next
// page are in the X-Total-Count and Link headers.
func (s *Server) budgetAgents(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 1000)
	if err != nil {
		return err
	}
	agents, err := s.deps.Agents.List(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	spend, err := s.deps.Meter.AgentSpend(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	// Agents the ledger has no row for take the global default token limit.
	global, err := s.deps.Meter.Budget(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	byID := make(map[string]usage.AgentSpend, len(spend))
	for _, sp := range spend {
		byID[sp.AgentID] = sp
	}
	out := make([]usage.AgentSpend, 0, len(agents))
	for _, a := range agents {
		sp, ok := byID[a.ID]
		if !ok {
			sp.MaxLLMTokensPerHour = global.DefaultMaxLLMTokensPerHour
		}
		sp.AgentID, sp.AgentName, sp.Name = a.ID, a.Name, a.Name
		out = append(out, sp)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].TotalCostUSD != out[j].TotalCostUSD {
			return out[i].TotalCostUSD > out[j].TotalCostUSD
		}
		return out[i].TodayCostUSD > out[j].TodayCostUSD
	})
	setPageHeaders(ctx, len(out), offset, limit)
	writeJSON(ctx, fasthttp.StatusOK, page(out, offset, limit))
	return nil
}

// agentBudget serves GET /api/budget/agents/{id}; 404 for an unknown agent.
func (s *Server) agentBudget(ctx *fasthttp.RequestCtx) error {
	a, err := s.pathAgent(ctx)
	if err != nil {
		return err
	}
	b, err := s.deps.Meter.AgentBudget(s.reqCtx(ctx), a.ID, a.Name)
	return reply(ctx, b, err)
}

// agentBudgetBody is PUT /api/budget/agents/{id}: the seed page's names
// and LibreFang's (its ResourceQuota's max_cost_per_*_usd and
// max_llm_tokens_per_hour).
type agentBudgetBody struct {
	DailyLimitUSD   *float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD *float64 `json:"monthly_limit_usd"`
	HourlyLimitUSD  *float64 `json:"hourly_limit_usd"`

	MaxCostPerHourUSD   *float64 `json:"max_cost_per_hour_usd"`
	MaxCostPerDayUSD    *float64 `json:"max_cost_per_day_usd"`
	MaxCostPerMonthUSD  *float64 `json:"max_cost_per_month_usd"`
	MaxLLMTokensPerHour *int64   `json:"max_llm_tokens_per_hour"`
}

// putAgentBudget serves PUT /api/budget/agents/{id}.
func (s *Server) putAgentBudget(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	var b agentBudgetBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	set := usage.SetAgentBudget{TokensPerHour: b.MaxLLMTokensPerHour}
	var err2 error
	if set.HourlyLimitUSD, err2 = oneOf(alias{"hourly_limit_usd", b.HourlyLimitUSD}, alias{"max_cost_per_hour_usd", b.MaxCostPerHourUSD}); err2 != nil {
		return err2
	}
	if set.DailyLimitUSD, err2 = oneOf(alias{"daily_limit_usd", b.DailyLimitUSD}, alias{"max_cost_per_day_usd", b.MaxCostPerDayUSD}); err2 != nil {
		return err2
	}
	if set.MonthlyLimitUSD, err2 = oneOf(alias{"monthly_limit_usd", b.MonthlyLimitUSD}, alias{"max_cost_per_month_usd", b.MaxCostPerMonthUSD}); err2 != nil {
		return err2
	}
	if set == (usage.SetAgentBudget{}) {
		return badRequest("invalid_input", "provide at least one of daily_limit_usd, monthly_limit_usd, "+
			"max_cost_per_hour_usd, max_cost_per_day_usd, max_cost_per_month_usd, max_llm_tokens_per_hour")
	}
	a, err := s.deps.Agents.Get(s.reqCtx(ctx), ref)
	if err != nil {
		return err
	}
	set.AgentID, set.AgentName = a.ID, a.Name
	res, err := s.deps.Meter.SetAgentBudget(s.reqCtx(ctx), set)
	if err != nil {
		return err
	}
	var l limitLog
	l.usd("hourly_limit_usd", set.HourlyLimitUSD)
	l.usd("daily_limit_usd", set.DailyLimitUSD)
	l.usd("monthly_limit_usd", set.MonthlyLimitUSD)
	l.tokens("max_llm_tokens_per_hour", set.TokensPerHour)
	auditDetails(ctx, fmt.Sprintf("budget of agent %s (%s) set: %s", a.Name, a.ID, l))
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}
