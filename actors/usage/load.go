package usage

// This file loads the roll-ups from the store at start (and after a
// failed write).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fangd/fangd/store"
)

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
				if err := dec(v, c); err != nil {
					return err
				}
				countIn(r.dayProviders, d, mk.provider).plus(c)
				return nil
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
			{pDayUser, string(append([]byte(pDayUser), be4(max(fromDetail, 0))...)), func(k, v []byte) error {
				d := int32(binary.BigEndian.Uint32(k[len(pDayUser):]))
				return dec(v, countIn(r.dayUsers, d, string(k[len(pDayUser)+4:])))
			}},
			{pUser, pUser, func(k, v []byte) error {
				c := &Counters{}
				r.users[string(k[len(pUser):])] = c
				return dec(v, c)
			}},
			{pModelPerf, pModelPerf, func(k, v []byte) error {
				mk, err := parseModelKey(k[len(pModelPerf):])
				if err != nil {
					return err
				}
				p := &latency{}
				r.perf[mk] = p
				return dec(v, p)
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
			r.bucket(minuteOf(e.Time)).addEvent(&e)
			return true, nil
		})
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return r, nil
}
