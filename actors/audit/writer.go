package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/store"
)

// recentCap is how many committed entries the writer keeps in memory for
// GET /api/audit/recent (whose maximum limit is 500).
const recentCap = 500

// pendingAppend is one appendRequest, chained: its entries are consecutive
// and are committed together (one group-commit item).
type pendingAppend struct {
	entries []Entry
	served  []recentEntry // the entries as stored (raw) and as GET /api/audit/recent serves them
	done    chan appendResult
	// accept: the entry records an accepted anchor mismatch; the commit
	// re-anchors on it, and reports a failure to do so in anchorErr.
	accept    bool
	anchorErr error
}

func (p *pendingAppend) last() *Entry { return &p.entries[len(p.entries)-1] }

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
	gc        *store.GroupCommit[pendingAppend]
	send      func(any) // to the writer itself: the commit's report
	committed SnapshotReply
	// recent is the newest committed entries, shared with Log.Recent,
	// which reads it without a trip through this actor.
	recent *recentView
	// anchor is read by the commit goroutine, and set by it when an
	// acceptance ends degraded mode.
	anchor atomic.Pointer[anchorWriter]
	// broken is the Log's: the anchor mismatch found at start-up
	// (degraded mode), nil once matched or accepted.
	broken    *atomic.Pointer[Mismatch]
	accepting bool // an acceptance is chained, not yet committed
}

func (w *writer) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := w.load(); err != nil {
			panic(err)
		}
		if w.broken.Load() == nil {
			// A broken anchor stays as it was found, the evidence that the
			// offline verifier reads too, until `fangd audit accept`.
			w.startAnchor()
		}
		w.startGroupCommit(c)
	case *appendRequest:
		if m.accept && (w.accepting || w.broken.Load() == nil) {
			m.done <- appendResult{err: ErrNothingToAccept}
			return
		}
		w.accepting = w.accepting || m.accept
		w.chain(m)
		w.gc.Flush(w.send)
	case *store.Committed[pendingAppend]:
		w.committedBatch(m)
	case *Recent:
		c.Respond(w.recent.reply(m.Limit))
	case *Snapshot:
		c.Respond(&w.committed)
	case *actor.Stopping:
		w.gc.Stop(errors.New("audit log is shutting down"))
		w.closeAnchor()
	case *actor.Restarting:
		// The new incarnation reloads the chain from disk: no batch of
		// this one may be committed after that (Chain would go on taking
		// them), and its waiters get an error rather than their timeout.
		if w.gc != nil {
			w.gc.Stop(errors.New("audit writer restarting"))
		}
		w.closeAnchor()
	}
}

func (w *writer) closeAnchor() {
	if a := w.anchor.Swap(nil); a != nil {
		a.close()
	}
}

func (w *writer) startAnchor() {
	w.anchor.Store(startAnchorWriter(w.anchorPath, func(err error) {
		w.logger.Error().Err(err).Msg("audit anchor write failed; it stays at the last good state")
	}))
}

// reanchor ends degraded mode once the acceptance is durable (it is in
// batch, just committed): the anchor is written at once, before the
// acceptance is answered, and kept up to date from then on.
func (w *writer) reanchor(batch []pendingAppend, tip Anchor) {
	err := WriteAnchor(w.anchorPath, tip)
	for i := range batch {
		if batch[i].accept {
			batch[i].anchorErr = err
		}
	}
	if err != nil {
		w.logger.Error().Err(err).Msg("the anchor mismatch is accepted in the chain, but the anchor could not be written: still degraded")
		return
	}
	w.broken.Store(nil)
	w.startAnchor()
	w.logger.Warn().Uint64("length", tip.Length).Msg("audit anchor mismatch accepted; re-anchored")
}

// load restores the tip and the recent ring from the store. A restart after
// a failed commit lands here too, so memory never runs ahead of disk.
func (w *writer) load() error {
	w.nextID, w.tip = 1, Genesis
	var newestFirst []recentEntry
	err := w.log.Scan(0, true, func(r store.AuditRecord) (bool, error) {
		var e Entry
		if err := json.Unmarshal(r.Raw, &e); err != nil {
			return false, fmt.Errorf("audit entry %d does not decode: %w", r.ID, err)
		}
		if newestFirst == nil {
			w.nextID, w.tip = e.ID+1, e.Hash
		}
		newestFirst = append(newestFirst, newRecentEntry(r.Raw, &e))
		return len(newestFirst) < recentCap, nil
	})
	if err != nil {
		return err
	}
	w.committed = SnapshotReply{Length: w.nextID - 1, Tip: w.tip}
	w.recent.mu.Lock()
	defer w.recent.mu.Unlock()
	w.recent.ring = rawRing{}
	for i := len(newestFirst) - 1; i >= 0; i-- {
		w.recent.ring.push(newestFirst[i])
	}
	w.recent.committed = w.committed
	return nil
}

