package channel

import (
	"strconv"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/store/storetest"
)

// Sequence numbers keep increasing across restarts of the source, and
// none is handed out above the reservation written to the store (reads
// wait for queued writes, so the stored ceiling is what a restart sees).
func TestSeqSourceNeverHandsOutAnUnreservedNumber(t *testing.T) {
	home := t.TempDir()
	db := storetest.Open(t, home)
	defer db.Close()
	q := newQueues(db)
	rt := &runtime{db: db, log: zerolog.Nop(), cursors: q.cursors, queues: q}
	var last uint64
	for run := range 3 {
		s := &seqSource{rt: rt, name: "c"}
		if err := s.init(0); err != nil {
			t.Fatal(err)
		}
		for range 2*seqBlock + 7 {
			n := s.next()
			if n <= last {
				t.Fatalf("run %d: %d after %d", run, n, last)
			}
			last = n
			saved, err := rt.cursors.Get("c/$seq")
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := strconv.ParseUint(saved, 10, 64); c < n {
				t.Fatalf("run %d: handed out %d with %d reserved", run, n, c)
			}
		}
	}
}
