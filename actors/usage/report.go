package usage

import (
	"sort"
	"strconv"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// Periods GET /api/usage and /api/usage/by-model accept.
const (
	PeriodHour  = "hour"
	PeriodDay   = "day"
	PeriodWeek  = "week"
	PeriodMonth = "month"
)

// ValidPeriod reports whether p names a period.
func ValidPeriod(p string) bool {
	return p == PeriodHour || p == PeriodDay || p == PeriodWeek || p == PeriodMonth
}

// periodDays is the UTC day range of a day-based period.
func periodDays(p string, now time.Time) (from, to int32) {
	to = dayOf(now)
	switch p {
	case PeriodWeek:
		return to - 6, to
	case PeriodMonth:
		return monthStart(now), to
	}
	return to, to
}

func (l *ledger) usageReport(q *UsageQuery) any {
	period := q.Period
	if !ValidPeriod(period) {
		return kernel.Invalid("period must be hour, day, week or month, got %q", period)
	}
	now := l.now().UTC()
	rep := &UsageReport{Period: period}
	var c Counters
	var agents int
	if period == PeriodHour {
		nm := minuteOf(now)
		seen := map[string]struct{}{}
		for i := range l.r.minutes {
			b := &l.r.minutes[i]
			if !b.live(nm) {
				continue
			}
			c.plus(&b.Counters)
			for a := range b.agents {
				seen[a] = struct{}{}
			}
		}
		agents = len(seen)
		rep.From = time.Unix((nm-bucketMinutes+1)*60, 0).UTC().Format(time.RFC3339)
	} else {
		from, to := periodDays(period, now)
		c, agents = l.r.dayRange(from, to, period != PeriodMonth)
		if period == PeriodMonth {
			// Every agent with a call this month has a month-to-date entry.
			l.r.month(now)
			agents = len(l.r.agentMonth)
		}
		rep.From = dayTime(from).Format(time.RFC3339)
	}
	rep.TotalInputTokens, rep.TotalCachedInputTokens, rep.TotalOutputTokens = c.InputTokens, c.CachedInputTokens, c.OutputTokens
	rep.TotalCostUSD, rep.RequestCount, rep.FailedRequests, rep.ActiveAgents = dollars(c.CostNanos), c.Requests, c.Failed, agents
	if q.Limit > 0 {
		rep.AgentItems = l.agentItems(q.Offset, q.Limit)
	}
	return rep
}

// agentItems is one page of LibreFang's per-agent lifetime usage,
// costliest first, and how many agents there are.
func (l *ledger) agentItems(offset, limit int) *AgentItems {
	all := make([]AgentUsage, 0, len(l.r.agents))
	for id, t := range l.r.agents {
		cost := dollars(t.CostNanos)
		all = append(all, AgentUsage{AgentID: id, Name: t.Name, TotalTokens: t.InputTokens + t.OutputTokens,
			InputTokens: t.InputTokens, OutputTokens: t.OutputTokens, TotalCostUSD: cost, Cost: cost, CallCount: t.Requests})
	}
	return pageAgentItems(all, len(all), offset, limit)
}

// pageAgentItems sorts agents costliest first and cuts the page; total is
// how many there are in all.
func pageAgentItems(all []AgentUsage, total, offset, limit int) *AgentItems {
	sort.Slice(all, func(i, j int) bool {
		if all[i].TotalCostUSD != all[j].TotalCostUSD {
			return all[i].TotalCostUSD > all[j].TotalCostUSD
		}
		return all[i].AgentID < all[j].AgentID
	})
	offset = min(max(offset, 0), len(all))
	end := min(offset+max(limit, 0), len(all))
	return &AgentItems{Items: all[offset:end:end], Total: total, Offset: offset, Limit: limit}
}

func (l *ledger) summary() *Summary {
	now := l.now().UTC()
	s := &Summary{}
	if d := l.r.days[dayOf(now)]; d != nil {
		s.Today.InputTokens, s.Today.OutputTokens, s.Today.CostUSD, s.Today.Requests = d.InputTokens, d.OutputTokens, dollars(d.CostNanos), d.Requests
	}
	used, reset := l.r.hourTokens(now)
	s.Quota.HourlyTokenLimit, s.Quota.HourlyTokensUsed, s.Quota.HourlyReservedTokens = l.limits.HourlyTokenLimit, used, l.reservedTok
	s.Quota.HourlyResetAt = reset.Format(time.RFC3339)
	for _, c := range l.r.models {
		s.TotalInputTokens += c.InputTokens
		s.TotalOutputTokens += c.OutputTokens
		s.TotalCostUSD += dollars(c.CostNanos)
		s.CallCount += c.Requests
	}
	return s
}

// modelPerf is every model's lifetime totals and latency, costliest first.
func (l *ledger) modelPerf() *ModelPerformance {
	out := &ModelPerformance{Models: make([]ModelPerf, 0, len(l.r.models))}
	for k, c := range l.r.models {
		m := ModelPerf{Model: k.model, Provider: k.provider, TotalCostUSD: dollars(c.CostNanos), TotalInputTokens: c.InputTokens,
			TotalOutputTokens: c.OutputTokens, CallCount: c.Requests}
		if c.Requests > 0 {
			m.CostPerCall = m.TotalCostUSD / float64(c.Requests)
		}
		// Latency is rolled up from the release that added it on; calls
		// before it count in the totals, not in the latency.
		if p := l.r.perf[k]; p != nil && p.N > 0 {
			m.AvgLatencyMS = float64(p.Sum) / float64(p.N)
			m.MinLatencyMS, m.MaxLatencyMS = p.Min, p.Max
			m.AvgLatencyPerCall = m.AvgLatencyMS
		}
		out.Models = append(out.Models, m)
	}
	sortModelPerf(out.Models)
	return out
}

func sortModelPerf(ms []ModelPerf) {
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if a.TotalCostUSD != b.TotalCostUSD {
			return a.TotalCostUSD > b.TotalCostUSD
		}
		return a.Provider+"/"+a.Model < b.Provider+"/"+b.Model
	})
}

