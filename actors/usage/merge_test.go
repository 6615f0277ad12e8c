package usage

import "testing"

// Other nodes' reports add up model by model: latency averaged over the
// calls of both, its extremes over both, a model only one node used kept
// as it is; costliest first after the sum.
func TestMergeModelPerformanceWeighsLatencyByCalls(t *testing.T) {
	local := &ModelPerformance{Models: []ModelPerf{
		{Provider: "p", Model: "a", TotalCostUSD: 0.1, CallCount: 1, AvgLatencyMS: 100, MinLatencyMS: 100, MaxLatencyMS: 100},
		{Provider: "p", Model: "b", TotalCostUSD: 0.05, CallCount: 1},
	}}
	other := &ModelPerformance{Models: []ModelPerf{
		{Provider: "p", Model: "a", TotalCostUSD: 0.2, CallCount: 3, AvgLatencyMS: 20, MinLatencyMS: 10, MaxLatencyMS: 30},
		{Provider: "p", Model: "b", TotalCostUSD: 0.5, CallCount: 2, AvgLatencyMS: 7, MinLatencyMS: 5, MaxLatencyMS: 9},
	}}
	got := MergeModelPerformance(local, []*ModelPerformance{other}).Models
	if len(got) != 2 || got[0].Model != "b" || got[1].Model != "a" {
		t.Fatalf("order %+v", got)
	}
	a, b := got[1], got[0]
	if a.CallCount != 4 || a.AvgLatencyMS != 40 || a.MinLatencyMS != 10 || a.MaxLatencyMS != 100 || a.TotalCostUSD != 0.3 || a.CostPerCall != 0.075 {
		t.Fatalf("a %+v", a)
	}
	// b had no latency here: the other node's stands.
	if b.CallCount != 3 || b.AvgLatencyMS != 7 || b.MinLatencyMS != 5 || b.MaxLatencyMS != 9 || b.TotalCostUSD != 0.55 {
		t.Fatalf("b %+v", b)
	}
}

// Days add up by date within this node's window; the first event is the
// earliest of the nodes'; the agents' page is cut from every node's.
func TestMergeDailyAndAgentPage(t *testing.T) {
	d1, d0 := "2026-12-01", "2026-11-02"
	local := &Daily{Days: []DayUsage{{Date: "2026-12-06", Requests: 1}, {Date: "2026-12-07", Requests: 2, CostUSD: 0.1}}, TodayCostUSD: 0.1, FirstEventDate: &d1}
	other := &Daily{Days: []DayUsage{{Date: "2026-12-07", Requests: 3, CostUSD: 0.2}, {Date: "2026-12-08", Requests: 9}}, TodayCostUSD: 0.2, FirstEventDate: &d0}
	got := MergeDaily(local, []*Daily{other})
	if len(got.Days) != 2 || got.Days[0].Requests != 1 || got.Days[1].Requests != 5 || got.Days[1].Calls != 5 ||
		got.Days[1].CostUSD != 0.3 || got.TodayCostUSD != 0.3 || *got.FirstEventDate != d0 || local.Days[1].Requests != 2 {
		t.Fatalf("%+v", got)
	}
	lu := &UsageReport{RequestCount: 2, ActiveAgents: 2, AgentItems: &AgentItems{Total: 2, Items: []AgentUsage{{AgentID: "x", TotalCostUSD: 3}, {AgentID: "y", TotalCostUSD: 1}}}}
	ou := &UsageReport{RequestCount: 1, ActiveAgents: 1, AgentItems: &AgentItems{Total: 1, Items: []AgentUsage{{AgentID: "z", TotalCostUSD: 2}}}}
	u := MergeUsage(lu, []*UsageReport{ou}, 1, 1)
	if u.RequestCount != 3 || u.ActiveAgents != 3 || u.Total != 3 || len(u.Items) != 1 || u.Items[0].AgentID != "z" || u.Offset != 1 {
		t.Fatalf("%+v %+v", u, u.AgentItems)
	}
}
