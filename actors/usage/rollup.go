package usage

// This file is the in-memory roll-ups: what an event adds to, and the
// windows budget checks and reports read.

import (
	"time"
)

// Counters are the additive totals every roll-up keeps.
type Counters struct {
	InputTokens       int64 `json:"in"`
	CachedInputTokens int64 `json:"cached"`
	OutputTokens      int64 `json:"out"`
	CostNanos         int64 `json:"cost"`
	Requests          int64 `json:"req"`
	Failed            int64 `json:"failed"`
}

func (c *Counters) add(e *Event) {
	c.InputTokens += e.InputTokens
	c.CachedInputTokens += e.CachedInputTokens
	c.OutputTokens += e.OutputTokens
	c.CostNanos += e.CostNanos
	c.Requests++
	if e.Outcome != "ok" {
		c.Failed++
	}
}

func (c *Counters) plus(o *Counters) {
	if o == nil {
		return
	}
	c.InputTokens += o.InputTokens
	c.CachedInputTokens += o.CachedInputTokens
	c.OutputTokens += o.OutputTokens
	c.CostNanos += o.CostNanos
	c.Requests += o.Requests
	c.Failed += o.Failed
}

// agentTotal is an agent's lifetime counters and its latest name.
type agentTotal struct {
	Name string `json:"name"`
	Counters
}

type modelKey struct{ provider, model string }

const bucketMinutes = 60

// latency is a model's provider latency over every call, in ms.
type latency struct {
	N   int64 `json:"n"`
	Sum int64 `json:"sum"`
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

func (l *latency) add(ms int64) {
	if l.N == 0 || ms < l.Min {
		l.Min = ms
	}
	if ms > l.Max {
		l.Max = ms
	}
	l.N++
	l.Sum += ms
}

// hourUse is one scope's (an agent's, a provider's, a user's) cost and
// tokens within a minute of the rolling hour.
type hourUse struct{ cost, tokens int64 }

func addUse(m map[string]*hourUse, id string, e *Event) {
	u := m[id]
	if u == nil {
		u = &hourUse{}
		m[id] = u
	}
	u.cost += e.CostNanos
	u.tokens += e.InputTokens + e.OutputTokens
}

// minuteBucket holds one minute of the rolling hour.
type minuteBucket struct {
	minute int64 // unix minute; buckets whose minute is out of the window are stale
	Counters
	agents    map[string]*hourUse
	providers map[string]*hourUse
	users     map[string]*hourUse
	models    map[modelKey]*Counters
}

// addEvent counts e into the minute.
func (b *minuteBucket) addEvent(e *Event) {
	b.add(e)
	addUse(b.agents, e.AgentID, e)
	addUse(b.providers, e.Provider, e)
	if e.User != "" {
		addUse(b.users, e.User, e)
	}
	mk := modelKey{e.Provider, e.Model}
	bm := b.models[mk]
	if bm == nil {
		bm = &Counters{}
		b.models[mk] = bm
	}
	bm.add(e)
}

// rollups is the in-memory mirror of the stored roll-ups that queries and
// budget checks read. Days, hours and lifetime totals are loaded for the
// windows the API can ask about; the per-day model and agent maps only
// back to the start of last month, which is as far as a period reaches.
type rollups struct {
	days      map[int32]*Counters
	hours     map[int64]*Counters
	dayModels map[int32]map[modelKey]*Counters
	dayAgents map[int32]map[string]*Counters
	models    map[modelKey]*Counters
	agents    map[string]*agentTotal
	// dayUsers and users count calls made on a user's behalf;
	// dayProviders sums dayModels per provider (memory only).
	dayUsers     map[int32]map[string]*Counters
	users        map[string]*Counters
	dayProviders map[int32]map[string]*Counters
	perf         map[modelKey]*latency
	minutes      [bucketMinutes]minuteBucket
	firstDay     int32 // earliest day with usage; noDay when none
	lastNanos    int64 // time key of the newest event
	loadedDay    int32 // day maps are complete from this day on
	loadedHr     int64
	// month-to-date totals, see month()
	monthDay   int32
	monthFirst int32
	monthCost  int64
	agentMonth map[string]int64
	provMonth  map[string]int64
	userMonth  map[string]int64
}

const noDay = int32(-1 << 31)

func newRollups() *rollups {
	return &rollups{
		days: map[int32]*Counters{}, hours: map[int64]*Counters{},
		dayModels: map[int32]map[modelKey]*Counters{}, dayAgents: map[int32]map[string]*Counters{},
		models: map[modelKey]*Counters{}, agents: map[string]*agentTotal{}, firstDay: noDay,
		dayUsers: map[int32]map[string]*Counters{}, users: map[string]*Counters{},
		dayProviders: map[int32]map[string]*Counters{}, perf: map[modelKey]*latency{},
	}
}

func dayOf(t time.Time) int32    { return int32(t.Unix() / 86400) }
func hourOf(t time.Time) int64   { return t.Unix() / 3600 }
func minuteOf(t time.Time) int64 { return t.Unix() / 60 }
func dayTime(d int32) time.Time  { return time.Unix(int64(d)*86400, 0).UTC() }
func dayString(d int32) string   { return dayTime(d).Format("2006-01-02") }

// monthStart is the first day of t's UTC month.
func monthStart(t time.Time) int32 {
	t = t.UTC()
	return dayOf(time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC))
}

