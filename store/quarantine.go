package store

import (
	"encoding/json"
	"fmt"
)

// quarantinePrefix holds records moved aside because they do not decode:
// quarantine/<original key>, the value kept byte for byte for an operator
// to inspect or repair.
var quarantinePrefix = []byte("quarantine/")

// Quarantined is one record moved aside.
type Quarantined struct {
	Key   string `json:"key"`   // where it was
	Error string `json:"error"` // why it could not be used
}

// EachOrQuarantine is Each for start-up loads: a record that does not
// decode does not stop the load (one bad record would keep a whole
// supervisor, and its API, down on every start); it is moved to
// quarantine/<key> in one transaction, after the walk, reported to the
// store's OnQuarantine hook (the daemon logs and audits it) and returned.
// fn sees every record that decodes.
func (c *Collection[T]) EachOrQuarantine(fn func(id string, v T) bool) ([]Quarantined, error) {
	var bad []badRecord
	err := c.db.View(func(tx *Txn) error {
		return tx.Iterate(c.prefix, nil, false, func(k, raw []byte) (bool, error) {
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				bad = append(bad, badRecord{key: k, raw: raw, err: err})
				return true, nil
			}
			return fn(string(k[len(c.prefix):]), v), nil
		})
	})
	if err != nil || len(bad) == 0 {
		return nil, err
	}
	return c.db.quarantine(bad)
}

// QuarantineRaw moves the records ids of the collection aside, for loads
// that decode records themselves (EachRaw); why says what was wrong.
func (c *Collection[T]) QuarantineRaw(ids []string, why error) ([]Quarantined, error) {
	var bad []badRecord
	err := c.db.View(func(tx *Txn) error {
		for _, id := range ids {
			raw, err := tx.Get(c.key(id))
			if err != nil {
				return err
			}
			bad = append(bad, badRecord{key: c.key(id), raw: raw, err: why})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c.db.quarantine(bad)
}

type badRecord struct {
	key, raw []byte
	err      error
}

func (db *DB) quarantine(bad []badRecord) ([]Quarantined, error) {
	out := make([]Quarantined, 0, len(bad))
	err := db.Update(func(tx *Txn) error {
		for _, b := range bad {
			if err := tx.Set(append(append([]byte(nil), quarantinePrefix...), b.key...), b.raw); err != nil {
				return err
			}
			if err := tx.Delete(b.key); err != nil {
				return err
			}
			out = append(out, Quarantined{Key: string(b.key), Error: b.err.Error()})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("quarantine %d undecodable records: %w", len(bad), err)
	}
	if h, _ := db.onQuarantine.Load().(func([]Quarantined)); h != nil {
		h(out)
	}
	return out, nil
}

// OnQuarantine sets what is told of every record moved aside: the daemon
// logs and audits it. It must not block.
func (db *DB) OnQuarantine(h func([]Quarantined)) { db.onQuarantine.Store(h) }

// QuarantinedKeys lists the original keys of quarantined records, up to
// limit, and how many there are in all.
func (db *DB) QuarantinedKeys(limit int) (keys []string, total int, err error) {
	err = db.View(func(tx *Txn) error {
		return tx.Scan(quarantinePrefix, func(k, _ []byte) (bool, error) {
			if len(keys) < limit {
				keys = append(keys, string(k[len(quarantinePrefix):]))
			}
			total++
			return true, nil
		})
	})
	return keys, total, err
}
