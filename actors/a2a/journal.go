package a2a

import (
	"context"
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
	// fence, when set, is finished instead of answering on done.
	fence *fence
	// notify, when set, is called with the outcome as well, from the
	// journal's Receive: a task actor hears of its write by a message
	// (root.Send) instead of parking a goroutine on done or the fence.
	notify func(error)
}

// fence is one journal write that any number of goroutines wait for:
// finished (once) with the write's outcome when it is synced or failed.
type fence struct {
	done chan struct{}
	err  error
}

func newFence() *fence { return &fence{done: make(chan struct{})} }

func (f *fence) finish(err error) {
	f.err = err
	close(f.done)
}

// wait returns the write's outcome once it is done, or ctx's error.
func (f *fence) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// journal is the "a2a-journal" actor: task actors write their records
// through it, and writes arriving while a commit is in flight go together
// in the next synced transaction (group commit, store.GroupCommit). One
// synced transaction per task update would cap the daemon at a few
// thousand updates a second; batching lifts that to what the disk's fsync
// rate times the batch allows.
type journal struct {
	db   *store.DB
	gate func(records [][]byte) // Options.journalGate
	gc   *store.GroupCommit[journalWrite]
	send func(any)
}

func (j *journal) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		self, root := c.Self(), c.ActorSystem().Root
		j.send = func(msg any) { root.Send(self, msg) }
		j.gc = store.NewGroupCommit(store.GroupCommitOptions[journalWrite]{
			MaxCount: journalMaxBatch,
			MaxBytes: j.db.MaxBatchBytes(),
			Size:     func(w journalWrite) int { return len(w.key) + len(w.raw) + 64 },
			Commit:   j.commit,
			Done: func(w journalWrite, err error) {
				switch {
				case w.fence != nil:
					w.fence.finish(err)
				case w.done != nil:
					w.done <- err
				}
				if w.notify != nil {
					w.notify(err)
				}
			},
		})
	case *journalWrite:
		j.gc.Add(*m)
		j.gc.Flush(j.send)
	case *store.Committed[journalWrite]:
		if _, err, ok := j.gc.Committed(m); ok && err != nil {
			// Its waiters and the writes queued behind it were failed.
			// Each record stands alone (nothing is chained onto another),
			// so there is no memory to reload: take writes again.
			j.gc.Reset()
		}
		j.gc.Flush(j.send)
	case *actor.Stopping:
		j.gc.Stop(errors.New("a2a journal is shutting down"))
	}
}

// commit writes a batch in one synced transaction; it runs off the actor.
func (j *journal) commit(batch []journalWrite) error {
	if j.gate != nil {
		records := make([][]byte, len(batch))
		for i, w := range batch {
			records[i] = w.raw
		}
		j.gate(records)
	}
	return j.db.Write(func(tx *store.Txn) error {
		for _, w := range batch {
			if err := tx.Set(w.key, w.raw); err != nil {
				return err
			}
		}
		return nil
	})
}
