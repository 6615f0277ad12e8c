package usage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fangd/fangd/store"
)

// Storage layout. Roll-ups are absolute counters rewritten whenever an
// event changes them, in the same synced transaction as the event, so
// reading any period costs a few map lookups, never a scan of events.
//
//	usage/e/<unix nanos BE8>                    raw event (binary, see appendEventBinary; older ones JSON), deleted after retention
//	usage/h/<unix hour BE8>                     Counters per UTC hour
//	usage/d/<day BE4>                           Counters per UTC day (days since 1970-01-01)
//	usage/dm/<day BE4><provider>\x00<model>     Counters per day and model
//	usage/da/<day BE4><agent id>                Counters per day and agent
//	usage/m/<provider>\x00<model>               lifetime Counters per model
//	usage/a/<agent id>                          lifetime agentTotal
//	usage/budget/global                         Limits
//	usage/budget/agent/<agent id>               AgentLimits
//	usage/alert/<kind>|<scope>|<limit>|<window> alert already raised in that window
const (
	pEvent      = "usage/e/"
	pHour       = "usage/h/"
	pDay        = "usage/d/"
	pDayModel   = "usage/dm/"
	pDayAgent   = "usage/da/"
	pModel      = "usage/m/"
	pAgent      = "usage/a/"
	kBudget     = "usage/budget/global"
	pAgentLimit = "usage/budget/agent/"
	pAlert      = "usage/alert/"
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

// minuteBucket holds one minute of the rolling hour.
type minuteBucket struct {
	minute int64 // unix minute; buckets whose minute is out of the window are stale
	Counters
	agents map[string]struct{}
	models map[modelKey]*Counters
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
	minutes   [bucketMinutes]minuteBucket
	firstDay  int32 // earliest day with usage; noDay when none
	lastNanos int64 // time key of the newest event
	loadedDay int32 // day maps are complete from this day on
	loadedHr  int64
	// month-to-date totals, see month()
	monthDay   int32
	monthFirst int32
	monthCost  int64
	agentMonth map[string]int64
}

const noDay = int32(-1 << 31)

func newRollups() *rollups {
	return &rollups{
		days: map[int32]*Counters{}, hours: map[int64]*Counters{},
		dayModels: map[int32]map[modelKey]*Counters{}, dayAgents: map[int32]map[string]*Counters{},
		models: map[modelKey]*Counters{}, agents: map[string]*agentTotal{}, firstDay: noDay,
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

func be4(d int32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, uint32(d)); return b }
func be8(v int64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, uint64(v)); return b }

func eventKey(nanos int64) []byte { return append([]byte(pEvent), be8(nanos)...) }
func hourKey(h int64) []byte      { return append([]byte(pHour), be8(h)...) }
func dayKey(d int32) []byte       { return append([]byte(pDay), be4(d)...) }
func modelKeyBytes(k modelKey) []byte {
	return []byte(k.provider + "\x00" + k.model)
}
func dayModelKey(d int32, k modelKey) []byte {
	return append(append([]byte(pDayModel), be4(d)...), modelKeyBytes(k)...)
}
func dayAgentKey(d int32, agent string) []byte {
	return append(append([]byte(pDayAgent), be4(d)...), agent...)
}
func modelTotalKey(k modelKey) []byte { return append([]byte(pModel), modelKeyBytes(k)...) }
func agentTotalKey(a string) []byte   { return []byte(pAgent + a) }

func parseModelKey(b []byte) (modelKey, error) {
	for i, c := range b {
		if c == 0 {
			return modelKey{string(b[:i]), string(b[i+1:])}, nil
		}
	}
	return modelKey{}, fmt.Errorf("model roll-up key %q has no separator", b)
}

// dirtyKey names a stored roll-up an event changed. Keys are built as
// bytes only when a batch is flushed, so the per-event path allocates none.
type dirtyKey struct {
	kind byte // 'd' day, 'h' hour, 'M' day+model, 'A' day+agent, 'm' model, 'a' agent, 'x' raw key in s1
	day  int32
	hour int64
	s1   string
	s2   string
}

// appendTo appends the stored key k names (the layout at the top).
func (k dirtyKey) appendTo(b []byte) []byte {
	switch k.kind {
	case 'd':
		return binary.BigEndian.AppendUint32(append(b, pDay...), uint32(k.day))
	case 'h':
		return binary.BigEndian.AppendUint64(append(b, pHour...), uint64(k.hour))
	case 'M':
		b = binary.BigEndian.AppendUint32(append(b, pDayModel...), uint32(k.day))
		return append(append(append(b, k.s1...), 0), k.s2...)
	case 'A':
		return append(binary.BigEndian.AppendUint32(append(b, pDayAgent...), uint32(k.day)), k.s1...)
	case 'm':
		return append(append(append(append(b, pModel...), k.s1...), 0), k.s2...)
	case 'a':
		return append(append(b, pAgent...), k.s1...)
	}
	return append(b, k.s1...)
}

// dirtySet collects the stored keys events changed, with the value to
// write (encoded when the batch is flushed; nil deletes).
type dirtySet map[dirtyKey]any

// apply adds e to every roll-up and records in dirty what must be written.
func (r *rollups) apply(e *Event, dirty dirtySet) {
	t := e.Time
	d, h, mi := dayOf(t), hourOf(t), minuteOf(t)
	mk := modelKey{e.Provider, e.Model}

	day := r.days[d]
	if day == nil {
		day = &Counters{}
		r.days[d] = day
	}
	day.add(e)
	dirty[dirtyKey{kind: 'd', day: d}] = day

	hr := r.hours[h]
	if hr == nil {
		hr = &Counters{}
		r.hours[h] = hr
	}
	hr.add(e)
	dirty[dirtyKey{kind: 'h', hour: h}] = hr

	dm := r.dayModels[d]
	if dm == nil {
		dm = map[modelKey]*Counters{}
		r.dayModels[d] = dm
	}
	c := dm[mk]
	if c == nil {
		c = &Counters{}
		dm[mk] = c
	}
	c.add(e)
	dirty[dirtyKey{kind: 'M', day: d, s1: mk.provider, s2: mk.model}] = c

	da := r.dayAgents[d]
	if da == nil {
		da = map[string]*Counters{}
		r.dayAgents[d] = da
	}
	c = da[e.AgentID]
	if c == nil {
		c = &Counters{}
		da[e.AgentID] = c
	}
	c.add(e)
	dirty[dirtyKey{kind: 'A', day: d, s1: e.AgentID}] = c

	m := r.models[mk]
	if m == nil {
		m = &Counters{}
		r.models[mk] = m
	}
	m.add(e)
	dirty[dirtyKey{kind: 'm', s1: mk.provider, s2: mk.model}] = m

	a := r.agents[e.AgentID]
	if a == nil {
		a = &agentTotal{}
		r.agents[e.AgentID] = a
	}
	if e.AgentName != "" {
		a.Name = e.AgentName
	}
	a.add(e)
	dirty[dirtyKey{kind: 'a', s1: e.AgentID}] = a

	b := r.bucket(mi)
	b.add(e)
	b.agents[e.AgentID] = struct{}{}
	bm := b.models[mk]
	if bm == nil {
		bm = &Counters{}
		b.models[mk] = bm
	}
	bm.add(e)

	if r.firstDay == noDay || d < r.firstDay {
		r.firstDay = d
	}
	if r.monthFirst != 0 && d >= r.monthFirst {
		r.monthCost += e.CostNanos
		r.agentMonth[e.AgentID] += e.CostNanos
	}
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
		r.agentMonth = map[string]int64{}
		for d := first; d <= today; d++ {
			for a, c := range r.dayAgents[d] {
				r.agentMonth[a] += c.CostNanos
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

// bucket returns minute mi's bucket, clearing it if it held an older minute.
func (r *rollups) bucket(mi int64) *minuteBucket {
	b := &r.minutes[mi%bucketMinutes]
	if b.minute != mi {
		*b = minuteBucket{minute: mi, agents: map[string]struct{}{}, models: map[modelKey]*Counters{}}
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

func (r *rollups) agentRange(agent string, from, to int32) int64 {
	var n int64
	for d := from; d <= to; d++ {
		if c := r.dayAgents[d][agent]; c != nil {
			n += c.CostNanos
		}
	}
	return n
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
	for d := range r.days {
		if d < keepDay {
			delete(r.days, d)
		}
	}
	for d := range r.dayModels {
		if d < keepDetail {
			delete(r.dayModels, d)
		}
	}
	for d := range r.dayAgents {
		if d < keepDetail {
			delete(r.dayAgents, d)
		}
	}
	for h := range r.hours {
		if h < keepHour {
			delete(r.hours, h)
		}
	}
	r.loadedDay, r.loadedHr = keepDay, keepHour
}

// loadWindows are the first day of day counters (400 days back, for
// /api/usage/daily?days=366), the first day of per-day model and agent
// counters (the start of last month), and the first hour kept.
func loadWindows(now time.Time) (day, detail int32, hour int64) {
	now = now.UTC()
	prev := time.Date(now.Year(), now.Month()-1, 1, 0, 0, 0, 0, time.UTC)
	return dayOf(now) - 400, dayOf(prev), hourOf(now) - 48
}

// loadRollups reads the roll-ups of the windows around now (everything
// when all is set, as Seed needs) and the rolling hour from raw events.
func loadRollups(db *store.DB, now time.Time, all bool) (*rollups, error) {
	r := newRollups()
	fromDay, fromDetail, fromHour := loadWindows(now)
	if all {
		fromDay, fromDetail, fromHour = 0, 0, 0
	}
	r.loadedDay, r.loadedHr = fromDay, fromHour
	err := db.View(func(tx *store.Txn) error {
		dec := func(raw []byte, v any) error { return json.Unmarshal(raw, v) }
		steps := []struct {
			prefix, start string
			fn            func(k, v []byte) error
		}{
			{pDay, string(dayKey(max(fromDay, 0))), func(k, v []byte) error {
				c := &Counters{}
				d := int32(binary.BigEndian.Uint32(k[len(pDay):]))
				r.days[d] = c
				return dec(v, c)
			}},
			{pHour, string(hourKey(max(fromHour, 0))), func(k, v []byte) error {
				c := &Counters{}
				r.hours[int64(binary.BigEndian.Uint64(k[len(pHour):]))] = c
				return dec(v, c)
			}},
			{pDayModel, string(append([]byte(pDayModel), be4(max(fromDetail, 0))...)), func(k, v []byte) error {
				d := int32(binary.BigEndian.Uint32(k[len(pDayModel):]))
				mk, err := parseModelKey(k[len(pDayModel)+4:])
				if err != nil {
					return err
				}
				if r.dayModels[d] == nil {
					r.dayModels[d] = map[modelKey]*Counters{}
				}
				c := &Counters{}
				r.dayModels[d][mk] = c
				return dec(v, c)
			}},
			{pDayAgent, string(append([]byte(pDayAgent), be4(max(fromDetail, 0))...)), func(k, v []byte) error {
				d := int32(binary.BigEndian.Uint32(k[len(pDayAgent):]))
				if r.dayAgents[d] == nil {
					r.dayAgents[d] = map[string]*Counters{}
				}
				c := &Counters{}
				r.dayAgents[d][string(k[len(pDayAgent)+4:])] = c
				return dec(v, c)
			}},
			{pModel, pModel, func(k, v []byte) error {
				mk, err := parseModelKey(k[len(pModel):])
				if err != nil {
					return err
				}
				c := &Counters{}
				r.models[mk] = c
				return dec(v, c)
			}},
			{pAgent, pAgent, func(k, v []byte) error {
				a := &agentTotal{}
				r.agents[string(k[len(pAgent):])] = a
				return dec(v, a)
			}},
		}
		for _, s := range steps {
			err := tx.Iterate([]byte(s.prefix), []byte(s.start), false, func(k, v []byte) (bool, error) {
				if err := s.fn(k, v); err != nil {
					return false, fmt.Errorf("usage roll-up %q: %w", k, err)
				}
				return true, nil
			})
			if err != nil {
				return err
			}
		}
		// The first day with usage, for first_event_date.
		if err := tx.Iterate([]byte(pDay), nil, false, func(k, _ []byte) (bool, error) {
			r.firstDay = int32(binary.BigEndian.Uint32(k[len(pDay):]))
			return false, nil
		}); err != nil {
			return err
		}
		// The newest event's time key keeps event keys increasing.
		if err := tx.Iterate([]byte(pEvent), nil, true, func(k, _ []byte) (bool, error) {
			r.lastNanos = int64(binary.BigEndian.Uint64(k[len(pEvent):]))
			return false, nil
		}); err != nil {
			return err
		}
		// The rolling hour is rebuilt from the raw events of its minutes.
		from := eventKey(now.Add(-bucketMinutes * time.Minute).Truncate(time.Minute).UnixNano())
		return tx.Iterate([]byte(pEvent), from, false, func(_, v []byte) (bool, error) {
			var e Event
			if err := decodeEvent(v, &e); err != nil {
				return false, fmt.Errorf("usage event: %w", err)
			}
			b := r.bucket(minuteOf(e.Time))
			b.add(&e)
			b.agents[e.AgentID] = struct{}{}
			mk := modelKey{e.Provider, e.Model}
			if b.models[mk] == nil {
				b.models[mk] = &Counters{}
			}
			b.models[mk].add(&e)
			return true, nil
		})
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return r, nil
}

// encodeBatch turns a dirty set and the events of waiters into key/value
// pairs to store, all in one buffer (one allocation per batch, not one per
// key and value).
func encodeBatch(dirty dirtySet, waiters []settleWaiter) []kv {
	out := make([]kv, 0, len(dirty)+len(waiters))
	buf := make([]byte, 0, len(dirty)*112+len(waiters)*360)
	for dk, v := range dirty {
		start := len(buf)
		buf = dk.appendTo(buf)
		p := kv{key: buf[start:len(buf):len(buf)]}
		start = len(buf)
		switch x := v.(type) {
		case []byte:
			buf = append(buf, x...)
		case *Counters:
			buf = x.appendJSON(buf)
		case *agentTotal:
			buf = x.appendJSON(buf)
		case nil:
			p.del = true
		default:
			panic(fmt.Sprintf("usage: no encoding for roll-up value %T", v))
		}
		if !p.del {
			p.val = buf[start:len(buf):len(buf)]
		}
		out = append(out, p)
	}
	for i := range waiters {
		e := &waiters[i].event
		start := len(buf)
		buf = append(buf, pEvent...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
		p := kv{key: buf[start:len(buf):len(buf)]}
		start = len(buf)
		buf = appendEventBinary(buf, e)
		p.val = buf[start:len(buf):len(buf)]
		out = append(out, p)
	}
	return out
}

type kv struct {
	key, val []byte
	del      bool
}

// writeKVs stores pairs in one synced transaction.
func writeKVs(db *store.DB, pairs []kv) error {
	return db.Update(func(tx *store.Txn) error { return setKVs(tx, pairs) })
}

func setKVs(tx *store.Txn, pairs []kv) error {
	for _, p := range pairs {
		var err error
		if p.del {
			err = tx.Delete(p.key)
		} else {
			err = tx.Set(p.key, p.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// The hot path encodes by hand: encoding/json's reflection and time
// formatting were most of the ledger's CPU per event.

// MarshalJSON encodes counters with their stored field names.
func (c *Counters) MarshalJSON() ([]byte, error) { return c.appendJSON(make([]byte, 0, 96)), nil }

func (c *Counters) appendJSON(b []byte) []byte {
	return append(c.appendFields(append(b, '{')), '}')
}

func (c *Counters) appendFields(b []byte) []byte {
	b = append(b, `"in":`...)
	b = strconv.AppendInt(b, c.InputTokens, 10)
	b = append(b, `,"cached":`...)
	b = strconv.AppendInt(b, c.CachedInputTokens, 10)
	b = append(b, `,"out":`...)
	b = strconv.AppendInt(b, c.OutputTokens, 10)
	b = append(b, `,"cost":`...)
	b = strconv.AppendInt(b, c.CostNanos, 10)
	b = append(b, `,"req":`...)
	b = strconv.AppendInt(b, c.Requests, 10)
	b = append(b, `,"failed":`...)
	return strconv.AppendInt(b, c.Failed, 10)
}

// MarshalJSON encodes an agent's total (name and counters, flat).
func (a *agentTotal) MarshalJSON() ([]byte, error) { return a.appendJSON(make([]byte, 0, 128)), nil }

func (a *agentTotal) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = store.AppendJSONString(b, a.Name)
	b = append(b, ',')
	return append(a.Counters.appendFields(b), '}')
}

// encodeEvent is json.Marshal(e) without reflection; json.Unmarshal reads
// it back into an Event.
func encodeEvent(e *Event) []byte { return appendEvent(make([]byte, 0, 320), e) }

func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"ts":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","agent_id":`...)
	b = store.AppendJSONString(b, e.AgentID)
	b = append(b, `,"agent_name":`...)
	b = store.AppendJSONString(b, e.AgentName)
	if e.SessionID != "" {
		b = append(b, `,"session_id":`...)
		b = store.AppendJSONString(b, e.SessionID)
	}
	b = append(b, `,"provider":`...)
	b = store.AppendJSONString(b, e.Provider)
	b = append(b, `,"model":`...)
	b = store.AppendJSONString(b, e.Model)
	for _, f := range []struct {
		name string
		v    int64
	}{{"input_tokens", e.InputTokens}, {"cached_input_tokens", e.CachedInputTokens}, {"cache_write_tokens", e.CacheWriteTokens},
		{"output_tokens", e.OutputTokens}, {"cost_nanos", e.CostNanos}, {"latency_ms", e.LatencyMS}} {
		b = append(b, ',', '"')
		b = append(b, f.name...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, f.v, 10)
	}
	b = append(b, `,"outcome":`...)
	b = store.AppendJSONString(b, e.Outcome)
	b = append(b, `,"pricing_known":`...)
	b = strconv.AppendBool(b, e.PricingKnown)
	if e.UsageEstimated {
		b = append(b, `,"usage_estimated":true`...)
	}
	return append(b, '}')
}

// eventFormatBinary is the first byte of a binary-encoded event. Events
// were stored as JSON (first byte '{') before; decodeEvent reads both.
const eventFormatBinary = 1

// appendEventBinary encodes e compactly: the format byte, the time (unix
// nanos), the strings length-prefixed, the counts as varints, and a flags
// byte. A third of the JSON's size: the event is most of the bytes a
// settlement writes, and Badger's cost (WAL, memtable, flushes,
// compaction) grows with bytes.
func appendEventBinary(b []byte, e *Event) []byte {
	b = append(b, eventFormatBinary)
	b = binary.AppendVarint(b, e.Time.UnixNano())
	for _, s := range [...]string{e.AgentID, e.AgentName, e.SessionID, e.Provider, e.Model, e.Outcome} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, v := range [...]int64{e.InputTokens, e.CachedInputTokens, e.CacheWriteTokens, e.OutputTokens, e.CostNanos, e.LatencyMS} {
		b = binary.AppendVarint(b, v)
	}
	var flags byte
	if e.PricingKnown {
		flags |= 1
	}
	if e.UsageEstimated {
		flags |= 2
	}
	return append(b, flags)
}

// decodeEvent reads a stored event in either format.
func decodeEvent(raw []byte, e *Event) error {
	if len(raw) > 0 && raw[0] == '{' {
		return json.Unmarshal(raw, e)
	}
	if len(raw) == 0 || raw[0] != eventFormatBinary {
		return errors.New("unknown event encoding")
	}
	b := raw[1:]
	bad := errors.New("truncated binary event")
	varint := func() (int64, bool) {
		v, n := binary.Varint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	nanos, ok := varint()
	if !ok {
		return bad
	}
	e.Time = time.Unix(0, nanos).UTC()
	for _, dst := range [...]*string{&e.AgentID, &e.AgentName, &e.SessionID, &e.Provider, &e.Model, &e.Outcome} {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return bad
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	for _, dst := range [...]*int64{&e.InputTokens, &e.CachedInputTokens, &e.CacheWriteTokens, &e.OutputTokens, &e.CostNanos, &e.LatencyMS} {
		if *dst, ok = varint(); !ok {
			return bad
		}
	}
	if len(b) != 1 {
		return bad
	}
	e.PricingKnown, e.UsageEstimated = b[0]&1 != 0, b[0]&2 != 0
	return nil
}
