package store

import (
	"encoding/binary"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// SeqLog is an ordered log of raw values keyed by a uint64 sequence number
// under one prefix (key = "name/" + 8 bytes big-endian, so key order is
// sequence order). The comms event log and each webhook endpoint's outbox
// are SeqLogs. Writes go through a transaction so that a caller can change
// several logs and collections atomically.
type SeqLog struct {
	db     *DB
	prefix []byte
}

// NewSeqLog returns the log named name.
func NewSeqLog(db *DB, name string) *SeqLog {
	return &SeqLog{db: db, prefix: []byte(name + "/")}
}

func (l *SeqLog) key(seq uint64) []byte {
	k := make([]byte, len(l.prefix)+8)
	copy(k, l.prefix)
	binary.BigEndian.PutUint64(k[len(l.prefix):], seq)
	return k
}

// Put writes one entry inside tx.
func (l *SeqLog) Put(tx *Txn, seq uint64, raw []byte) error { return tx.Set(l.key(seq), raw) }

// Delete removes one entry inside tx; a missing entry is not an error.
func (l *SeqLog) Delete(tx *Txn, seq uint64) error { return tx.Delete(l.key(seq)) }

// Get reads one entry; ErrNotFound when absent.
func (l *SeqLog) Get(seq uint64) ([]byte, error) {
	var raw []byte
	err := l.db.View(func(tx *Txn) error {
		var err error
		raw, err = tx.Get(l.key(seq))
		return err
	})
	return raw, err
}

// Scan visits entries from seq from (inclusive; 0 = the oldest, or the
// newest when reverse) in order or reverse order until fn returns false.
func (l *SeqLog) Scan(from uint64, reverse bool, fn func(seq uint64, raw []byte) (bool, error)) error {
	var start []byte
	if from > 0 {
		start = l.key(from)
	}
	return l.db.View(func(tx *Txn) error {
		return tx.Iterate(l.prefix, start, reverse, func(k, v []byte) (bool, error) {
			return fn(binary.BigEndian.Uint64(k[len(l.prefix):]), v)
		})
	})
}

// Last returns the highest sequence number and its value; ErrNotFound when
// the log is empty.
func (l *SeqLog) Last() (uint64, []byte, error) {
	var seq uint64
	var raw []byte
	err := l.Scan(0, true, func(s uint64, v []byte) (bool, error) {
		seq, raw = s, v
		return false, nil
	})
	if err == nil && raw == nil {
		err = ErrNotFound
	}
	return seq, raw, err
}

// SetTTL writes a raw value that Badger forgets after ttl.
func (tx *Txn) SetTTL(key, value []byte, ttl time.Duration) error {
	if tx.rec != nil {
		return tx.record(writeOp{key: key, value: value, ttl: ttl})
	}
	return tx.t.SetEntry(badger.NewEntry(key, value).WithTTL(ttl))
}

// DeletePrefix deletes every key that starts with prefix, in batches of
// synced transactions. (Badger's own DropPrefix blocks every writer of the
// whole database while it runs, so a live daemon never uses it.)
func (db *DB) DeletePrefix(prefix string) error {
	p := []byte(prefix)
	for {
		var keys [][]byte
		err := db.View(func(tx *Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix, opts.PrefetchValues = p, false
			it := tx.t.NewIterator(opts)
			defer it.Close()
			for it.Seek(p); it.ValidForPrefix(p) && len(keys) < 1000; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		err = db.Update(func(tx *Txn) error {
			for _, k := range keys {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// DB is the database the log lives in (for transactions spanning logs).
func (l *SeqLog) DB() *DB { return l.db }
