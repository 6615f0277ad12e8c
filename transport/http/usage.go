package http

import (
	"cmp"
	"errors"
	"math"
	"strconv"

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
	if !s.usageFromCluster(ctx) {
		rep, err := s.deps.Meter.UsageOf(s.reqCtx(ctx), usage.UsageQuery{Period: p, Offset: offset, Limit: limit})
		return reply(ctx, rep, err)
	}
	// The cluster's page of agents is among every node's costliest
	// offset+limit.
	want := 0
	if limit > 0 {
		want = offset + limit
	}
	rep, err := s.deps.Meter.UsageOf(s.reqCtx(ctx), usage.UsageQuery{Period: p, Limit: want})
	if err != nil {
		return err
	}
	others, cov := askMembers(s, ctx, func(get peerGet) (*usage.UsageReport, error) {
		var out *usage.UsageReport
		if want == 0 {
			err := get(peerQuery(usagePath, "period", p), &out)
			return out, err
		}
		err := pagedPeer(get, func(off int) string {
			return peerQuery(usagePath, "period", p, "offset", strconv.Itoa(off), "limit", strconv.Itoa(usagePeerPage))
		}, want, func(get peerGet, uri string) (int, int, error) {
			var pg usage.UsageReport
			if err := get(uri, &pg); err != nil || pg.AgentItems == nil {
				return 0, 0, cmp.Or(err, errors.New("no agent items"))
			}
			if out == nil {
				out = &pg
			} else {
				out.Items = append(out.Items, pg.Items...)
			}
			return len(pg.Items), pg.Total, nil
		})
		return out, err
	})
	return writeUsage(ctx, usage.MergeUsage(rep, others, offset, limit), cov)
}

// usagePath and the others are the routes a member is asked.
const (
	usagePath            = "/api/usage"
	usageSummaryPath     = "/api/usage/summary"
	usageByModelPath     = "/api/usage/by-model"
	usageDailyPath       = "/api/usage/daily"
	usagePerformancePath = "/api/usage/by-model/performance"
)

// usageSummary serves GET /api/usage/summary.
func (s *Server) usageSummary(ctx *fasthttp.RequestCtx) error {
	sum, err := s.deps.Meter.Summary(s.reqCtx(ctx))
	if err != nil || !s.usageFromCluster(ctx) {
		return reply(ctx, sum, err)
	}
	others, cov := askMembers(s, ctx, func(get peerGet) (*usage.Summary, error) {
		var out *usage.Summary
		err := get(usageSummaryPath, &out)
		return out, err
	})
	return writeUsage(ctx, usage.MergeSummary(sum, others), cov)
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
	var cov *usageCoverage
	if s.usageFromCluster(ctx) {
		var others []*usage.ByModel
		// Every model of every node: the ordering is by the sums.
		others, cov = askMembers(s, ctx, func(get peerGet) (*usage.ByModel, error) {
			out := &usage.ByModel{}
			err := pagedPeer(get, func(off int) string {
				return peerQuery(usageByModelPath, "period", p, "offset", strconv.Itoa(off), "limit", strconv.Itoa(usagePeerPage))
			}, math.MaxInt, func(get peerGet, uri string) (int, int, error) {
				var pg struct {
					usage.ByModel
					pageInfo
				}
				if err := get(uri, &pg); err != nil {
					return 0, 0, err
				}
				out.Models = append(out.Models, pg.Models...)
				return len(pg.Models), pg.Total, nil
			})
			return out, err
		})
		bm = usage.MergeByModel(bm, others)
	}
	total := len(bm.Models)
	return writeUsage(ctx, struct {
		*usage.ByModel
		pageInfo
	}{&usage.ByModel{Period: bm.Period, Models: page(bm.Models, offset, limit)}, pageOf(total, offset, limit)}, cov)
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
	if s.usageFromCluster(ctx) {
		others, cov := askMembers(s, ctx, func(get peerGet) (*usage.Daily, error) {
			var out *usage.Daily
			err := get(peerQuery(usageDailyPath, "days", strconv.Itoa(days)), &out)
			return out, err
		})
		return writeUsage(ctx, usage.MergeDaily(d, others), cov)
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
	if err != nil || !s.usageFromCluster(ctx) {
		return reply(ctx, res, err)
	}
	others, cov := askMembers(s, ctx, func(get peerGet) (*usage.ModelPerformance, error) {
		var out *usage.ModelPerformance
		err := get(usagePerformancePath, &out)
		return out, err
	})
	return writeUsage(ctx, usage.MergeModelPerformance(res, others), cov)
}
