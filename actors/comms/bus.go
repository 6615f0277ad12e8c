package comms

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// DefaultMaxStreams is the daemon-wide default of BusOptions.MaxStreams
// ([comms] max_streams).
const DefaultMaxStreams = 1024

// BusOptions size the bus.
type BusOptions struct {
	// LogSize is how many events the persisted log keeps (default 10000).
	LogSize int
	// MaxStreamsPerKey caps concurrent live subscriptions per caller key
	// (default 64, LibreFang's number).
	MaxStreamsPerKey int
	// MaxStreams caps concurrent live subscriptions daemon-wide (default
	// DefaultMaxStreams): the per-key cap alone let many credentials or
	// loopback addresses hold a buffered subscription each, without bound.
	MaxStreams int
	// MaxBatch caps how many events share one commit (default 4096); the
	// store's transaction size caps the bytes.
	MaxBatch int
}

// Bus is the handle other packages use to publish and read events.
type Bus struct {
	k   *kernel.Kernel
	pid *actor.PID
	log *store.SeqLog
}

// Start spawns the bus as the root actor "comms".
func Start(k *kernel.Kernel, db *store.DB, opts BusOptions) (*Bus, error) {
	if opts.LogSize <= 0 {
		opts.LogSize = 10000
	}
	if opts.MaxStreamsPerKey <= 0 {
		opts.MaxStreamsPerKey = 64
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	m := busMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_comms_events_total", Help: "Events committed to the comms log."}),
		cut:       prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_comms_subscribers_cut_total", Help: "Live subscribers dropped for falling behind."}),
		streams:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "fangd_comms_subscribers", Help: "Live event subscribers."}),
	}
	for _, c := range []prometheus.Collector{m.published, m.cut, m.streams} {
		if err := k.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	h := &Bus{k: k, log: store.NewSeqLog(db, "comms/events")}
	pid, err := k.SpawnRoot("comms", func() actor.Actor {
		return &bus{log: h.log, opts: opts, m: m, self: h, logger: k.Log.With().Str("component", "comms").Logger()}
	}, actor.WithDispatcher(kernel.PinnedDispatcher(300))) // every event passes through it
	if err != nil {
		return nil, err
	}
	h.pid = pid
	return h, nil
}

// PID is the bus actor.
func (b *Bus) PID() *actor.PID { return b.pid }

// Publish records an event without waiting for it to be durable. detail
// is marshalled to JSON (nil becomes {}). Publishing never blocks.
func (b *Bus) Publish(typ, source, target string, detail any) {
	b.k.Root.Send(b.pid, &publish{typ: typ, source: source, target: target, detail: encodeDetail(detail)})
}

// PublishRoute records a message.routed event: an observed route of kind
// edge from source to target, counted in the topology.
func (b *Bus) PublishRoute(source, target, edge string, detail any) {
	b.PublishEdge("message.routed", source, target, edge, detail)
}

// PublishEdge records an event of type typ that is also an observed route
// of kind edge from source to target, without waiting for it to be
// durable (an empty edge is no route; the kind is stored as detail.route).
// Events published from one goroutine keep their order. Publishing never
// blocks.
func (b *Bus) PublishEdge(typ, source, target, edge string, detail any) {
	d := encodeDetail(detail)
	if edge != "" {
		key := "route"
		if typ == "message.routed" {
			key = "kind"
		}
		d = withField(d, key, edge)
	}
	b.k.Root.Send(b.pid, &publish{typ: typ, source: source, target: target, edge: edge, detail: d})
}

// PublishSync records an event and returns its id once it is durable.
func (b *Bus) PublishSync(ctx context.Context, typ, source, target string, detail any) (uint64, error) {
	done := make(chan publishResult, 1)
	b.k.Root.Send(b.pid, &publish{typ: typ, source: source, target: target, detail: encodeDetail(detail), done: done})
	return awaitPublish(ctx, done)
}

// PublishDurable records an event like Publish (it never blocks, and the
// event is ordered with the caller's other Publish calls) and returns a
// wait that returns once the event is durable. An actor that must not
// answer before its event is on disk (a request acknowledged with 2xx,
// whose event a crash right after the answer must not lose) publishes in
// Receive and waits in the goroutine that answers. Call wait from one
// goroutine at a time; after a timeout it may be called again, and after
// an answer it returns the same answer.
func (b *Bus) PublishDurable(typ, source, target string, detail any) (wait func(context.Context) error) {
	done := make(chan publishResult, 1)
	b.k.Root.Send(b.pid, &publish{typ: typ, source: source, target: target, detail: encodeDetail(detail), done: done})
	var res *publishResult
	return func(ctx context.Context) error {
		if res == nil {
			select {
			case r := <-done:
				res = &r
			case <-ctx.Done():
				return kernel.Unavailable("event bus did not confirm the event in time")
			}
		}
		return res.err
	}
}

