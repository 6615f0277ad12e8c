package usage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

type harness struct {
	t     *testing.T
	db    *store.DB
	k     *kernel.Kernel
	m     *Meter
	clk   *kerneltest.Clock
	opts  Options
	mu    sync.Mutex
	warns []*BudgetWarning
	exces []*BudgetExceeded
}

func newHarness(t *testing.T, start time.Time) *harness {
	t.Helper()
	db, err := store.Open(store.DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, clk: kerneltest.NewClock(start)}
	h.opts = Options{Now: h.clk.Now}
	h.start()
	t.Cleanup(func() {
		h.stop()
		db.Close()
	})
	return h
}

func (h *harness) start() {
	h.k = kernel.New(zerolog.Nop())
	h.k.System.EventStream.Subscribe(func(evt any) {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch e := evt.(type) {
		case *BudgetWarning:
			h.warns = append(h.warns, e)
		case *BudgetExceeded:
			h.exces = append(h.exces, e)
		}
	})
	m, err := Start(h.k, h.db, nil, h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.m = m
}

func (h *harness) stop() {
	if h.k != nil {
		kerneltest.Stop(h.k)
		h.k = nil
	}
}

func (h *harness) restart() { h.stop(); h.start() }

func (h *harness) alerts() (warns, exceeded int) {
	// Publishing is synchronous in the ledger; one query round-trip orders us after it.
	if _, err := h.m.Budget(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.warns), len(h.exces)
}

func ev(agent, model string, in, out int64, costUSD float64) Event {
	return Event{AgentID: agent, AgentName: "name-" + agent, Provider: "fake", Model: model,
		InputTokens: in, OutputTokens: out, CostNanos: nanos(costUSD), Outcome: "ok", PricingKnown: true}
}

// call reserves worst, then settles e; it returns the settle error or the reserve error.
func (h *harness) call(worstUSD float64, tokens int64, e Event) error {
	res, err := h.m.Reserve(context.Background(), Reserve{AgentID: e.AgentID, AgentName: e.AgentName, Provider: e.Provider, Model: e.Model,
		CostNanos: nanos(worstUSD), Tokens: tokens})
	if err != nil {
		return err
	}
	_, err = h.m.Settle(context.Background(), res.ID, e)
	return err
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestUsageReportsFromRollups(t *testing.T) {
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, now)
	for _, e := range []Event{ev("a1", "m1", 100, 10, 0.01), ev("a2", "m2", 200, 20, 0.02), ev("a1", "m1", 50, 5, 0.005)} {
		if err := h.call(1, 0, e); err != nil {
			t.Fatal(err)
		}
	}
	failed := ev("a3", "m1", 0, 0, 0)
	failed.Outcome = "rate_limited"
	if _, err := h.m.Settle(context.Background(), 0, failed); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"hour", "day", "week", "month"} {
		rep, err := h.m.Usage(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Period != p || rep.TotalInputTokens != 350 || rep.TotalOutputTokens != 35 || !near(rep.TotalCostUSD, 0.035) ||
			rep.RequestCount != 4 || rep.FailedRequests != 1 || rep.ActiveAgents != 3 {
			t.Fatalf("%s: %+v", p, rep)
		}
	}
	if _, err := h.m.Usage(context.Background(), "year"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
		t.Fatalf("bad period: %v", err)
	}
	sum, _ := h.m.Summary(context.Background())
	if sum.Today.InputTokens != 350 || sum.Today.Requests != 4 || sum.Quota.HourlyTokensUsed != 385 ||
		sum.Quota.HourlyResetAt != "2026-03-15T13:00:00Z" {
		t.Fatalf("summary %+v", sum)
	}
	bm, _ := h.m.ByModel(context.Background(), "")
	if len(bm.Models) != 2 || bm.Models[0].Model != "m2" || bm.Models[1].RequestCount != 3 || bm.Models[1].InputTokens != 150 {
		t.Fatalf("by model %+v", bm)
	}
	// Later in the month: the day and week periods have moved on, month has not.
	h.clk.Advance(8 * 24 * time.Hour)
	if rep, _ := h.m.Usage(context.Background(), "day"); rep.RequestCount != 0 || rep.ActiveAgents != 0 {
		t.Fatalf("a new day starts empty: %+v", rep)
	}
	if rep, _ := h.m.Usage(context.Background(), "week"); rep.RequestCount != 0 {
		t.Fatalf("8 days later the week is empty: %+v", rep)
	}
	if rep, _ := h.m.Usage(context.Background(), "month"); rep.RequestCount != 4 || rep.ActiveAgents != 3 {
		t.Fatalf("month keeps it: %+v", rep)
	}
	if rep, _ := h.m.Usage(context.Background(), "hour"); rep.RequestCount != 0 {
		t.Fatalf("the rolling hour is empty: %+v", rep)
	}
	d, err := h.m.Daily(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Days) != 10 || d.Days[0].Date != "2026-03-14" || d.Days[1].Date != "2026-03-15" || d.Days[1].Requests != 4 ||
		d.Days[9].Date != "2026-03-23" || d.Days[9].Requests != 0 || d.FirstEventDate == nil || *d.FirstEventDate != "2026-03-15" {
		t.Fatalf("daily %+v", d)
	}
	if _, err := h.m.Daily(context.Background(), 367); err == nil {
		t.Fatal("367 days accepted")
	}
	spend, _ := h.m.AgentSpend(context.Background())
	if len(spend) != 3 {
		t.Fatalf("agent spend %+v", spend)
	}
}

func TestRestartKeepsUsageBudgetsAndAlerts(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	daily := 1.0
	if _, err := h.m.SetBudget(context.Background(), SetBudget{DailyLimitUSD: &daily}); err != nil {
		t.Fatal(err)
	}
	agentDaily := 0.5
	if _, err := h.m.SetAgentBudget(context.Background(), SetAgentBudget{AgentID: "a1", DailyLimitUSD: &agentDaily}); err != nil {
		t.Fatal(err)
	}
	if err := h.call(0.46, 0, ev("a1", "m", 10, 10, 0.45)); err != nil { // 90% of the agent's limit: warning
		t.Fatal(err)
	}
	if w, _ := h.alerts(); w != 1 {
		t.Fatalf("%d warnings", w)
	}
	h.restart()
	st, _ := h.m.Budget(context.Background())
	if st.DailyLimitUSD != 1 || !near(st.TodaySpentUSD, 0.45) {
		t.Fatalf("after restart %+v", st)
	}
	ab, _ := h.m.AgentBudget(context.Background(), "a1", "x")
	if ab.DailyLimitUSD != 0.5 || !near(ab.TodaySpentUSD, 0.45) || ab.Status != StatusWarning {
		t.Fatalf("agent budget after restart %+v", ab)
	}
	// Another call in the same window must not warn again after the restart.
	if err := h.call(0.04, 0, ev("a1", "m", 1, 1, 0.01)); err != nil {
		t.Fatal(err)
	}
	if w, _ := h.alerts(); w != 1 {
		t.Fatalf("warned again in the same window after restart: %d warnings", w)
	}
	if rep, _ := h.m.Usage(context.Background(), "hour"); rep.RequestCount != 2 {
		t.Fatalf("rolling hour rebuilt from events: %+v", rep)
	}
}

func TestAlertsOncePerWindow(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	daily := 1.0
	h.m.SetBudget(context.Background(), SetBudget{DailyLimitUSD: &daily})
	for i := 0; i < 7; i++ { // 0.7
		if err := h.call(0.1, 0, ev("a", "m", 1, 1, 0.1)); err != nil {
			t.Fatal(err)
		}
	}
	if w, x := h.alerts(); w != 0 || x != 0 {
		t.Fatalf("below the threshold: %d %d", w, x)
	}
	for i := 0; i < 2; i++ { // 0.8, 0.9
		h.call(0.1, 0, ev("a", "m", 1, 1, 0.1))
	}
	if w, x := h.alerts(); w != 1 || x != 0 {
		t.Fatalf("at 80%% and 90%%: %d warnings %d exceeded", w, x)
	}
	if err := h.call(0.1, 0, ev("a", "m", 1, 1, 0.1)); err != nil { // exactly 1.0: allowed, and now exceeded
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		err := h.call(0.1, 0, ev("a", "m", 1, 1, 0.1))
		if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindPaymentRequired || de.Code != "budget_exceeded" {
			t.Fatalf("over the limit: %v", err)
		}
	}
	if w, x := h.alerts(); w != 1 || x != 1 {
		t.Fatalf("one warning and one exceeded per window, got %d and %d", w, x)
	}
	if st, _ := h.m.Budget(context.Background()); st.Status != StatusExceeded || !near(st.TodaySpentUSD, 1.0) {
		t.Fatalf("status %+v", st)
	}
	// A new day is a new window: spend starts over and may alert again.
	h.clk.Advance(24 * time.Hour)
	for i := 0; i < 8; i++ {
		if err := h.call(0.1, 0, ev("a", "m", 1, 1, 0.1)); err != nil {
			t.Fatal(err)
		}
	}
	if w, x := h.alerts(); w != 2 || x != 1 {
		t.Fatalf("the next day warns once more: %d %d", w, x)
	}
	h.mu.Lock()
	last := h.warns[1]
	h.mu.Unlock()
	if last.Scope != "global" || last.Limit != "daily" || last.Window != "2026-03-16" {
		t.Fatalf("warning %+v", last)
	}
}

// TestConcurrentCallsNeverOverspend is the ledger's promise: 100 calls at
// once against a budget that fits only a few of them. Each reserves its
// worst case and settles a random actual cost at or below it. Whatever the
// interleaving, the total spent never passes the limit, and every call that
// could fit was admitted.
func TestConcurrentCallsNeverOverspend(t *testing.T) {
	for round := 0; round < 5; round++ {
		h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
		const worst = 0.003 // USD per call, worst case
		globalDaily, agentDaily := 0.1, 0.05
		h.m.SetBudget(context.Background(), SetBudget{DailyLimitUSD: &globalDaily})
		h.m.SetAgentBudget(context.Background(), SetAgentBudget{AgentID: "a0", DailyLimitUSD: &agentDaily})
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				agent := fmt.Sprintf("a%d", i%4)
				actual := worst * (0.5 + 0.5*float64((i*7919+round)%100)/100)
				err := h.call(worst, 0, ev(agent, "m", 10, 10, actual))
				var de *kernel.Error
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &de) && de.Code == "budget_exceeded":
					refused.Add(1)
				default:
					t.Error(err)
				}
			}(i)
		}
		close(start)
		wg.Wait()
		st, _ := h.m.Budget(context.Background())
		ab, _ := h.m.AgentBudget(context.Background(), "a0", "")
		if st.TodaySpentUSD > globalDaily+1e-12 || ab.TodaySpentUSD > agentDaily+1e-12 {
			t.Fatalf("round %d: overspent: global %.9f of %.2f, agent a0 %.9f of %.2f", round, st.TodaySpentUSD, globalDaily, ab.TodaySpentUSD, agentDaily)
		}
		if ok.Load()+refused.Load() != 100 || refused.Load() == 0 {
			t.Fatalf("round %d: %d admitted, %d refused", round, ok.Load(), refused.Load())
		}
		// Admission is worst-case, so at least limit/worst calls fit.
		if ok.Load() < int64(globalDaily/worst) {
			t.Fatalf("round %d: only %d admitted; %d fit in the worst case", round, ok.Load(), int(globalDaily/worst))
		}
		if st.Reservations != 0 || st.ReservedUSD != 0 {
			t.Fatalf("round %d: reservations left open: %+v", round, st)
		}
		h.stop()
	}
}

