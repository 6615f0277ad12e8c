package http

// Per-provider and per-user budgets (LibreFang's /api/budget/providers
// and /api/budget/users): the handlers decode, the ledger validates,
// stores and enforces.

import (
	"fmt"
	"net/url"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/usage"
)

// providerBudgets serves GET /api/budget/providers: every provider with a
// budget or with usage this month, by name.
func (s *Server) providerBudgets(ctx *fasthttp.RequestCtx) error {
	res, err := s.deps.Meter.ProviderBudgets(s.reqCtx(ctx))
	return reply(ctx, res, err)
}

// providerBudget serves GET /api/budget/providers/{id}: one provider's row
// (a provider with neither budget nor usage is unconfigured, all zeros).
func (s *Server) providerBudget(ctx *fasthttp.RequestCtx) error {
	res, err := s.deps.Meter.ProviderBudget(s.reqCtx(ctx), scopeID(ctx))
	return reply(ctx, res, err)
}

// providerBudgetBody is LibreFang's partial provider budget; null or
// absent leaves a cap as it is, 0 is unlimited.
type providerBudgetBody struct {
	MaxCostPerHourUSD  *float64 `json:"max_cost_per_hour_usd"`
	MaxCostPerDayUSD   *float64 `json:"max_cost_per_day_usd"`
	MaxCostPerMonthUSD *float64 `json:"max_cost_per_month_usd"`
	MaxTokensPerHour   *int64   `json:"max_tokens_per_hour"`
}

// putProviderBudget serves PUT /api/budget/providers/{id}. An empty body
// changes nothing and answers the caps as they are (LibreFang's partial
// update).
func (s *Server) putProviderBudget(ctx *fasthttp.RequestCtx) error {
	var b providerBudgetBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	id := scopeID(ctx)
	res, err := s.deps.Meter.SetProviderBudget(s.reqCtx(ctx), usage.SetProviderBudget{Provider: id,
		HourlyLimitUSD: b.MaxCostPerHourUSD, DailyLimitUSD: b.MaxCostPerDayUSD, MonthlyLimitUSD: b.MaxCostPerMonthUSD,
		TokensPerHour: b.MaxTokensPerHour})
	return replyAudited(ctx, res, err, func() string {
		return fmt.Sprintf("budget of provider %q set: hourly=%g daily=%g monthly=%g tokens_per_hour=%d", id,
			res.MaxCostPerHourUSD, res.MaxCostPerDayUSD, res.MaxCostPerMonthUSD, res.MaxTokensPerHour)
	})
}

// deleteProviderBudget serves DELETE /api/budget/providers/{id}: the
// provider is unlimited again (204, also when it had no budget).
func (s *Server) deleteProviderBudget(ctx *fasthttp.RequestCtx) error {
	id := scopeID(ctx)
	_, err := s.deps.Meter.SetProviderBudget(s.reqCtx(ctx), usage.SetProviderBudget{Provider: id, Clear: true})
	return replyNoContent(ctx, err, func() string { return fmt.Sprintf("budget of provider %q removed", id) })
}

// userBudgets serves GET /api/budget/users?limit=N (default 25, at most
// 1000): the users ranked by today's spend, then this month's.
func (s *Server) userBudgets(ctx *fasthttp.RequestCtx) error {
	limit, err := intQuery(ctx, 25, 1, 1000, "limit")
	if err != nil {
		return err
	}
	res, err := s.deps.Meter.UserBudgets(s.reqCtx(ctx), limit)
	return reply(ctx, res, err)
}

// scopeID reads {id}, a provider or a user as fangd names them (see
// turnUser), e.g. "groq", "telegram:12345" or "api_key", percent-decoded
// (a client may escape the ':'); the ledger checks it.
func scopeID(ctx *fasthttp.RequestCtx) string {
	id := pathID(ctx)
	if u, err := url.PathUnescape(id); err == nil {
		return u
	}
	return id
}

// userBudget serves GET /api/budget/users/{id}.
func (s *Server) userBudget(ctx *fasthttp.RequestCtx) error {
	res, err := s.deps.Meter.UserBudget(s.reqCtx(ctx), scopeID(ctx))
	return reply(ctx, res, err)
}

// userBudgetBody is LibreFang's UserBudgetConfig: a full replacement,
// every field required.
type userBudgetBody struct {
	MaxHourlyUSD   *float64 `json:"max_hourly_usd"`
	MaxDailyUSD    *float64 `json:"max_daily_usd"`
	MaxMonthlyUSD  *float64 `json:"max_monthly_usd"`
	AlertThreshold *float64 `json:"alert_threshold"`
}

// putUserBudget serves PUT /api/budget/users/{id}.
func (s *Server) putUserBudget(ctx *fasthttp.RequestCtx) error {
	var b userBudgetBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"max_hourly_usd", b.MaxHourlyUSD}, {"max_daily_usd", b.MaxDailyUSD}, {"max_monthly_usd", b.MaxMonthlyUSD}, {"alert_threshold", b.AlertThreshold}} {
		if f.v == nil {
			return badRequest("invalid_input", f.name+" is required (PUT replaces the whole budget; 0 is unlimited)")
		}
	}
	id := scopeID(ctx)
	res, err := s.deps.Meter.SetUserBudget(s.reqCtx(ctx), id, usage.UserLimits{MaxHourlyUSD: *b.MaxHourlyUSD,
		MaxDailyUSD: *b.MaxDailyUSD, MaxMonthlyUSD: *b.MaxMonthlyUSD, AlertThreshold: *b.AlertThreshold})
	return replyAudited(ctx, res, err, func() string {
		return fmt.Sprintf("budget of user %q set: hourly=%g daily=%g monthly=%g alert_threshold=%g", id,
			res.MaxHourlyUSD, res.MaxDailyUSD, res.MaxMonthlyUSD, res.AlertThreshold)
	})
}

// deleteUserBudget serves DELETE /api/budget/users/{id} (204, also when
// the user had no budget).
func (s *Server) deleteUserBudget(ctx *fasthttp.RequestCtx) error {
	id := scopeID(ctx)
	err := s.deps.Meter.ClearUserBudget(s.reqCtx(ctx), id)
	return replyNoContent(ctx, err, func() string { return fmt.Sprintf("budget of user %q removed", id) })
}
