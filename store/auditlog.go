package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
)

var auditPrefix = []byte("audit/e/")

// AuditLog stores the audit chain's entries, keyed by their id in big-endian
// so that key order is id order. It knows nothing of hashing: actors/audit
// builds and verifies the chain.
type AuditLog struct{ db *DB }

// AuditLog returns the audit log's storage.
func (db *DB) AuditLog() *AuditLog { return &AuditLog{db: db} }

func auditKey(id uint64) []byte { return appendAuditKey(make([]byte, 0, auditKeyLen), id) }

const auditKeyLen = len("audit/e/") + 8

func appendAuditKey(b []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, auditPrefix...), id)
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

// AppendAsync is Append without the wait: the entries join the write
// queue's next synced transaction, and done is called from the queue's
// goroutine once they are durable (nil) or failed (see DB.UpdateAsync; done
// must not block). The audit writer's group commit hands its batches over
// this way, so that no goroutine of its own waits on each commit.
// The entries' bytes are handed over, not copied: the caller must never
// change them afterwards (the audit writer never changes an entry).
func (l *AuditLog) AppendAsync(batch []AuditRecord, done func(error)) {
	l.db.updateAsync(func(tx *Txn) error {
		tx.rec.ops = slices.Grow(tx.rec.ops, len(batch))
		// The batch's keys share one allocation (one each was a sixth of
		// an append's allocations); record's copy would be a second one.
		keys := make([]byte, 0, len(batch)*auditKeyLen)
		for _, r := range batch {
			keys = appendAuditKey(keys, r.ID)
			o := writeOp{key: keys[len(keys)-auditKeyLen : len(keys) : len(keys)], value: r.Raw}
			tx.rec.ops = append(tx.rec.ops, o)
			tx.rec.size += o.size()
		}
		return nil
	}, done, true)
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

// LastIn is Last inside tx: the newest entry of tx's snapshot (a backup
// records the tip of the very snapshot it writes).
func (l *AuditLog) LastIn(tx *Txn) (AuditRecord, error) {
	rec := AuditRecord{}
	err := tx.Iterate(auditPrefix, nil, true, func(k, v []byte) (bool, error) {
		rec = AuditRecord{ID: auditID(k), Raw: v}
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

// auditCheckpointKey holds the retention checkpoint: how long the trimmed
// prefix of the chain was and its tip hash. It sits outside auditPrefix.
var auditCheckpointKey = []byte("audit/checkpoint")

// AuditCheckpoint says that entries 1..Length were trimmed (exported
// first), that entry Length had hash Tip, and which entry of the chain
// (Entry, an audit_checkpoint) commits to both.
type AuditCheckpoint struct {
	Length uint64 `json:"trimmed_length"`
	Tip    string `json:"trimmed_tip"`
	Entry  uint64 `json:"checkpoint_entry"`
}

// Checkpoint reads the retention checkpoint; ok is false when the chain
// was never trimmed.
func (l *AuditLog) Checkpoint() (cp AuditCheckpoint, ok bool, err error) {
	err = l.db.View(func(tx *Txn) error {
		raw, err := tx.Get(auditCheckpointKey)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return json.Unmarshal(raw, &cp)
	})
	return cp, ok, err
}

// SetCheckpoint records the retention checkpoint durably.
func (l *AuditLog) SetCheckpoint(cp AuditCheckpoint) error {
	raw, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	return l.db.Update(func(tx *Txn) error { return tx.Set(auditCheckpointKey, raw) })
}

// DeleteThrough removes every entry with an id up to last, oldest first,
// in transactions of a bounded size.
func (l *AuditLog) DeleteThrough(last uint64) error {
	const batch = 10000
	for {
		var ids []uint64
		err := l.Scan(0, false, func(r AuditRecord) (bool, error) {
			if r.ID > last {
				return false, nil
			}
			ids = append(ids, r.ID)
			return len(ids) < batch, nil
		})
		if err != nil || len(ids) == 0 {
			return err
		}
		err = l.db.Update(func(tx *Txn) error {
			for _, id := range ids {
				if err := tx.Delete(auditKey(id)); err != nil {
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