func (w *writer) chain(m *appendRequest) {
	n := len(m.events)
	p := pendingAppend{entries: make([]Entry, n), served: make([]recentEntry, n), done: m.done, accept: m.accept}
	for i, ev := range m.events {
		e := chainEntry(w.nextID, w.tip, ev)
		w.nextID, w.tip = e.ID+1, e.Hash
		p.entries[i], p.served[i] = e, servedEntry(&e)
	}
	w.gc.Add(p)
}

// startGroupCommit sets up the group commit: appends arriving while a
// commit is in flight go together in the next one. A batch goes straight
// into the store's write queue (AuditLog.AppendAsync), and its callers are
// answered from the queue's goroutine once it is synced (Durable), after
// the report to this actor is sent: a caller's hand-offs are caller →
// writer → write queue → Badger → caller, where a goroutine per commit
// waited on the queue and the answers went back through this actor's
// mailbox (two more hops per append; docs/bench.md). Chain: once a batch
// is synced, the queue's goroutine hands over the appends chained
// meanwhile itself, where the next commit waited for this actor to take
// the report from behind the appends queued in its mailbox, and the
// disk sat idle for that hop (docs/bench.md, session 10).
func (w *writer) startGroupCommit(c actor.Context) {
	self, root := c.Self(), c.ActorSystem().Root
	w.send = func(msg any) { root.Send(self, msg) }
	w.gc = store.NewGroupCommit(store.GroupCommitOptions[pendingAppend]{
		MaxCount: w.maxBatch,
		Chain:    true,
		CommitAsync: func(batch []pendingAppend, done func(error)) {
			recs := make([]store.AuditRecord, 0, len(batch))
			for _, p := range batch {
				for i := range p.entries {
					recs = append(recs, store.AuditRecord{ID: p.entries[i].ID, Raw: p.served[i].raw})
				}
			}
			last := batch[len(batch)-1].last()
			tip := Anchor{Length: last.ID, Tip: last.Hash}
			w.log.AppendAsync(recs, func(err error) {
				if err == nil {
					// Readers see a batch before its callers are
					// answered: an append's caller finds it in Recent,
					// and in the commit and append counters (counted
					// here, not when this actor hears of the commit,
					// which is after the callers).
					w.recent.publish(batch)
					w.countCommit(batch)
				}
				switch a := w.anchor.Load(); {
				case err != nil:
				case a != nil:
					a.set(tip)
				case slices.ContainsFunc(batch, func(p pendingAppend) bool { return p.accept }):
					// Writing the anchor file would hold up the write
					// queue: an acceptance (rare) re-anchors in a
					// goroutine of its own, before it is answered.
					go func() {
						w.reanchor(batch, tip)
						done(nil)
					}()
					return
				}
				done(err)
			})
		},
		Durable: func(batch []pendingAppend) {
			for _, p := range batch {
				if p.accept && p.anchorErr != nil {
					p.done <- appendResult{err: fmt.Errorf("the acceptance is recorded as entry %d, but the anchor could not be written: %w", p.entries[0].ID, p.anchorErr)}
				} else {
					p.done <- appendResult{entries: p.entries}
				}
			}
		},
		// Failures only: Durable answers the rest.
		Done: func(p pendingAppend, err error) { p.done <- appendResult{err: err} },
	})
}

func (w *writer) committedBatch(m *store.Committed[pendingAppend]) {
	batch, err, ok := w.gc.Committed(m)
	if !ok {
		return
	}
	if err != nil {
		// Entries queued behind the failed batch were chained onto it: the
		// group commit failed them all; restart, which reloads the chain
		// from disk.
		panic(fmt.Errorf("audit commit failed: %w", err))
	}
	for _, p := range batch {
		if p.accept {
			w.accepting = false
		}
	}
	last := batch[len(batch)-1].last()
	w.committed = SnapshotReply{Length: last.ID, Tip: last.Hash}
	w.gc.Flush(w.send)
}

// countCommit counts a synced batch and its entries.
func (w *writer) countCommit(batch []pendingAppend) {
	n := 0
	for _, p := range batch {
		n += len(p.entries)
	}
	w.appends.Add(float64(n))
	w.commits.Inc()
}

// recentView is the newest committed entries and the committed chain's
// length and tip, as the writer last published them. Log.Recent reads it
// under the read lock instead of asking the writer: GET
// /api/audit/recent is a measured hot path, and the hop through the
// writer's mailbox (a send, a wake of its pinned goroutine, a reply
// channel) was ~18% of a read's CPU in BenchmarkHotAuditRecent's profile
// and a wait behind every append queued ahead of it (docs/bench.md).
type recentView struct {
	mu        sync.RWMutex
	ring      rawRing
	committed SnapshotReply
}

// publish adds a committed batch. The write queue's goroutine calls it,
// one batch at a time in commit order, before the batch's callers hear.
func (v *recentView) publish(batch []pendingAppend) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, p := range batch {
		for _, e := range p.served {
			v.ring.push(e)
		}
	}
	last := batch[len(batch)-1].last()
	v.committed = SnapshotReply{Length: last.ID, Tip: last.Hash}
}

