package a2a

import (
	"errors"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/store"
)

// journalMaxBatch bounds one group commit (Badger refuses huge transactions).
const journalMaxBatch = 512

// journalWrite asks the journal to store raw under key durably. The journal
// answers on done once the write is synced (or failed).
type journalWrite struct {
	key  []byte
	raw  []byte
	done chan error
}

// journalCommitted is sent by the commit goroutine back to the journal.
type journalCommitted struct {
	batch []journalWrite
	err   error
}

// journal is the "a2a-journal" actor: task actors write their records
// through it, and writes arriving while a commit is in flight go together
// in the next synced transaction (group commit). One synced transaction
// per task update would cap the daemon at a few thousand updates a second;
// batching lifts that to what the disk's fsync rate times the batch allows.
type journal struct {
	db       *store.DB
	pending  []journalWrite
	inFlight bool
}

func (j *journal) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *journalWrite:
		j.pending = append(j.pending, *m)
		if !j.inFlight {
			j.flush(c)
		}
	case *journalCommitted:
		for _, w := range m.batch {
			w.done <- m.err
		}
		j.inFlight = false
		j.flush(c)
	case *actor.Stopping:
		for _, w := range j.pending {
			w.done <- errors.New("a2a journal is shutting down")
		}
		j.pending = nil
	}
}

func (j *journal) flush(c actor.Context) {
	if len(j.pending) == 0 {
		return
	}
	n := min(len(j.pending), journalMaxBatch)
	batch := j.pending[:n:n]
	j.pending = j.pending[n:]
	j.inFlight = true
	self, root := c.Self(), c.ActorSystem().Root
	go func() {
		err := j.db.Write(func(tx *store.Txn) error {
			for _, w := range batch {
				if err := tx.Set(w.key, w.raw); err != nil {
					return err
				}
			}
			return nil
		})
		root.Send(self, &journalCommitted{batch: batch, err: err})
	}()
}