func (l *ledger) byModel(period string) any {
	if period != "" && !ValidPeriod(period) {
		return kernel.Invalid("period must be hour, day, week or month (or absent for all time), got %q", period)
	}
	now := l.now().UTC()
	sum := map[modelKey]*Counters{}
	addAll := func(m map[modelKey]*Counters) {
		for k, c := range m {
			if sum[k] == nil {
				sum[k] = &Counters{}
			}
			sum[k].plus(c)
		}
	}
	switch period {
	case "":
		addAll(l.r.models)
	case PeriodHour:
		nm := minuteOf(now)
		for i := range l.r.minutes {
			if b := &l.r.minutes[i]; b.live(nm) {
				addAll(b.models)
			}
		}
	default:
		from, to := periodDays(period, now)
		for d := from; d <= to; d++ {
			addAll(l.r.dayModels[d])
		}
	}
	out := &ByModel{Period: period, Models: make([]ModelUsage, 0, len(sum))}
	if period == "" {
		out.Period = "all"
	}
	for k, c := range sum {
		out.Models = append(out.Models, ModelUsage{Model: k.model, Provider: k.provider, InputTokens: c.InputTokens,
			CachedInputTokens: c.CachedInputTokens, OutputTokens: c.OutputTokens, CostUSD: dollars(c.CostNanos), RequestCount: c.Requests,
			TotalCostUSD: dollars(c.CostNanos), TotalInputTokens: c.InputTokens, TotalOutputTokens: c.OutputTokens, CallCount: c.Requests})
	}
	sortModelUsage(out.Models)
	return out
}

func sortModelUsage(ms []ModelUsage) {
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if a.CostUSD != b.CostUSD {
			return a.CostUSD > b.CostUSD
		}
		if a.RequestCount != b.RequestCount {
			return a.RequestCount > b.RequestCount
		}
		return a.Provider+"/"+a.Model < b.Provider+"/"+b.Model
	})
}

// MaxDailyDays is the most days GET /api/usage/daily returns.
const MaxDailyDays = 366