func TestHourlyTokenLimitIsRolling(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	limit := int64(1000)
	h.m.SetBudget(context.Background(), SetBudget{HourlyTokenLimit: &limit})
	if err := h.call(0, 600, ev("a", "m", 300, 300, 0)); err != nil {
		t.Fatal(err)
	}
	if err := h.call(0, 500, ev("a", "m", 1, 1, 0)); kernel.AsError(err) == nil || kernel.AsError(err).Code != "budget_exceeded" {
		t.Fatalf("600 used + 500 reserved > 1000 must be refused: %v", err)
	}
	h.clk.Advance(30 * time.Minute)
	if err := h.call(0, 500, ev("a", "m", 1, 1, 0)); err == nil {
		t.Fatal("30 minutes later the tokens still count")
	}
	h.clk.Advance(31 * time.Minute)
	if err := h.call(0, 500, ev("a", "m", 1, 1, 0)); err != nil {
		t.Fatalf("61 minutes later the window has rolled: %v", err)
	}
	if sum, _ := h.m.Summary(context.Background()); sum.Quota.HourlyTokensUsed != 2 || sum.Quota.HourlyTokenLimit != 1000 {
		t.Fatalf("quota %+v", sum.Quota)
	}
}

func TestBadLimitsChangeNothing(t *testing.T) {
	h := newHarness(t, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	ok := 5.0
	h.m.SetBudget(context.Background(), SetBudget{DailyLimitUSD: &ok})
	neg, nan, inf, big, thr := -1.0, math.NaN(), math.Inf(1), 2e9, 1.5
	negTok := int64(-1)
	for _, s := range []SetBudget{{DailyLimitUSD: &neg}, {MonthlyLimitUSD: &nan}, {DailyLimitUSD: &inf},
		{DailyLimitUSD: &big}, {AlertThreshold: &thr}, {HourlyTokenLimit: &negTok}, {DailyLimitUSD: &ok, MonthlyLimitUSD: &neg}} {
		if _, err := h.m.SetBudget(context.Background(), s); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Fatalf("%+v accepted: %v", s, err)
		}
	}
	if _, err := h.m.SetAgentBudget(context.Background(), SetAgentBudget{AgentID: "a", MonthlyLimitUSD: &neg}); err == nil {
		t.Fatal("negative agent limit accepted")
	}
	h.restart()
	st, _ := h.m.Budget(context.Background())
	if st.DailyLimitUSD != 5 || st.MonthlyLimitUSD != 0 || st.AlertThreshold != DefaultAlertThreshold {
		t.Fatalf("a refused change leaked: %+v", st)
	}
}