// apply adds e to every roll-up and records in dirty what must be written.
func (r *rollups) apply(e *Event, dirty dirtySet) {
	t := e.Time
	d, h, mi := dayOf(t), hourOf(t), minuteOf(t)
	mk := modelKey{e.Provider, e.Model}

	count := func(c *Counters, k dirtyKey) {
		c.add(e)
		dirty[k] = c
	}
	count(entry(r.days, d), dirtyKey{kind: 'd', day: d})
	count(entry(r.hours, h), dirtyKey{kind: 'h', hour: h})
	count(countIn(r.dayModels, d, mk), dirtyKey{kind: 'M', day: d, s1: mk.provider, s2: mk.model})
	count(countIn(r.dayAgents, d, e.AgentID), dirtyKey{kind: 'A', day: d, s1: e.AgentID})
	count(entry(r.models, mk), dirtyKey{kind: 'm', s1: mk.provider, s2: mk.model})

	a := entry(r.agents, e.AgentID)
	if e.AgentName != "" {
		a.Name = e.AgentName
	}
	a.add(e)
	dirty[dirtyKey{kind: 'a', s1: e.AgentID}] = a

	countIn(r.dayProviders, d, e.Provider).add(e)
	if e.User != "" {
		count(countIn(r.dayUsers, d, e.User), dirtyKey{kind: 'U', day: d, s1: e.User})
		count(entry(r.users, e.User), dirtyKey{kind: 'u', s1: e.User})
	}
	p := entry(r.perf, mk)
	p.add(e.LatencyMS)
	dirty[dirtyKey{kind: 'p', s1: mk.provider, s2: mk.model}] = p

	r.bucket(mi).addEvent(e)

	if r.firstDay == noDay || d < r.firstDay {
		r.firstDay = d
	}
	if r.monthFirst != 0 && d >= r.monthFirst {
		r.monthCost += e.CostNanos
		r.agentMonth[e.AgentID] += e.CostNanos
		r.provMonth[e.Provider] += e.CostNanos
		if e.User != "" {
			r.userMonth[e.User] += e.CostNanos
		}
	}
}

// countIn returns day d's counters for id in m, created if need be.
func countIn[K comparable](m map[int32]map[K]*Counters, d int32, id K) *Counters {
	dm := m[d]
	if dm == nil {
		dm = map[K]*Counters{}
		m[d] = dm
	}
	return entry(dm, id)
}

// entry returns m[k], created (zero) if need be.
func entry[K comparable, V any](m map[K]*V, k K) *V {
	v := m[k]
	if v == nil {
		v = new(V)
		m[k] = v
	}
	return v
}

// month makes the month-to-date totals describe now's month and returns
// its first day. Budget checks read them on every reservation, so they are
// kept running instead of summed over up to 31 days each time.
func (r *rollups) month(now time.Time) int32 {
	today := dayOf(now)
	if today == r.monthDay {
		return r.monthFirst
	}
	first := monthStart(now)
	r.monthDay = today
	if first != r.monthFirst {
		r.monthFirst = first
		r.monthCost = r.costRange(first, today)
		r.agentMonth, r.provMonth, r.userMonth = map[string]int64{}, map[string]int64{}, map[string]int64{}
		for d := first; d <= today; d++ {
			for a, c := range r.dayAgents[d] {
				r.agentMonth[a] += c.CostNanos
			}
			for p, c := range r.dayProviders[d] {
				r.provMonth[p] += c.CostNanos
			}
			for u, c := range r.dayUsers[d] {
				r.userMonth[u] += c.CostNanos
			}
		}
	}
	return first
}

// monthCostNow is this month's spend; agentMonthCost one agent's.
func (r *rollups) monthCostNow(now time.Time) int64 { r.month(now); return r.monthCost }
func (r *rollups) agentMonthCost(agent string, now time.Time) int64 {
	r.month(now)
	return r.agentMonth[agent]
}

// providerMonthCost and userMonthCost are one provider's and one user's
// spend this month.
func (r *rollups) providerMonthCost(p string, now time.Time) int64 {
	r.month(now)
	return r.provMonth[p]
}
func (r *rollups) userMonthCost(u string, now time.Time) int64 {
	r.month(now)
	return r.userMonth[u]
}

