package usage

import (
	"fmt"
	"sort"
	"time"

	"github.com/fangd/fangd/store"
)

// Seed writes events and the roll-ups they change straight to db: for
// benchmarks and tests that need history (a year of usage, a million
// events), and for importing usage from elsewhere. No ledger may be running
// on db while it does. Each event keeps its Time (nanoseconds that collide
// are moved forward by one).
func Seed(db *store.DB, events []Event) error {
	r, err := loadRollups(db, time.Now(), true)
	if err != nil {
		return err
	}
	events = append([]Event(nil), events...)
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
	const chunk = 2000
	dirty := dirtySet{}
	batch := make([]kv, 0, chunk)
	last := int64(0)
	for i := range events {
		e := events[i]
		n := max(e.Time.UnixNano(), last+1)
		last = n
		e.Time = time.Unix(0, n).UTC()
		if e.Outcome == "" {
			e.Outcome = "ok"
		}
		raw := appendEventBinary(nil, &e)
		r.apply(&e, dirty)
		batch = append(batch, kv{key: eventKey(n), val: raw})
		if len(batch) == chunk {
			if err := writeKVs(db, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	batch = append(batch, encodeBatch(dirty, nil)...)
	for len(batch) > 0 {
		n := min(len(batch), chunk)
		if err := writeKVs(db, batch[:n]); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// SeedBench writes n synthetic usage events spread evenly over the 366
// days before now, across 100 agents and 8 models, straight to db (see
// Seed): the history the benchmarks and `make bench` query.
func SeedBench(db *store.DB, n int, now time.Time) error {
	const batch = 100_000
	span := 366 * 24 * time.Hour
	for done := 0; done < n; done += batch {
		evs := make([]Event, 0, min(batch, n-done))
		for i := done; i < n && i < done+batch; i++ {
			evs = append(evs, Event{
				Time:    now.Add(-span + time.Duration(int64(span)/int64(n)*int64(i))),
				AgentID: fmt.Sprintf("agent-%03d", i%100), AgentName: fmt.Sprintf("agent %d", i%100),
				Provider: "groq", Model: fmt.Sprintf("model-%d", i%8),
				InputTokens: 1000, CachedInputTokens: 100, OutputTokens: 200, CostNanos: 750_000, LatencyMS: 420, Outcome: "ok",
			})
		}
		if err := Seed(db, evs); err != nil {
			return err
		}
	}
	return nil
}