func awaitPublish(ctx context.Context, done chan publishResult) (uint64, error) {
	select {
	case r := <-done:
		return r.id, r.err
	case <-ctx.Done():
		return 0, kernel.Unavailable("event bus did not confirm the event in time")
	}
}

func encodeDetail(detail any) json.RawMessage {
	switch d := detail.(type) {
	case nil:
		return json.RawMessage(`{}`)
	case json.RawMessage:
		// Checked here, in the publisher's goroutine: the bus writes
		// detail into the event as is.
		if !json.Valid(d) {
			return json.RawMessage(`{"invalid_detail":true}`)
		}
		return d
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(detail); err != nil {
		return json.RawMessage(fmt.Sprintf(`{"encode_error":%q}`, err.Error()))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

// Query returns committed events, newest first.
func (b *Bus) Query(ctx context.Context, q Query) (*QueryReply, error) {
	return kernel.Ask[*QueryReply](ctx, b.k, b.pid, &q)
}

// Subscribe opens a live subscription (see Subscribe).
func (b *Bus) Subscribe(ctx context.Context, s Subscribe) (*SubscribeReply, error) {
	return kernel.Ask[*SubscribeReply](ctx, b.k, b.pid, &s)
}

// Watch registers an actor to receive every committed *Batch. The bus
// first sends it *Watching with the newest committed id: everything up to
// that id is in the stored log (see Since), everything after arrives as
// batches.
func (b *Bus) Watch(pid *actor.PID) { b.k.Root.Send(b.pid, &Watch{PID: pid}) }

// Edges returns the routes observed in the retained log.
func (b *Bus) Edges(ctx context.Context) ([]Edge, error) {
	r, err := kernel.Ask[*EdgesReply](ctx, b.k, b.pid, &EdgesQuery{})
	if err != nil {
		return nil, err
	}
	return r.Edges, nil
}

// Since visits committed events with id > after straight from the stored
// log, oldest first, until fn returns false. Watchers use it on start to
// catch up on what they missed while they were down.
func (b *Bus) Since(after uint64, fn func(*Record) bool) error {
	return b.log.Scan(after+1, false, func(_ uint64, raw []byte) (bool, error) {
		r, err := decodeRecord(raw)
		if err != nil {
			return false, err
		}
		return fn(r), nil
	})
}

// Subscription is one live subscriber. Events is closed when the
// subscriber was cut for being too slow (Cut reports it) or closed.
type Subscription struct {
	ch     chan *Record
	filter string
	key    string
	cut    atomic.Bool
	closed bool // owned by the bus actor
	bus    *Bus
}

// Events delivers live events in id order.
func (s *Subscription) Events() <-chan *Record { return s.ch }

// Cut reports whether the bus dropped this subscriber for falling behind.
func (s *Subscription) Cut() bool { return s.cut.Load() }

// Close ends the subscription. Events may still deliver a few records
// before it is closed.
func (s *Subscription) Close() { s.bus.k.Root.Send(s.bus.pid, &unsubscribe{sub: s}) }

type busMetrics struct {
	published, cut prometheus.Counter
	streams        prometheus.Gauge
}

type pendingEvent struct {
	rec  *Record
	done chan publishResult
}

// bus is the event bus actor. Events are numbered on arrival, committed in
// batches by a goroutine (one synced transaction per batch, trimming the
// log to its size in the same transaction), and only then shown to anyone.
type bus struct {
	log    *store.SeqLog
	opts   BusOptions
	m      busMetrics
	logger zerolog.Logger
	self   *Bus

	nextID   uint64
	gc       *store.GroupCommit[pendingEvent]
	send     func(any) // to the bus itself: the commit's report
	stopping bool      // a failed answer says the bus is shutting down

	ring     []*Record // committed events, oldest first, at most LogSize
	head     int       // index of the oldest when full
	edges    map[edgeKey]int
	subs     map[*Subscription]struct{}
	perKey   map[string]int
	watchers []*actor.PID
}

type edgeKey struct{ from, to, kind string }

func (b *bus) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		self, root := c.Self(), c.ActorSystem().Root
		b.send = func(msg any) { root.Send(self, msg) }
		b.gc = store.NewGroupCommit(store.GroupCommitOptions[pendingEvent]{
			MaxCount: b.opts.MaxBatch,
			// Larger commits go faster (fsync is per commit) until
			// Badger's transaction limit; count the bytes to stay under it.
			MaxBytes: b.log.DB().MaxBatchBytes(),
			Size:     func(p pendingEvent) int { return len(p.rec.JSON) + 64 },
			Commit:   b.commit,
			Done:     b.answer,
		})
		if err := b.load(); err != nil {
			panic(err)
		}
	case *publish:
		b.accept(m)
		b.gc.Flush(b.send)
	case *store.Committed[pendingEvent]:
		b.committed(c, m)
	case *Query:
		c.Respond(b.query(m))
	case *Subscribe:
		r, err := b.subscribe(m)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(r)
	case *unsubscribe:
		b.drop(m.sub, false)
	case *Watch:
		// A restarted watcher keeps its PID: register it once.
		if !slices.ContainsFunc(b.watchers, m.PID.Equal) {
			b.watchers = append(b.watchers, m.PID)
		}
		c.Send(m.PID, &Watching{Latest: b.latest()})
	case *EdgesQuery:
		c.Respond(b.edgeList())
	case *actor.Stopping:
		// Let a commit in flight finish before the store can be closed,
		// then commit what arrived meanwhile: a graceful stop drains the
		// mailbox first (kernel.Shutdown poisons), so every event published
		// before it is kept, as it would be had the daemon stayed up.
		b.drainOnStop()
		for s := range b.subs {
			b.drop(s, false)
		}
	}
}

// load rebuilds the ring, the edge counts and the next id from the log.
func (b *bus) load() error {
	b.ring, b.head = make([]*Record, 0, min(b.opts.LogSize, 65536)), 0
	b.gc.Reset()
	b.edges, b.nextID = map[edgeKey]int{}, 1
	if b.subs == nil {
		b.subs, b.perKey = map[*Subscription]struct{}{}, map[string]int{}
	}
	var held []*Record
	err := b.log.Scan(0, true, func(_ uint64, raw []byte) (bool, error) {
		r, err := decodeRecord(raw)
		if err != nil {
			return false, err
		}
		held = append(held, r)
		return len(held) < b.opts.LogSize, nil
	})
	if err != nil {
		return fmt.Errorf("load comms event log: %w", err)
	}
	for i := len(held) - 1; i >= 0; i-- {
		b.remember(held[i])
	}
	if len(held) > 0 {
		b.nextID = held[0].ID + 1
	}
	return nil
}

func decodeRecord(raw []byte) (*Record, error) {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("stored event does not decode: %w", err)
	}
	r := &Record{ID: e.ID, Type: e.Type, Source: e.Source, Target: e.Target, JSON: raw}
	// Routes: message.routed says its kind in "kind"; other events that
	// are routes (channel messages) in "route".
	if e.Type == "message.routed" || bytes.Contains(e.Detail, []byte(`"route"`)) {
		var d struct {
			Kind  string `json:"kind"`
			Route string `json:"route"`
		}
		_ = json.Unmarshal(e.Detail, &d)
		r.Edge = d.Route
		if e.Type == "message.routed" {
			r.Edge = d.Kind
		}
	}
	return r, nil
}

