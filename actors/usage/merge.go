package usage

// Cluster mode (docs/cluster.md, "Usage reports across the cluster"): each
// node meters its own calls in its own ledger, and a usage report asked of
// any node adds up every node's. These functions add other nodes' answers
// (decoded from their JSON) to this node's, with the same ordering and
// paging as one node's report. Costs are added in nano-USD, as a ledger
// keeps them, so the sum is what one ledger would have said.

// addUSD adds two dollar amounts the way the ledger does, in nano-USD.
func addUSD(a, b float64) float64 { return dollars(nanos(a) + nanos(b)) }

// MergeUsage adds others to local: the period's totals, and (when local
// has them) the per-agent items, as the page offset/limit of all nodes'
// agents. Each of others must carry its costliest offset+limit agents
// (or all of them) for the page to be right.
func MergeUsage(local *UsageReport, others []*UsageReport, offset, limit int) *UsageReport {
	out := *local
	var items []AgentUsage
	total := 0
	if local.AgentItems != nil {
		items = append(items, local.Items...)
		total = local.Total
	}
	for _, o := range others {
		out.TotalInputTokens += o.TotalInputTokens
		out.TotalCachedInputTokens += o.TotalCachedInputTokens
		out.TotalOutputTokens += o.TotalOutputTokens
		out.TotalCostUSD = addUSD(out.TotalCostUSD, o.TotalCostUSD)
		out.RequestCount += o.RequestCount
		out.FailedRequests += o.FailedRequests
		// Agent ids are made per node: no agent counts on two nodes.
		out.ActiveAgents += o.ActiveAgents
		if o.AgentItems != nil {
			items = append(items, o.Items...)
			total += o.Total
		}
	}
	if local.AgentItems != nil {
		out.AgentItems = pageAgentItems(items, total, offset, limit)
	}
	return &out
}

// MergeSummary adds others' today, hourly token use and lifetime totals
// to local. The hourly limit and its reset are local's (limits are the
// cluster's, set through any node).
func MergeSummary(local *Summary, others []*Summary) *Summary {
	out := *local
	for _, o := range others {
		out.Today.InputTokens += o.Today.InputTokens
		out.Today.OutputTokens += o.Today.OutputTokens
		out.Today.CostUSD = addUSD(out.Today.CostUSD, o.Today.CostUSD)
		out.Today.Requests += o.Today.Requests
		out.Quota.HourlyTokensUsed += o.Quota.HourlyTokensUsed
		out.Quota.HourlyReservedTokens += o.Quota.HourlyReservedTokens
		out.TotalInputTokens += o.TotalInputTokens
		out.TotalOutputTokens += o.TotalOutputTokens
		out.TotalCostUSD = addUSD(out.TotalCostUSD, o.TotalCostUSD)
		out.CallCount += o.CallCount
	}
	return &out
}

// MergeByModel adds others' models to local's, model by model (provider
// and model name), costliest first.
func MergeByModel(local *ByModel, others []*ByModel) *ByModel {
	lists := [][]ModelUsage{local.Models}
	for _, o := range others {
		lists = append(lists, o.Models)
	}
	out := &ByModel{Period: local.Period}
	out.Models = mergeModels(lists, func(m ModelUsage) modelKey { return modelKey{m.Provider, m.Model} }, func(s *ModelUsage, m ModelUsage) {
		s.InputTokens += m.InputTokens
		s.CachedInputTokens += m.CachedInputTokens
		s.OutputTokens += m.OutputTokens
		s.CostUSD = addUSD(s.CostUSD, m.CostUSD)
		s.RequestCount += m.RequestCount
		s.TotalCostUSD, s.TotalInputTokens, s.TotalOutputTokens, s.CallCount = s.CostUSD, s.InputTokens, s.OutputTokens, s.RequestCount
	})
	sortModelUsage(out.Models)
	return out
}

// mergeModels joins the nodes' rows by model: a model's first row is
// kept, every later one added into it by add.
func mergeModels[T any](lists [][]T, key func(T) modelKey, add func(s *T, m T)) []T {
	at := map[modelKey]int{}
	out := make([]T, 0, len(lists[0])) // [] in JSON, never null
	for _, l := range lists {
		for _, m := range l {
			k := key(m)
			i, ok := at[k]
			if !ok {
				at[k] = len(out)
				out = append(out, m)
				continue
			}
			add(&out[i], m)
		}
	}
	return out
}

// MergeModelPerformance adds others' models to local's: totals added,
// the latency averaged weighted by calls, its minimum and maximum over
// the nodes.
func MergeModelPerformance(local *ModelPerformance, others []*ModelPerformance) *ModelPerformance {
	lists := [][]ModelPerf{local.Models}
	for _, o := range others {
		lists = append(lists, o.Models)
	}
	out := &ModelPerformance{}
	out.Models = mergeModels(lists, func(m ModelPerf) modelKey { return modelKey{m.Provider, m.Model} }, func(s *ModelPerf, m ModelPerf) {
		switch {
		case m.AvgLatencyMS == 0 && m.MaxLatencyMS == 0:
			// No latency recorded there.
		case s.AvgLatencyMS == 0 && s.MaxLatencyMS == 0:
			s.AvgLatencyMS, s.MinLatencyMS, s.MaxLatencyMS = m.AvgLatencyMS, m.MinLatencyMS, m.MaxLatencyMS
		default:
			if n := s.CallCount + m.CallCount; n > 0 {
				s.AvgLatencyMS = (s.AvgLatencyMS*float64(s.CallCount) + m.AvgLatencyMS*float64(m.CallCount)) / float64(n)
			}
			s.MinLatencyMS, s.MaxLatencyMS = min(s.MinLatencyMS, m.MinLatencyMS), max(s.MaxLatencyMS, m.MaxLatencyMS)
		}
		s.AvgLatencyPerCall = s.AvgLatencyMS
		s.TotalCostUSD = addUSD(s.TotalCostUSD, m.TotalCostUSD)
		s.TotalInputTokens += m.TotalInputTokens
		s.TotalOutputTokens += m.TotalOutputTokens
		s.CallCount += m.CallCount
		s.CostPerCall = 0
		if s.CallCount > 0 {
			s.CostPerCall = s.TotalCostUSD / float64(s.CallCount)
		}
	})
	sortModelPerf(out.Models)
	return out
}

// MergeDaily adds others' rows to local's, day by day (local's days: a
// row another node has for a day outside them is left out), today's cost,
// and the earliest first event.
func MergeDaily(local *Daily, others []*Daily) *Daily {
	out := &Daily{Days: append([]DayUsage{}, local.Days...), TodayCostUSD: local.TodayCostUSD, FirstEventDate: local.FirstEventDate}
	at := make(map[string]int, len(out.Days))
	for i, d := range out.Days {
		at[d.Date] = i
	}
	for _, o := range others {
		for _, d := range o.Days {
			i, ok := at[d.Date]
			if !ok {
				continue
			}
			s := &out.Days[i]
			s.InputTokens += d.InputTokens
			s.OutputTokens += d.OutputTokens
			s.CostUSD = addUSD(s.CostUSD, d.CostUSD)
			s.Requests += d.Requests
			s.Tokens, s.Calls = s.InputTokens+s.OutputTokens, s.Requests
		}
		out.TodayCostUSD = addUSD(out.TodayCostUSD, o.TodayCostUSD)
		if f := o.FirstEventDate; f != nil && (out.FirstEventDate == nil || *f < *out.FirstEventDate) {
			out.FirstEventDate = f
		}
	}
	return out
}