// dayCost is one scope's spend on day d: kind 'a' agent, 'p' provider,
// 'u' user.
func (r *rollups) dayCost(kind byte, id string, d int32) int64 {
	var c *Counters
	switch kind {
	case 'a':
		c = r.dayAgents[d][id]
	case 'p':
		c = r.dayProviders[d][id]
	case 'u':
		c = r.dayUsers[d][id]
	}
	if c == nil {
		return 0
	}
	return c.CostNanos
}

// monthCostOf is one scope's spend this month (kinds as dayCost).
func (r *rollups) monthCostOf(kind byte, id string, now time.Time) int64 {
	switch kind {
	case 'a':
		return r.agentMonthCost(id, now)
	case 'p':
		return r.providerMonthCost(id, now)
	case 'u':
		return r.userMonthCost(id, now)
	}
	return r.monthCostNow(now)
}

// hourUse sums the rolling hour ending at now: kind 'g' everything, 'a'
// one agent, 'p' one provider, 'u' one user.
func (r *rollups) hourUse(kind byte, id string, now time.Time) (cost, tokens int64) {
	nm := minuteOf(now)
	for i := range r.minutes {
		b := &r.minutes[i]
		if !b.live(nm) {
			continue
		}
		var m map[string]*hourUse
		switch kind {
		case 'g':
			cost += b.CostNanos
			tokens += b.InputTokens + b.OutputTokens
			continue
		case 'a':
			m = b.agents
		case 'p':
			m = b.providers
		case 'u':
			m = b.users
		}
		if u := m[id]; u != nil {
			cost += u.cost
			tokens += u.tokens
		}
	}
	return cost, tokens
}

// bucket returns minute mi's bucket, clearing it if it held an older minute.
func (r *rollups) bucket(mi int64) *minuteBucket {
	b := &r.minutes[mi%bucketMinutes]
	if b.minute != mi {
		*b = minuteBucket{minute: mi, agents: map[string]*hourUse{}, providers: map[string]*hourUse{},
			users: map[string]*hourUse{}, models: map[modelKey]*Counters{}}
	}
	return b
}

// live reports whether b holds a minute of the rolling hour ending at now.
func (b *minuteBucket) live(nowMinute int64) bool {
	return b.agents != nil && b.minute > nowMinute-bucketMinutes && b.minute <= nowMinute
}

// hourTokens is input+output tokens of the rolling hour, and when the
// oldest of them leaves the window (now when there are none).
func (r *rollups) hourTokens(now time.Time) (int64, time.Time) {
	nm := minuteOf(now)
	var n int64
	oldest := int64(-1)
	for i := range r.minutes {
		b := &r.minutes[i]
		if !b.live(nm) || b.InputTokens+b.OutputTokens == 0 {
			continue
		}
		n += b.InputTokens + b.OutputTokens
		if oldest < 0 || b.minute < oldest {
			oldest = b.minute
		}
	}
	if oldest < 0 {
		return 0, now
	}
	return n, time.Unix((oldest+bucketMinutes)*60, 0).UTC()
}

// dayRange sums day counters over [from, to] and, if asked, counts the
// distinct agents active in it.
func (r *rollups) dayRange(from, to int32, countAgents bool) (Counters, int) {
	var c Counters
	for d := from; d <= to; d++ {
		c.plus(r.days[d])
	}
	if !countAgents {
		return c, 0
	}
	if from == to {
		return c, len(r.dayAgents[from])
	}
	agents := map[string]struct{}{}
	for d := from; d <= to; d++ {
		for a := range r.dayAgents[d] {
			agents[a] = struct{}{}
		}
	}
	return c, len(agents)
}

func (r *rollups) costRange(from, to int32) int64 {
	var n int64
	for d := from; d <= to; d++ {
		if c := r.days[d]; c != nil {
			n += c.CostNanos
		}
	}
	return n
}

// prune forgets in-memory maps older than the loaded windows (the stored
// roll-ups stay).
func (r *rollups) prune(now time.Time) {
	keepDay, keepDetail, keepHour := loadWindows(now)
	dropBefore(r.days, keepDay)
	dropBefore(r.dayModels, keepDetail)
	dropBefore(r.dayAgents, keepDetail)
	dropBefore(r.dayUsers, keepDetail)
	dropBefore(r.dayProviders, keepDetail)
	dropBefore(r.hours, keepHour)
	r.loadedDay, r.loadedHr = keepDay, keepHour
}

// dropBefore deletes m's entries for days (or hours) before keep.
func dropBefore[K int32 | int64, V any](m map[K]V, keep K) {
	for k := range m {
		if k < keep {
			delete(m, k)
		}
	}
}
