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
	st, err := s.deps.Meter.Budget()
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}

type budgetBody struct {
	DailyLimitUSD    *float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  *float64 `json:"monthly_limit_usd"`
	AlertThreshold   *float64 `json:"alert_threshold"`
	HourlyTokenLimit *int64   `json:"hourly_token_limit"`
}

// putBudget serves PUT /api/budget: a partial update; 0 means unlimited.
func (s *Server) putBudget(ctx *fasthttp.RequestCtx) error {
	var b budgetBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if b.DailyLimitUSD == nil && b.MonthlyLimitUSD == nil && b.AlertThreshold == nil && b.HourlyTokenLimit == nil {
		return badRequest("invalid_input", "provide at least one of daily_limit_usd, monthly_limit_usd, alert_threshold, hourly_token_limit")
	}
	st, err := s.deps.Meter.SetBudget(usage.SetBudget{DailyLimitUSD: b.DailyLimitUSD, MonthlyLimitUSD: b.MonthlyLimitUSD,
		AlertThreshold: b.AlertThreshold, HourlyTokenLimit: b.HourlyTokenLimit})
	if err != nil {
		return err
	}
	auditDetails(ctx, "global budget set: "+describeLimits(b.DailyLimitUSD, b.MonthlyLimitUSD, b.AlertThreshold, b.HourlyTokenLimit))
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}

func describeLimits(daily, monthly, threshold *float64, tokens *int64) string {
	var parts []string
	if daily != nil {
		parts = append(parts, fmt.Sprintf("daily_limit_usd=%g", *daily))
	}
	if monthly != nil {
		parts = append(parts, fmt.Sprintf("monthly_limit_usd=%g", *monthly))
	}
	if threshold != nil {
		parts = append(parts, fmt.Sprintf("alert_threshold=%g", *threshold))
	}
	if tokens != nil {
		parts = append(parts, fmt.Sprintf("hourly_token_limit=%d", *tokens))
	}
	return strings.Join(parts, " ")
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
	agents, err := s.deps.Agents.List()
	if err != nil {
		return err
	}
	spend, err := s.deps.Meter.AgentSpend()
	if err != nil {
		return err
	}
	byID := make(map[string]usage.AgentSpend, len(spend))
	for _, sp := range spend {
		byID[sp.AgentID] = sp
	}
	out := make([]usage.AgentSpend, 0, len(agents))
	for _, a := range agents {
		sp := byID[a.ID]
		sp.AgentID, sp.AgentName = a.ID, a.Name
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
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	a, err := s.deps.Agents.Get(ref)
	if err != nil {
		return err
	}
	b, err := s.deps.Meter.AgentBudget(a.ID, a.Name)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, b)
	return nil
}

type agentBudgetBody struct {
	DailyLimitUSD   *float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD *float64 `json:"monthly_limit_usd"`
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
	if b.DailyLimitUSD == nil && b.MonthlyLimitUSD == nil {
		return badRequest("invalid_input", "provide at least one of daily_limit_usd, monthly_limit_usd")
	}
	a, err := s.deps.Agents.Get(ref)
	if err != nil {
		return err
	}
	res, err := s.deps.Meter.SetAgentBudget(usage.SetAgentBudget{AgentID: a.ID, AgentName: a.Name,
		DailyLimitUSD: b.DailyLimitUSD, MonthlyLimitUSD: b.MonthlyLimitUSD})
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("budget of agent %s (%s) set: %s", a.Name, a.ID, describeLimits(b.DailyLimitUSD, b.MonthlyLimitUSD, nil, nil)))
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}
