package usage

import (
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
		raw := encodeEvent(&e)
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
