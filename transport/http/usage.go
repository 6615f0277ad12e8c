package http

import (
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/usage"
)

// period reads ?period=; def when absent, 400 when not a period.
func period(ctx *fasthttp.RequestCtx, def string) (string, error) {
	args := ctx.QueryArgs()
	if !args.Has("period") {
		return def, nil
	}
	p := string(args.Peek("period"))
	if !usage.ValidPeriod(p) {
		return "", badRequest("invalid_query", `query parameter "period" must be hour, day, week or month`)
	}
	return p, nil
}

// usageTotals serves GET /api/usage?period=hour|day|week|month (default
// day): the seed page's totals of the period, and LibreFang's per-agent
// lifetime items (?offset=&limit=, default and at most 1000) unless the
// query names a period and no page.
func (s *Server) usageTotals(ctx *fasthttp.RequestCtx) error {
	p, err := period(ctx, usage.PeriodDay)
	if err != nil {
		return err
	}
	// LibreFang's per-agent items cost more than the totals (a sort and
	// an encoding per agent): they come when the query names no period
	// (LibreFang's clients send none) or asks for a page of them.
	offset, limit, err := pageParams(ctx, 1000, 1000)
	if err != nil {
		return err
	}
	if args := ctx.QueryArgs(); args.Has("period") && !args.Has("offset") && !args.Has("limit") {
		limit = 0
	}
	rep, err := s.deps.Meter.UsageOf(s.reqCtx(ctx), usage.UsageQuery{Period: p, Offset: offset, Limit: limit})
	return reply(ctx, rep, err)
}

// usageSummary serves GET /api/usage/summary.
func (s *Server) usageSummary(ctx *fasthttp.RequestCtx) error {
	sum, err := s.deps.Meter.Summary(s.reqCtx(ctx))
	return reply(ctx, sum, err)
}

// usageByModel serves GET /api/usage/by-model[?period=][&offset=&limit=]
// (all time by default; default and max 1000 models a page): the seed's
// {period, models} plus the paging fields.
func (s *Server) usageByModel(ctx *fasthttp.RequestCtx) error {
	p, err := period(ctx, "")
	if err != nil {
		return err
	}
	offset, limit, err := pageParams(ctx, 1000, 1000)
	if err != nil {
		return err
	}
	bm, err := s.deps.Meter.ByModel(s.reqCtx(ctx), p)
	if err != nil {
		return err
	}
	total := len(bm.Models)
	writeJSON(ctx, fasthttp.StatusOK, struct {
		*usage.ByModel
		pageInfo
	}{&usage.ByModel{Period: bm.Period, Models: page(bm.Models, offset, limit)}, pageOf(total, offset, limit)})
	return nil
}

// usageDaily serves GET /api/usage/daily?days=N (default 7, at most 366).
func (s *Server) usageDaily(ctx *fasthttp.RequestCtx) error {
	days, err := intQuery(ctx, 7, 1, usage.MaxDailyDays, "days")
	if err != nil {
		return err
	}
	d, err := s.deps.Meter.Daily(s.reqCtx(ctx), days)
	if err != nil {
		return err
	}
	// Up to 366 rows (~40 KB): written as Daily.MarshalJSON makes them,
	// without encoding/json's second pass that validates and copies them.
	body, err := d.MarshalJSON()
	if err != nil {
		return err
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Write(append(body, '\n'))
	return nil
}

// usageModelPerformance serves GET /api/usage/by-model/performance:
// LibreFang's per-model lifetime totals with provider latency.
func (s *Server) usageModelPerformance(ctx *fasthttp.RequestCtx) error {
	res, err := s.deps.Meter.ModelPerformance(s.reqCtx(ctx))
	return reply(ctx, res, err)
}
