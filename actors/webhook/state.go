package webhook

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fangd/fangd/store"
)

// Where an endpoint's outbox, dead letters, attempt history and
// bookkeeping live: the node's Badger (badgerState) or, in cluster mode,
// etcd under fenced writes (clusterState, cluster.go). The outbox actor
// does the same thing over either; only its writes' encoding differs.

// The logs of one endpoint's state.
const (
	logQueue    = "q"
	logDead     = "dl"
	logAttempts = "att"
	logMeta     = "meta"
	logIntake   = "in" // cluster mode: appended by producers, moved into the queue by the owner
)

// wr is one write to an endpoint's state: a put or delete of one entry of
// a log, the bookkeeping, or (cluster mode) an intake key to remove.
type wr struct {
	log  string
	seq  uint64
	key  string // logIntake: the key, relative to the endpoint
	val  []byte
	meta *meta
	del  bool
}

func putWr(log string, seq uint64, v any) wr {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own types always encode
	}
	return wr{log: log, seq: seq, val: raw}
}

func delWr(log string, seq uint64) wr { return wr{log: log, seq: seq, del: true} }

// backend is one kind of endpoint state store.
type backend interface {
	// commit applies every op's writes in order, atomically where the
	// store allows it (etcd: consecutive fenced Txns within its limits).
	commit(id string, ops []op) error
	// scan visits log's entries from seq from, ascending or descending.
	scan(id, log string, from uint64, reverse bool, fn func(seq uint64, raw []byte) (bool, error)) error
	// meta is the endpoint's bookkeeping, store.ErrNotFound if none yet.
	meta(id string) (meta, error)
}

// badgerState keeps endpoint state in the node's Badger.
type badgerState struct {
	db    *store.DB
	metas *store.Collection[meta]
}

func (b *badgerState) seqLog(id, log string) *store.SeqLog {
	switch log {
	case logQueue:
		return store.NewSeqLog(b.db, outboxName(id))
	case logDead:
		return store.NewSeqLog(b.db, deadName(id))
	case logAttempts:
		return store.NewSeqLog(b.db, attemptsName(id))
	}
	panic("webhook: no such log " + log)
}

func (b *badgerState) commit(id string, ops []op) error {
	logs := map[string]*store.SeqLog{}
	return b.db.Update(func(tx *store.Txn) error {
		for _, o := range ops {
			for _, w := range o.w {
				if w.log == logMeta {
					if err := b.metas.PutTx(tx, id, *w.meta); err != nil {
						return err
					}
					continue
				}
				l := logs[w.log]
				if l == nil {
					l = b.seqLog(id, w.log)
					logs[w.log] = l
				}
				var err error
				if w.del {
					err = l.Delete(tx, w.seq)
				} else {
					err = l.Put(tx, w.seq, w.val)
				}
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (b *badgerState) scan(id, log string, from uint64, reverse bool, fn func(uint64, []byte) (bool, error)) error {
	return b.seqLog(id, log).Scan(from, reverse, fn)
}

func (b *badgerState) meta(id string) (meta, error) { return b.metas.Get(id) }

// metaOrNew is id's bookkeeping, fresh if none was stored yet.
func metaOrNew(st backend, id string) (meta, error) {
	m, err := st.meta(id)
	if errors.Is(err, store.ErrNotFound) {
		return meta{NextSeq: 1, NextAttempt: 1}, nil
	}
	if err != nil {
		return meta{}, fmt.Errorf("webhook %s: bookkeeping: %w", id, err)
	}
	return m, nil
}
