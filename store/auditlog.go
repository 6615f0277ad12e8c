package store

import (
	"encoding/binary"
)

var auditPrefix = []byte("audit/e/")

// AuditLog stores the audit chain's entries, keyed by their id in big-endian
// so that key order is id order. It knows nothing of hashing: actors/audit
// builds and verifies the chain.
type AuditLog struct{ db *DB }

// AuditLog returns the audit log's storage.
func (db *DB) AuditLog() *AuditLog { return &AuditLog{db: db} }

func auditKey(id uint64) []byte {
	k := make([]byte, len(auditPrefix)+8)
	copy(k, auditPrefix)
	binary.BigEndian.PutUint64(k[len(auditPrefix):], id)
	return k
}

func auditID(key []byte) uint64 { return binary.BigEndian.Uint64(key[len(auditPrefix):]) }

// AuditRecord is one stored entry: its id and its JSON.
type AuditRecord struct {
	ID  uint64
	Raw []byte
}

// Append writes a batch of entries in one synced transaction. The audit
// log may use the free-space reserve down to its floor, so that running
// short of space, and what was refused meanwhile, is still recorded.
func (l *AuditLog) Append(batch []AuditRecord) error {
	return l.db.write(func(tx *Txn) error {
		for _, r := range batch {
			if err := tx.Set(auditKey(r.ID), r.Raw); err != nil {
				return err
			}
		}
		return nil
	}, true)
}

// Admits answers ErrInsufficientStorage when an append would be refused
// now for lack of space. The audit writer asks before it chains an entry:
// a refused batch would otherwise fail every entry chained behind it.
func (l *AuditLog) Admits() error { return l.db.space.admit(0, true) }

// Last returns the newest entry; ErrNotFound when the log is empty.
func (l *AuditLog) Last() (AuditRecord, error) {
	rec := AuditRecord{}
	err := l.Scan(0, true, func(r AuditRecord) (bool, error) {
		rec = r
		return false, nil
	})
	if err == nil && rec.Raw == nil {
		err = ErrNotFound
	}
	return rec, err
}

// Scan visits entries starting at id from (0 = the oldest, or the newest
// when reverse), in id order or reverse id order, until fn returns false.
func (l *AuditLog) Scan(from uint64, reverse bool, fn func(AuditRecord) (bool, error)) error {
	var start []byte
	if from > 0 {
		start = auditKey(from)
	}
	return l.db.View(func(tx *Txn) error {
		return tx.Iterate(auditPrefix, start, reverse, func(k, v []byte) (bool, error) {
			return fn(AuditRecord{ID: auditID(k), Raw: v})
		})
	})
}

// Overwrite replaces one stored entry. Only tests and repair tools use it:
// the audit writer never rewrites an entry.
func (l *AuditLog) Overwrite(r AuditRecord) error { return l.Append([]AuditRecord{r}) }

// Remove deletes one stored entry (tests use it to simulate a truncated tail).
func (l *AuditLog) Remove(id uint64) error {
	return l.db.Update(func(tx *Txn) error { return tx.Delete(auditKey(id)) })
}
