package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Collection is a typed view over the keys under one prefix. Values are JSON.
// Actors own their collections; nothing else writes to their keys.
type Collection[T any] struct {
	db     *DB
	prefix []byte
}

// NewCollection returns the collection named name (its keys are "name/<id>").
func NewCollection[T any](db *DB, name string) *Collection[T] {
	return &Collection[T]{db: db, prefix: []byte(name + "/")}
}

func (c *Collection[T]) key(id string) []byte {
	return append(append(make([]byte, 0, len(c.prefix)+len(id)), c.prefix...), id...)
}

// Get reads one value; ErrNotFound when absent.
func (c *Collection[T]) Get(id string) (T, error) {
	var v T
	err := c.db.View(func(tx *Txn) error {
		raw, err := tx.Get(c.key(id))
		if err != nil {
			return err
		}
		return json.Unmarshal(raw, &v)
	})
	return v, err
}

// Put writes one value durably.
func (c *Collection[T]) Put(id string, v T) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s%s: %w", c.prefix, id, err)
	}
	return c.db.Update(func(tx *Txn) error { return tx.Set(c.key(id), raw) })
}

// PutAsync writes one value without waiting for the sync: it is ordered
// before every write handed to the store after PutAsync returns, and done
// is called from another goroutine once it is durable (or failed).
func (c *Collection[T]) PutAsync(id string, v T, done func(error)) {
	raw, err := json.Marshal(v)
	if err != nil {
		done(fmt.Errorf("encode %s%s: %w", c.prefix, id, err))
		return
	}
	c.db.UpdateAsync(func(tx *Txn) error { return tx.Set(c.key(id), raw) }, done)
}

// DeleteAsync removes one value without waiting for the sync, ordered like
// PutAsync; done is called once it is durable (or failed).
func (c *Collection[T]) DeleteAsync(id string, done func(error)) {
	c.db.UpdateAsync(func(tx *Txn) error { return tx.Delete(c.key(id)) }, done)
}

// LoadLive loads c's entries that are still live into m (conv says what
// to keep of an entry, and whether it is live) and deletes the others with
// async deletes: it runs in an actor's Receive, where no write may wait for
// a sync. The load of a set whose entries expire (sessions, codes).
func LoadLive[T, V any](c *Collection[T], m map[string]V, conv func(v T) (V, bool)) error {
	var stale []string
	if err := c.Each(func(id string, v T) bool {
		if kept, live := conv(v); live {
			m[id] = kept
		} else {
			stale = append(stale, id)
		}
		return true
	}); err != nil {
		return err
	}
	for _, id := range stale {
		c.DeleteAsync(id, func(error) {})
	}
	return nil
}

// Delete removes one value; deleting a missing id is not an error.
func (c *Collection[T]) Delete(id string) error {
	return c.db.Update(func(tx *Txn) error { return tx.Delete(c.key(id)) })
}

// Page is one page of a listing. Next is the id to pass as After for the
// following page, empty at the end.
type Page[T any] struct {
	Items []T
	IDs   []string
	Next  string
}

// List returns up to limit values whose ids start with idPrefix and sort
// after the id after ("" for the first page), in id order.
func (c *Collection[T]) List(idPrefix, after string, limit int) (Page[T], error) {
	var page Page[T]
	if limit <= 0 {
		return page, errors.New("list: limit must be positive")
	}
	prefix := c.key(idPrefix)
	var start []byte
	if after != "" {
		start = append(c.key(after), 0)
	}
	err := c.db.View(func(tx *Txn) error {
		return tx.Iterate(prefix, start, false, func(k, raw []byte) (bool, error) {
			id := string(k[len(c.prefix):])
			if len(page.Items) == limit {
				page.Next = page.IDs[len(page.IDs)-1]
				return false, nil
			}
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				return false, fmt.Errorf("decode %s: %w", k, err)
			}
			page.Items = append(page.Items, v)
			page.IDs = append(page.IDs, id)
			return true, nil
		})
	})
	return page, err
}

// Each visits every value in id order until fn returns false.
func (c *Collection[T]) Each(fn func(id string, v T) bool) error {
	return c.db.View(func(tx *Txn) error {
		return tx.Iterate(c.prefix, nil, false, func(k, raw []byte) (bool, error) {
			var v T
			if err := json.Unmarshal(raw, &v); err != nil {
				return false, fmt.Errorf("decode %s: %w", k, err)
			}
			return fn(string(k[len(c.prefix):]), v), nil
		})
	})
}

// EachRaw visits every value's JSON in id order until fn returns false,
// without decoding it into T and without copying: id and raw are valid
// only until fn returns. For loads that keep a few fields of many records.
func (c *Collection[T]) EachRaw(fn func(id, raw []byte) (bool, error)) error {
	return c.db.View(func(tx *Txn) error {
		return tx.Scan(c.prefix, func(k, raw []byte) (bool, error) { return fn(k[len(c.prefix):], raw) })
	})
}

// DeleteMany removes several values in one synced transaction.
func (c *Collection[T]) DeleteMany(ids []string) error {
	return c.db.Update(func(tx *Txn) error {
		for _, id := range ids {
			if err := tx.Delete(c.key(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutTx writes one value inside tx, so that it commits together with other
// writes.
func (c *Collection[T]) PutTx(tx *Txn, id string, v T) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s%s: %w", c.prefix, id, err)
	}
	return tx.Set(c.key(id), raw)
}

// DeleteTx removes one value inside tx.
func (c *Collection[T]) DeleteTx(tx *Txn, id string) error { return tx.Delete(c.key(id)) }