func TestSeededHistoryAndRetention(t *testing.T) {
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	db, err := store.Open(store.DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var evs []Event
	for d := 0; d < 400; d++ {
		e := ev("old", "m", 10, 1, 0.001)
		e.Time = now.Add(-time.Duration(d) * 24 * time.Hour).Add(-time.Hour)
		evs = append(evs, e)
	}
	if err := Seed(db, evs); err != nil {
		t.Fatal(err)
	}
	k := kernel.New(zerolog.Nop())
	defer k.Shutdown(context.Background())
	m, err := Start(k, db, nil, Options{Now: func() time.Time { return now }, Retention: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := m.Daily(context.Background(), 366)
	for _, row := range d.Days {
		if row.Requests != 1 {
			t.Fatalf("day %s: %+v", row.Date, row)
		}
	}
	if rep, _ := m.Usage(context.Background(), "month"); rep.RequestCount != 15 {
		t.Fatalf("march 1-15: %+v", rep)
	}
	// The retention pass runs at start: raw events older than 30 days go,
	// the roll-ups (and so the reports) stay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		db.View(func(tx *store.Txn) error {
			return tx.Iterate([]byte(pEvent), nil, false, func(_, _ []byte) (bool, error) { n++; return true, nil })
		})
		if n == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d raw events left, want 30", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d2, _ := m.Daily(context.Background(), 366); d2.Days[0].Requests != 1 {
		t.Fatal("retention changed the roll-ups")
	}
}