func (v *recentView) reply(limit int) *RecentReply {
	v.mu.RLock()
	defer v.mu.RUnlock()
	entries, items := v.ring.newest(limit)
	return &RecentReply{Entries: entries, Items: items, Total: v.committed.Length, Tip: v.committed.Tip}
}

// items appends up to limit items, newest first, to dst.
func (v *recentView) items(limit int, dst [][]byte) (items [][]byte, total uint64, tip string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.ring.appendNewest(dst, limit), v.committed.Length, v.committed.Tip
}

// recentEntry is one committed entry as GET /api/audit/recent serves it:
// its stored JSON, and the same with LibreFang's names for three of its
// fields added (seq, action, detail). The second is built once, when the
// entry is committed (or loaded), instead of by decoding the stored JSON
// on every read: that decoding was half the CPU of a read (the profile of
// BenchmarkHotAuditRecent, docs/bench.md).
type recentEntry struct {
	raw, item []byte
}

func newRecentEntry(raw []byte, e *Entry) recentEntry {
	return recentEntry{raw: raw, item: appendItem(make([]byte, 0, itemSize(raw, e)), raw, e)}
}

// servedEntry encodes a new entry and its item into one allocation (the
// writer makes one per append).
func servedEntry(e *Entry) recentEntry {
	n := entrySize(e)
	b := appendEntry(make([]byte, 0, 2*n+itemFraming+len(e.EventType)+len(e.Details)), e)
	raw := b[:len(b):len(b)] // the item, after it, cannot grow into it
	return recentEntry{raw: raw, item: appendItem(b[len(b):], raw, e)}
}

// itemSize is at least what appendItem writes (JSON escapes aside): raw
// and itemFraming besides the two values.
func itemSize(raw []byte, e *Entry) int {
	return len(raw) + itemFraming + len(e.EventType) + len(e.Details)
}

// itemFraming: `,"seq":` and 20 digits, `,"action":""`, `,"detail":""`
// (raw's closing brace is written again).
const itemFraming = 7 + 20 + 12 + 12

// appendItem appends raw with LibreFang's seq, action and detail added.
func appendItem(item, raw []byte, e *Entry) []byte {
	item = append(item, raw[:len(raw)-1]...) // without its closing brace
	item = append(item, `,"seq":`...)
	item = strconv.AppendUint(item, e.ID, 10)
	item = append(item, `,"action":`...)
	item = store.AppendJSONString(item, e.EventType)
	item = append(item, `,"detail":`...)
	item = store.AppendJSONString(item, e.Details)
	return append(item, '}')
}

// rawRing holds the last recentCap entries; pushing overwrites the oldest.
type rawRing struct {
	buf  []recentEntry
	next int // where the next push goes once buf is full
}

func (r *rawRing) push(e recentEntry) {
	if len(r.buf) < recentCap {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % recentCap
}

// newest returns up to n entries and their items, newest first.
func (r *rawRing) newest(n int) (entries, items [][]byte) {
	n = min(n, len(r.buf))
	entries, items = make([][]byte, n), make([][]byte, n)
	last := len(r.buf) - 1
	if len(r.buf) == recentCap {
		last = (r.next + recentCap - 1) % recentCap
	}
	for i := range n {
		e := r.buf[(last-i+len(r.buf))%len(r.buf)]
		entries[i], items[i] = e.raw, e.item
	}
	return entries, items
}

// appendNewest appends up to n items to dst, newest first.
func (r *rawRing) appendNewest(dst [][]byte, n int) [][]byte {
	n = min(n, len(r.buf))
	last := len(r.buf) - 1
	if len(r.buf) == recentCap {
		last = (r.next + recentCap - 1) % recentCap
	}
	for i := range n {
		dst = append(dst, r.buf[(last-i+len(r.buf))%len(r.buf)].item)
	}
	return dst
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
	return appendEntry(make([]byte, 0, entrySize(e)), e), nil
}

// entrySize is at least what appendEntry writes for e, JSON escapes aside:
// entryFraming (the keys, quotes and separators, the id's 20 digits at
// most) and the values. It had left out the two hashes, 128 bytes, so the
// item that servedEntry writes after the entry never fit its buffer, and
// every append paid a second allocation and a copy (docs/bench.md).
func entrySize(e *Entry) int {
	return entryFraming + len(e.Timestamp) + len(e.EventType) + len(e.AgentID) + len(e.Details) +
		len(e.Outcome) + len(e.Actor) + len(e.SourceIP) + len(e.PrevHash) + len(e.Hash)
}

// entryFraming is what appendEntry writes besides the values: `{"id":`,
// 20 digits, `,"key":""` for each of the nine string fields, and `}`.
const entryFraming = 6 + 20 + 9*5 + len("timestamp"+"event_type"+"agent_id"+"details"+"outcome"+"actor"+"source_ip"+"prev_hash"+"hash") + 1

func appendEntry(b []byte, e *Entry) []byte {
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
	return append(b, '}')
}
