package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/store"
)

// recentCap is how many committed entries the writer keeps in memory for
// GET /api/audit/recent (whose maximum limit is 500).
const recentCap = 500

type pendingAppend struct {
	entry Entry
	raw   []byte
	done  chan appendResult
}

// writer is the only actor that appends to the chain. Appends arriving while
// a commit is in flight are chained at once and committed together in the
// next batch: one synced transaction per batch (group commit), and each
// caller is answered only when its entry is durable.
type writer struct {
	log        *store.AuditLog
	anchorPath string
	maxBatch   int
	appends    prometheus.Counter
	commits    prometheus.Counter
	logger     zerolog.Logger

	nextID    uint64
	tip       string
	pending   []pendingAppend
	inFlight  bool
	committed SnapshotReply
	recent    rawRing // the newest committed raw entries
	anchor    *anchorWriter
	broken    *Mismatch // the anchor mismatch found at start-up (degraded mode)
}

func (w *writer) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := w.load(); err != nil {
			panic(err)
		}
		if w.broken == nil {
			// A broken anchor stays as it was found, the evidence that the
			// offline verifier reads too, until `fangd audit accept`.
			w.anchor = startAnchorWriter(w.anchorPath, func(err error) {
				w.logger.Error().Err(err).Msg("audit anchor write failed; it stays at the last good state")
			})
		}
	case *appendRequest:
		w.chain(m)
		if !w.inFlight {
			w.flush(c)
		}
	case *batchCommitted:
		w.committedBatch(c, m)
	case *Recent:
		c.Respond(w.recentReply(m.Limit))
	case *recentRequest:
		m.done <- w.recentReply(m.limit)
	case *Snapshot:
		c.Respond(&w.committed)
	case *actor.Stopping:
		w.failPending(errors.New("audit log is shutting down"))
		w.closeAnchor()
	case *actor.Restarting:
		w.closeAnchor()
	}
}

func (w *writer) closeAnchor() {
	if w.anchor != nil {
		w.anchor.close()
		w.anchor = nil
	}
}

// load restores the tip and the recent ring from the store. A restart after
// a failed commit lands here too, so memory never runs ahead of disk.
func (w *writer) load() error {
	w.nextID, w.tip, w.inFlight, w.pending = 1, Genesis, false, nil
	var newestFirst [][]byte
	err := w.log.Scan(0, true, func(r store.AuditRecord) (bool, error) {
		if newestFirst == nil {
			var e Entry
			if err := json.Unmarshal(r.Raw, &e); err != nil {
				return false, fmt.Errorf("audit tip entry %d does not decode: %w", r.ID, err)
			}
			w.nextID, w.tip = e.ID+1, e.Hash
		}
		newestFirst = append(newestFirst, r.Raw)
		return len(newestFirst) < recentCap, nil
	})
	if err != nil {
		return err
	}
	w.recent = rawRing{}
	for i := len(newestFirst) - 1; i >= 0; i-- {
		w.recent.push(newestFirst[i])
	}
	w.committed = SnapshotReply{Length: w.nextID - 1, Tip: w.tip}
	return nil
}

func (w *writer) chain(m *appendRequest) {
	e, raw := newEntry(w.nextID, w.tip, m.event)
	w.nextID, w.tip = e.ID+1, e.Hash
	w.pending = append(w.pending, pendingAppend{entry: e, raw: raw, done: m.done})
}

func (w *writer) flush(c actor.Context) {
	if len(w.pending) == 0 {
		return
	}
	n := min(len(w.pending), w.maxBatch)
	batch := w.pending[:n:n]
	w.pending = w.pending[n:]
	w.inFlight = true
	self, system := c.Self(), c.ActorSystem()
	tip, anchor := batch[n-1].entry, w.anchor
	go func() {
		recs := make([]store.AuditRecord, len(batch))
		for i, p := range batch {
			recs[i] = store.AuditRecord{ID: p.entry.ID, Raw: p.raw}
		}
		err := w.log.Append(recs)
		if err == nil && anchor != nil {
			anchor.set(Anchor{Length: tip.ID, Tip: tip.Hash})
		}
		system.Root.Send(self, &batchCommitted{batch: batch, err: err})
	}()
}

func (w *writer) committedBatch(c actor.Context, m *batchCommitted) {
	w.inFlight = false
	if m.err != nil {
		// Entries queued behind the failed batch were chained onto it: fail
		// them all and restart, which reloads the chain from disk.
		for _, p := range m.batch {
			p.done <- appendResult{err: m.err}
		}
		w.failPending(m.err)
		panic(fmt.Errorf("audit commit failed: %w", m.err))
	}
	for _, p := range m.batch {
		w.remember(p.raw)
		p.done <- appendResult{entry: p.entry}
	}
	last := m.batch[len(m.batch)-1].entry
	w.committed = SnapshotReply{Length: last.ID, Tip: last.Hash}
	w.appends.Add(float64(len(m.batch)))
	w.commits.Inc()
	w.flush(c)
}

func (w *writer) failPending(err error) {
	for _, p := range w.pending {
		p.done <- appendResult{err: err}
	}
	w.pending = nil
}

func (w *writer) remember(raw []byte) { w.recent.push(raw) }

func (w *writer) recentReply(limit int) *RecentReply {
	return &RecentReply{Entries: w.recent.newest(limit), Total: w.committed.Length}
}

// rawRing holds the last recentCap entries; pushing overwrites the oldest.
type rawRing struct {
	buf  [][]byte
	next int // where the next push goes once buf is full
}

func (r *rawRing) push(raw []byte) {
	if len(r.buf) < recentCap {
		r.buf = append(r.buf, raw)
		return
	}
	r.buf[r.next] = raw
	r.next = (r.next + 1) % recentCap
}

// newest returns up to n entries, newest first.
func (r *rawRing) newest(n int) [][]byte {
	n = min(n, len(r.buf))
	out := make([][]byte, n)
	last := len(r.buf) - 1
	if len(r.buf) == recentCap {
		last = (r.next + recentCap - 1) % recentCap
	}
	for i := range n {
		out[i] = r.buf[(last-i+len(r.buf))%len(r.buf)]
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// marshalEntry encodes an entry without HTML escaping, so details such as
// "PUT /x -> 200" read as written.
// marshalEntry writes e as JSON, byte for byte what encoding/json writes
// with HTML escaping off (TestMarshalEntryMatchesEncodingJSON), without
// reflection: it runs in the writer actor for every entry, and the
// encoder was half of the actor's time under load.
func marshalEntry(e *Entry) ([]byte, error) {
	b := make([]byte, 0, 160+len(e.Details)+len(e.Timestamp)+len(e.EventType)+len(e.AgentID)+len(e.Actor)+len(e.SourceIP))
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, e.ID, 10)
	for _, f := range [...]struct{ key, val string }{
		{"timestamp", e.Timestamp}, {"event_type", e.EventType}, {"agent_id", e.AgentID},
		{"details", e.Details}, {"outcome", e.Outcome}, {"actor", e.Actor}, {"source_ip", e.SourceIP},
		{"prev_hash", e.PrevHash}, {"hash", e.Hash},
	} {
		b = append(append(append(b, ',', '"'), f.key...), '"', ':')
		b = store.AppendJSONString(b, f.val)
	}
	return append(b, '}'), nil
}