func (b *bus) accept(m *publish) {
	detail := m.detail
	id := b.nextID
	b.nextID++
	b.gc.Add(pendingEvent{
		rec:  &Record{ID: id, Type: m.typ, Source: m.source, Target: m.target, Edge: m.edge, JSON: encodeEvent(id, time.Now().UTC(), m, detail)},
		done: m.done,
	})
}

// withField adds key to a detail object so that the stored event says
// which route it was. It runs in the publisher's goroutine, and splices
// the field in when the object does not have it yet (decoding and
// re-encoding every routed event was a tenth of the bus actor's time).
func withField(detail json.RawMessage, key, value string) json.RawMessage {
	v, _ := json.Marshal(value)
	k, _ := json.Marshal(key)
	if n := len(detail); n >= 2 && detail[0] == '{' && detail[n-1] == '}' && !bytes.Contains(detail, k) {
		inner := bytes.TrimSpace(detail[1 : n-1])
		out := make([]byte, 0, n+len(k)+len(v)+3)
		out = append(append(append(append(out, '{'), k...), ':'), v...)
		if len(inner) > 0 {
			out = append(append(out, ','), inner...)
		}
		return append(out, '}')
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(detail, &obj) != nil || obj == nil {
		obj = map[string]json.RawMessage{}
	}
	obj[key], _ = json.Marshal(value)
	out, _ := json.Marshal(obj)
	return out
}

// commit writes a batch in one synced transaction, trimming the log to
// size. It touches no actor state: the in-flight writer runs it.
func (b *bus) commit(batch []pendingEvent) error {
	size := uint64(b.opts.LogSize)
	return b.log.DB().Write(func(tx *store.Txn) error {
		for _, p := range batch {
			if err := b.log.Put(tx, p.rec.ID, p.rec.JSON); err != nil {
				return err
			}
			if p.rec.ID > size {
				if err := b.log.Delete(tx, p.rec.ID-size); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// answer tells a publisher that waits whether its event is durable.
func (b *bus) answer(p pendingEvent, err error) {
	switch {
	case p.done == nil:
	case err == nil:
		p.done <- publishResult{id: p.rec.ID}
	case b.stopping:
		p.done <- publishResult{err: errors.New("event bus is shutting down: " + err.Error())}
	default:
		p.done <- publishResult{err: err}
	}
}

// drainOnStop commits what is still pending when the bus stops, in the
// actor (nothing else is served any more), and answers every waiter.
// Subscribers and watchers are not told: they are closed or stopping, and
// watchers catch up from the stored log when they start (Since).
func (b *bus) drainOnStop() {
	b.stopping = true
	lost := b.gc.Pending()
	if err := b.gc.Drain(); err != nil {
		b.logger.Error().Err(err).Int("events", lost).Msg("could not commit the last events on shutdown")
	}
}

// committed publishes a durable batch: its publishers were answered (by
// the group commit), now the ring, subscribers and watchers see it.
func (b *bus) committed(c actor.Context, m *store.Committed[pendingEvent]) {
	batch, err, ok := b.gc.Committed(m)
	if !ok {
		return
	}
	if err != nil {
		// Its publishers and every event queued behind it were failed.
		// Restart: ids are reloaded from what is on disk.
		panic(fmt.Errorf("comms event commit failed: %w", err))
	}
	recs := make([]*Record, len(batch))
	for i, p := range batch {
		recs[i] = p.rec
		b.remember(p.rec)
	}
	b.m.published.Add(float64(len(recs)))
	b.fanOut(recs)
	for _, w := range b.watchers {
		c.Send(w, &Batch{Records: recs})
	}
	b.gc.Flush(b.send)
}

// remember appends r to the ring, evicting (and uncounting) the oldest.
func (b *bus) remember(r *Record) {
	if r.Edge != "" {
		b.edges[edgeKey{r.Source, r.Target, r.Edge}]++
	}
	if len(b.ring) < b.opts.LogSize {
		b.ring = append(b.ring, r)
		return
	}
	old := b.ring[b.head]
	if old.Edge != "" {
		k := edgeKey{old.Source, old.Target, old.Edge}
		if b.edges[k]--; b.edges[k] <= 0 {
			delete(b.edges, k)
		}
	}
	b.ring[b.head] = r
	b.head = (b.head + 1) % len(b.ring)
}

// at returns the i-th held record, oldest first.
func (b *bus) at(i int) *Record { return b.ring[(b.head+i)%len(b.ring)] }

// oldest is the oldest id the log still holds (1 when it is empty).
func (b *bus) oldest() uint64 {
	if len(b.ring) == 0 {
		return 1
	}
	return b.at(0).ID
}

// latest is the newest committed id (0 when nothing was ever committed).
func (b *bus) latest() uint64 {
	if len(b.ring) == 0 {
		return 0
	}
	return b.at(len(b.ring) - 1).ID
}

func (b *bus) fanOut(recs []*Record) {
	for s := range b.subs {
		for _, r := range recs {
			if !Match(s.filter, r.Type) {
				continue
			}
			select {
			case s.ch <- r:
			default:
				b.drop(s, true)
			}
			if s.closed {
				break
			}
		}
	}
}

func (b *bus) drop(s *Subscription, slow bool) {
	if s.closed {
		return
	}
	s.closed = true
	if slow {
		s.cut.Store(true)
		b.m.cut.Inc()
		b.logger.Warn().Str("key", s.key).Msg("event subscriber cut: it fell behind by a full buffer")
	}
	delete(b.subs, s)
	if b.perKey[s.key]--; b.perKey[s.key] <= 0 {
		delete(b.perKey, s.key)
	}
	b.m.streams.Set(float64(len(b.subs)))
	close(s.ch)
}

func (b *bus) query(q *Query) *QueryReply {
	out := &QueryReply{Last: b.latest(), Oldest: b.oldest()}
	for i := len(b.ring) - 1; i >= 0; i-- {
		r := b.at(i)
		if r.ID <= q.SinceID {
			break
		}
		if Match(q.Type, r.Type) && (q.Target == "" || r.Target == q.Target) {
			out.Matched++
			if len(out.Events) < q.Limit {
				out.Events = append(out.Events, r)
			}
		}
	}
	return out
}

func (b *bus) subscribe(m *Subscribe) (*SubscribeReply, error) {
	if len(b.subs) >= b.opts.MaxStreams {
		return nil, kernel.Errorf(kernel.KindRateLimited, "comms_stream_limit",
			"too many active communication event streams (%d) on this daemon ([comms] max_streams)", b.opts.MaxStreams)
	}
	if b.perKey[m.Key] >= b.opts.MaxStreamsPerKey {
		return nil, kernel.Errorf(kernel.KindRateLimited, "comms_stream_limit",
			"too many active communication event streams (%d) for this caller", b.opts.MaxStreamsPerKey)
	}
	if m.Buffer <= 0 {
		m.Buffer = 4096
	}
	s := &Subscription{ch: make(chan *Record, m.Buffer), filter: m.Type, key: m.Key, bus: b.self}
	reply := &SubscribeReply{Sub: s}
	if m.Resume {
		oldest, latest := b.oldest(), b.latest()
		switch {
		case m.After > latest:
			reply.Gap = &Gap{Reason: "unknown_id", RequestedAfter: m.After, OldestAvailable: oldest, Latest: latest}
		case m.After+1 < oldest:
			reply.Gap = &Gap{Reason: "trimmed", RequestedAfter: m.After, OldestAvailable: oldest, Latest: latest,
				Missed: oldest - m.After - 1}
		}
		for i := range b.ring {
			r := b.at(i)
			if r.ID > m.After && Match(m.Type, r.Type) {
				reply.Replay = append(reply.Replay, r)
			}
		}
	}
	b.subs[s] = struct{}{}
	b.perKey[m.Key]++
	b.m.streams.Set(float64(len(b.subs)))
	return reply, nil
}

func (b *bus) edgeList() *EdgesReply {
	out := &EdgesReply{Edges: make([]Edge, 0, len(b.edges))}
	for k, n := range b.edges {
		out.Edges = append(out.Edges, Edge{From: k.from, To: k.to, Kind: k.kind, Messages: n})
	}
	slices.SortFunc(out.Edges, func(a, b Edge) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To), strings.Compare(a.Kind, b.Kind))
	})
	return out
}

// encodeEvent writes the Event JSON by hand: this is the bus's hot path,
// and encoding/json would reflect over the struct and re-compact the
// already encoded detail on every event.
func encodeEvent(id uint64, t time.Time, m *publish, detail json.RawMessage) []byte {
	b := make([]byte, 0, 96+len(m.typ)+len(m.source)+len(m.target)+len(detail))
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"timestamp":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	b = store.AppendJSONString(b, m.typ)
	b = append(b, `,"source":`...)
	b = store.AppendJSONString(b, m.source)
	b = append(b, `,"target":`...)
	b = store.AppendJSONString(b, m.target)
	b = append(b, `,"detail":`...)
	b = append(b, detail...)
	// LibreFang's CommsEvent fields beside the seed's: kind, and the ends
	// as ids and names. The bus knows no agent names; LibreFang itself
	// falls back to the id when it cannot resolve one, and so does this.
	b = append(b, `,"kind":`...)
	b = store.AppendJSONString(b, lfKind(m.typ, m.edge))
	src, dst := lfEnd(m.source), lfEnd(m.target)
	b = append(b, `,"source_id":`...)
	b = store.AppendJSONString(b, src)
	b = append(b, `,"source_name":`...)
	b = store.AppendJSONString(b, src)
	b = append(b, `,"target_id":`...)
	b = store.AppendJSONString(b, dst)
	b = append(b, `,"target_name":`...)
	b = store.AppendJSONString(b, dst)
	return append(b, '}')
}

// lfKind is LibreFang's CommsEventKind for an event type (agent_message,
// agent_spawned, agent_terminated, task_posted, task_completed); other
// events, which LibreFang's feed does not have, say their own type in
// snake case.
func lfKind(typ, edge string) string {
	switch typ {
	case "agent.message":
		return "agent_message"
	case "message.routed":
		if edge == "agent_message" {
			return "agent_message"
		}
	case "agent.spawned":
		return "agent_spawned"
	case "agent.terminated":
		return "agent_terminated"
	case "task.created":
		return "task_posted"
	case "task.completed":
		return "task_completed"
	}
	return strings.ReplaceAll(typ, ".", "_")
}

// lfEnd is an event end as LibreFang names it: an agent by its bare id.
func lfEnd(end string) string {
	if id, ok := strings.CutPrefix(end, "agent:"); ok && !strings.Contains(id, "/") {
		return id
	}
	return end
}