func TestHandEncodersMatchJSON(t *testing.T) {
	e := Event{Time: time.Date(2026, 3, 15, 12, 0, 0, 123456789, time.UTC), AgentID: "a\"b\\c\n", AgentName: "名前\x01",
		SessionID: "s", Provider: "p", Model: "m/x", InputTokens: 1, CachedInputTokens: 2, CacheWriteTokens: 3,
		OutputTokens: 4, CostNanos: 5, LatencyMS: 6, Outcome: "ok", PricingKnown: true, UsageEstimated: true}
	var back Event
	if err := json.Unmarshal(encodeEvent(&e), &back); err != nil || back != e {
		t.Fatalf("event round trip: %v\n%+v\n%+v", err, back, e)
	}
	a := agentTotal{Name: "x\"y", Counters: Counters{1, 2, 3, 4, 5, 6}}
	raw, _ := json.Marshal(&a)
	var a2 agentTotal
	if err := json.Unmarshal(raw, &a2); err != nil || a2 != a {
		t.Fatalf("agent total round trip %s: %v %+v", raw, err, a2)
	}
}

func TestAppendDate(t *testing.T) {
	for _, d := range []time.Time{time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), time.Date(1999, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2028, 2, 29, 1, 0, 0, 0, time.UTC)} {
		if got, want := string(appendDate(nil, dayOf(d))), d.Format("2006-01-02"); got != want {
			t.Fatalf("%s != %s", got, want)
		}
	}
}

