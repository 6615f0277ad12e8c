package usage

import (
	"testing"
	"time"
)

// The roll-ups are a plain struct: these tests drive them without the
// ledger actor or a store.

func TestRollupsApplyMarksEveryStoredKey(t *testing.T) {
	r := newRollups()
	dirty := dirtySet{}
	at := time.Date(2026, 11, 28, 14, 30, 0, 0, time.UTC)
	e := Event{Time: at, AgentID: "a1", AgentName: "coder", Provider: "groq", Model: "m", InputTokens: 10, OutputTokens: 5,
		CostNanos: 700, Outcome: "ok", User: "telegram:42", LatencyMS: 300}
	r.apply(&e, dirty)
	e2 := e
	e2.Outcome, e2.Time, e2.LatencyMS = "timeout", at.Add(time.Minute), 100
	r.apply(&e2, dirty)

	d, h := dayOf(at), hourOf(at)
	want := []dirtyKey{{kind: 'd', day: d}, {kind: 'h', hour: h}, {kind: 'M', day: d, s1: "groq", s2: "m"},
		{kind: 'A', day: d, s1: "a1"}, {kind: 'm', s1: "groq", s2: "m"}, {kind: 'a', s1: "a1"},
		{kind: 'U', day: d, s1: "telegram:42"}, {kind: 'u', s1: "telegram:42"}}
	if p, _ := dirty[dirtyKey{kind: 'p', s1: "groq", s2: "m"}].(*latency); p == nil || *p != (latency{N: 2, Sum: 400, Min: 100, Max: 300}) {
		t.Fatalf("model latency %+v", p)
	}
	if len(dirty) != len(want)+1 {
		t.Fatalf("dirty keys %v, want %v", dirty, want)
	}
	for _, k := range want {
		c, ok := dirty[k]
		if !ok {
			t.Fatalf("no dirty key %+v", k)
		}
		var got Counters
		switch v := c.(type) {
		case *Counters:
			got = *v
		case *agentTotal:
			got = v.Counters
			if v.Name != "coder" {
				t.Fatalf("agent total name %q", v.Name)
			}
		}
		if got != (Counters{InputTokens: 20, OutputTokens: 10, CostNanos: 1400, Requests: 2, Failed: 1}) {
			t.Fatalf("%+v: %+v", k, got)
		}
	}
	if r.firstDay != d {
		t.Fatalf("first day %d, want %d", r.firstDay, d)
	}
}

func TestRollupsHourAndMonthPerScope(t *testing.T) {
	r := newRollups()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	add := func(at time.Time, agent, provider, user string, cost int64) {
		r.apply(&Event{Time: at, AgentID: agent, Provider: provider, Model: "m", User: user, InputTokens: 10, OutputTokens: 5,
			CostNanos: cost, Outcome: "ok"}, dirtySet{})
	}
	add(now.Add(-90*time.Minute), "a1", "groq", "u1", 1) // this month and day, not the rolling hour
	add(now.Add(-30*time.Minute), "a1", "groq", "u1", 10)
	add(now.Add(-10*time.Minute), "a2", "openai", "u1", 100)
	add(now.AddDate(0, -1, 0), "a1", "groq", "u1", 1000) // last month
	for _, c := range []struct {
		kind               byte
		id                 string
		hour, tok, day, mo int64
	}{
		{'g', "", 110, 30, 111, 111},
		{'a', "a1", 10, 15, 11, 11},
		{'p', "groq", 10, 15, 11, 11},
		{'p', "openai", 100, 15, 100, 100},
		{'u', "u1", 110, 30, 111, 111},
		{'u', "nobody", 0, 0, 0, 0},
	} {
		h, tok := r.hourUse(c.kind, c.id, now)
		day := r.costRange(dayOf(now), dayOf(now))
		if c.kind != 'g' {
			day = r.dayCost(c.kind, c.id, dayOf(now))
		}
		if h != c.hour || tok != c.tok || day != c.day || r.monthCostOf(c.kind, c.id, now) != c.mo {
			t.Fatalf("%c %s: hour %d tokens %d day %d month %d", c.kind, c.id, h, tok, day, r.monthCostOf(c.kind, c.id, now))
		}
	}
}

func TestRollupsRollingHourAndMonth(t *testing.T) {
	r := newRollups()
	start := time.Date(2026, 11, 30, 23, 10, 0, 0, time.UTC)
	add := func(at time.Time, cost, tokens int64) {
		r.apply(&Event{Time: at, AgentID: "a1", Provider: "p", Model: "m", InputTokens: tokens, CostNanos: cost, Outcome: "ok"}, dirtySet{})
	}
	add(start, 100, 1000)
	add(start.Add(30*time.Minute), 200, 2000) // 23:40 on the last day of November

	if n, reset := r.hourTokens(start.Add(45 * time.Minute)); n != 3000 || !reset.Equal(start.Add(time.Hour)) {
		t.Fatalf("rolling hour at 23:55: %d tokens, reset %v", n, reset)
	}
	// 61 minutes after the first call it has left the window.
	if n, _ := r.hourTokens(start.Add(61 * time.Minute)); n != 2000 {
		t.Fatalf("rolling hour at 00:11: %d tokens, want 2000", n)
	}
	if got := r.monthCostNow(start); got != 300 {
		t.Fatalf("November to date %d, want 300", got)
	}
	dec := start.Add(time.Hour) // 00:10 on December 1st
	if got, ag := r.monthCostNow(dec), r.agentMonthCost("a1", dec); got != 0 || ag != 0 {
		t.Fatalf("December to date %d, agent %d; want 0", got, ag)
	}
	add(dec, 50, 10)
	if got, ag := r.monthCostNow(dec), r.agentMonthCost("a1", dec); got != 50 || ag != 50 {
		t.Fatalf("December after a call %d, agent %d; want 50", got, ag)
	}
	if got := r.costRange(dayOf(start), dayOf(dec)); got != 350 {
		t.Fatalf("two days %d, want 350", got)
	}
}

func TestRollupsPruneKeepsTheLoadedWindows(t *testing.T) {
	r := newRollups()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	old := now.AddDate(0, -3, 0)
	for _, at := range []time.Time{old, now} {
		r.apply(&Event{Time: at, AgentID: "a1", Provider: "p", Model: "m", CostNanos: 1, Outcome: "ok"}, dirtySet{})
	}
	r.prune(now)
	if r.dayAgents[dayOf(old)] != nil || r.dayModels[dayOf(old)] != nil || r.hours[hourOf(old)] != nil {
		t.Fatal("detail older than last month kept")
	}
	if r.days[dayOf(old)] == nil || r.dayAgents[dayOf(now)] == nil || r.agents["a1"].Requests != 2 {
		t.Fatal("day counters within 400 days, today's detail or lifetime totals lost")
	}
}