func (l *ledger) daily(days int) any {
	if days < 1 || days > MaxDailyDays {
		return kernel.Invalid("days must be between 1 and %d, got %d", MaxDailyDays, days)
	}
	now := l.now().UTC()
	today := dayOf(now)
	out := &Daily{Days: make([]DayUsage, 0, days)}
	var buf [10]byte
	for d := today - int32(days) + 1; d <= today; d++ {
		row := DayUsage{Date: string(appendDate(buf[:0], d))}
		if c := l.r.days[d]; c != nil {
			row.InputTokens, row.OutputTokens, row.CostUSD, row.Requests = c.InputTokens, c.OutputTokens, dollars(c.CostNanos), c.Requests
			row.Tokens, row.Calls = c.InputTokens+c.OutputTokens, c.Requests
		}
		out.Days = append(out.Days, row)
	}
	if c := l.r.days[today]; c != nil {
		out.TodayCostUSD = dollars(c.CostNanos)
	}
	if l.r.firstDay != noDay {
		s := dayString(l.r.firstDay)
		out.FirstEventDate = &s
	}
	return out
}

// agentSpend lists every agent with usage or limits: its spend and its
// limits (the token limit in force, the default for agents without one).
func (l *ledger) agentSpend() []AgentSpend {
	today := dayOf(l.now().UTC())
	out := make([]AgentSpend, 0, len(l.r.agents))
	row := func(id, name string, t *agentTotal) AgentSpend {
		al := l.agentLimitsOf(id)
		s := AgentSpend{AgentID: id, AgentName: name, Name: name, HourlyLimit: al.HourlyLimitUSD, DailyLimit: al.DailyLimitUSD,
			MonthlyLimit: al.MonthlyLimitUSD, MaxLLMTokensPerHour: l.agentTokenLimit(id)}
		if t != nil {
			s.TotalCostUSD = dollars(t.CostNanos)
		}
		if c := l.r.dayAgents[today][id]; c != nil {
			s.TodayCostUSD = dollars(c.CostNanos)
			s.DailyCostUSD = s.TodayCostUSD
		}
		return s
	}
	for id, t := range l.r.agents {
		out = append(out, row(id, t.Name, t))
	}
	for id := range l.agentLimits {
		if l.r.agents[id] == nil {
			out = append(out, row(id, "", nil))
		}
	}
	return out
}

// appendDate appends day d as YYYY-MM-DD; time.Format costs more than the
// rest of a 366-day report.
func appendDate(b []byte, d int32) []byte {
	y, m, dd := dayTime(d).Date()
	b = append(b, byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append(b, byte('0'+int(m)/10), byte('0'+int(m)%10), '-')
	return append(b, byte('0'+dd/10), byte('0'+dd%10))
}

// MarshalJSON encodes the daily report by hand: with 366 rows,
// encoding/json's reflection was most of the request's cost.
func (d *Daily) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 64+len(d.Days)*110)
	b = append(b, `{"days":[`...)
	for i, row := range d.Days {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"date":"`...)
		b = append(b, row.Date...)
		b = append(b, `","input_tokens":`...)
		b = strconv.AppendInt(b, row.InputTokens, 10)
		b = append(b, `,"output_tokens":`...)
		b = strconv.AppendInt(b, row.OutputTokens, 10)
		b = append(b, `,"cost_usd":`...)
		b = strconv.AppendFloat(b, row.CostUSD, 'f', -1, 64)
		b = append(b, `,"requests":`...)
		b = strconv.AppendInt(b, row.Requests, 10)
		b = append(b, `,"tokens":`...)
		b = strconv.AppendInt(b, row.Tokens, 10)
		b = append(b, `,"calls":`...)
		b = strconv.AppendInt(b, row.Calls, 10)
		b = append(b, '}')
	}
	b = append(b, `],"today_cost_usd":`...)
	b = strconv.AppendFloat(b, d.TodayCostUSD, 'f', -1, 64)
	b = append(b, `,"first_event_date":`...)
	if d.FirstEventDate == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = append(b, *d.FirstEventDate...)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}