func TestDailyJSONMatchesEncodingJSON(t *testing.T) {
	first := "2026-01-02"
	d := &Daily{Days: []DayUsage{{Date: "2026-01-02", InputTokens: 5, OutputTokens: 6, CostUSD: 0.000000123, Requests: 2}, {Date: "2026-01-03"}},
		TodayCostUSD: 1.5, FirstEventDate: &first}
	type plain Daily // no MarshalJSON
	for _, v := range []*Daily{d, {Days: []DayUsage{}}} {
		got, _ := json.Marshal(v)
		want, _ := json.Marshal((*plain)(v))
		var a, b any
		json.Unmarshal(got, &a)
		json.Unmarshal(want, &b)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("\n%s\n%s", got, want)
		}
	}
}

// The batch encoder builds keys by hand into one buffer; they must be the
// stored layout the loader reads back, or a restart would lose roll-ups.
func TestBatchKeysMatchStoredLayout(t *testing.T) {
	mk := modelKey{"groq", "llama/3"}
	c := &Counters{1, 2, 3, 4, 5, 6}
	a := &agentTotal{Name: "n", Counters: *c}
	cases := []struct {
		dk   dirtyKey
		want []byte
	}{
		{dirtyKey{kind: 'd', day: 20500}, dayKey(20500)},
		{dirtyKey{kind: 'h', hour: 492001}, hourKey(492001)},
		{dirtyKey{kind: 'M', day: 20500, s1: mk.provider, s2: mk.model}, dayModelKey(20500, mk)},
		{dirtyKey{kind: 'A', day: 20500, s1: "agent-1"}, dayAgentKey(20500, "agent-1")},
		{dirtyKey{kind: 'm', s1: mk.provider, s2: mk.model}, modelTotalKey(mk)},
		{dirtyKey{kind: 'a', s1: "agent-1"}, agentTotalKey("agent-1")},
		{dirtyKey{kind: 'x', s1: pAlert + "k"}, []byte(pAlert + "k")},
	}
	for _, tc := range cases {
		var v any = c
		if tc.dk.kind == 'a' {
			v = a
		}
		pairs := encodeBatch(dirtySet{tc.dk: v}, nil)
		if len(pairs) != 1 || string(pairs[0].key) != string(tc.want) {
			t.Fatalf("%c: key %q, want %q", tc.dk.kind, pairs[0].key, tc.want)
		}
		want, _ := json.Marshal(v)
		if string(pairs[0].val) != string(want) {
			t.Fatalf("%c: value %s, want %s", tc.dk.kind, pairs[0].val, want)
		}
	}
	e := Event{Time: time.Unix(0, 1234567890123).UTC(), AgentID: "a", Provider: "p", Model: "m", Outcome: "ok"}
	pairs := encodeBatch(dirtySet{{kind: 'x', s1: "del"}: nil}, []settleWaiter{{event: e}})
	if len(pairs) != 2 || !pairs[0].del || string(pairs[1].key) != string(eventKey(e.Time.UnixNano())) ||
		string(pairs[1].val) != string(appendEventBinary(nil, &e)) {
		t.Fatalf("deletion and event: %+v", pairs)
	}
}

// Events are stored in the binary format now and were JSON before: both
// must read back to the same event, and damaged values must be refused.
func TestEventEncodingsRoundTrip(t *testing.T) {
	e := Event{Time: time.Date(2026, 3, 15, 12, 0, 0, 123456789, time.UTC), AgentID: "a\"b\\c\n", AgentName: "名前\x01",
		SessionID: "s", Provider: "p", Model: "m/x", InputTokens: 1, CachedInputTokens: 2, CacheWriteTokens: 3,
		OutputTokens: 4, CostNanos: -5, LatencyMS: 1 << 40, Outcome: "ok", PricingKnown: true, UsageEstimated: true}
	for name, raw := range map[string][]byte{"binary": appendEventBinary(nil, &e), "json": encodeEvent(&e)} {
		var back Event
		if err := decodeEvent(raw, &back); err != nil || back != e {
			t.Fatalf("%s: %v\n%+v\n%+v", name, err, back, e)
		}
	}
	bin := appendEventBinary(nil, &e)
	if len(bin) >= len(encodeEvent(&e))/2 {
		t.Fatalf("binary event is %d bytes, JSON %d", len(bin), len(encodeEvent(&e)))
	}
	for _, raw := range [][]byte{nil, {9}, bin[:len(bin)-1], bin[:5], append(append([]byte{}, bin...), 0)} {
		var back Event
		if decodeEvent(raw, &back) == nil {
			t.Fatalf("decoded damaged event %x", raw)
		}
	}
}
