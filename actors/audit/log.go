package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Options configure the audit log.
type Options struct {
	AnchorPath string
	// MaxBatch caps how many appends share one commit. 1 turns group commit
	// off (one fsync per append); the bench compares the two.
	MaxBatch int
	// OnMismatch is what start-up does when the anchor and the stored
	// chain disagree: "refuse" (the default: Start returns the *Mismatch)
	// or "degraded" (start, and report the audit trail broken until an
	// operator runs `fangd audit accept`).
	OnMismatch string
	// RetainEntries keeps only the newest entries of the chain, trimming
	// (exported to ArchiveDir first, with a checkpoint entry) at start and
	// every ten minutes; 0 keeps everything.
	RetainEntries uint64
	// RetainAge trims, the same way, the entries older than it; 0 keeps
	// entries of any age.
	RetainAge  time.Duration
	ArchiveDir string
}

// Mismatch modes ([audit] on_anchor_mismatch).
const (
	OnMismatchRefuse   = "refuse"
	OnMismatchDegraded = "degraded"
)

// Log is the handle other packages use to append to and read the chain.
type Log struct {
	k          *kernel.Kernel
	pid        *actor.PID
	store      *store.AuditLog
	anchorPath string
	recent     *recentView // the writer's, published after every commit
	// broken is the anchor mismatch found at start-up (degraded mode); the
	// writer clears it once an acceptance is durable (Accept).
	broken atomic.Pointer[Mismatch]

	stopRetention chan struct{}
}

// Start spawns the audit writer as the root actor "audit".
func Start(k *kernel.Kernel, db *store.DB, opts Options) (*Log, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	al := db.AuditLog()
	cur, broken, err := CheckAnchor(al, opts.AnchorPath, db.Fresh())
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	switch {
	case broken != nil && opts.OnMismatch != OnMismatchDegraded:
		return nil, broken
	case broken != nil:
		k.Log.Error().Str("component", "audit").Str("anchor_status", broken.AnchorStatus).
			Str("expected", broken.Expected).Str("found", broken.Found).
			Msg("audit anchor mismatch: running degraded, the audit trail reads broken until `fangd audit accept`")
	default:
		// New, or behind the chain after a crash between a commit and
		// its anchor write: catch it up.
		if err := WriteAnchor(opts.AnchorPath, cur); err != nil {
			return nil, fmt.Errorf("write the audit anchor: %w", err)
		}
	}
	appends := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fangd_audit_appends_total", Help: "Audit entries durably appended."})
	commits := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fangd_audit_commits_total", Help: "Synced audit batches (group commits)."})
	for _, c := range []prometheus.Collector{appends, commits} {
		if err := k.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	l := &Log{k: k, store: al, anchorPath: opts.AnchorPath, recent: &recentView{}}
	l.broken.Store(broken)
	pid, err := k.SpawnRoot("audit", func() actor.Actor {
		return &writer{log: al, anchorPath: opts.AnchorPath, maxBatch: opts.MaxBatch, broken: &l.broken, recent: l.recent,
			appends: appends, commits: commits, logger: k.Log.With().Str("component", "audit").Logger()}
	}, actor.WithDispatcher(kernel.PinnedDispatcher(300))) // every audited call passes through it
	if err != nil {
		return nil, err
	}
	l.pid = pid
	// Recent reads what the writer publishes, so the writer must have
	// loaded the stored chain before the log is handed out: a read right
	// after a restart would otherwise find it empty.
	if _, err := kernel.Ask[*SnapshotReply](context.Background(), k, pid, &Snapshot{}); err != nil {
		return nil, fmt.Errorf("audit log: the writer did not start: %w", err)
	}
	k.Security.Register("merkle_audit_trail", l.state)
	if (opts.RetainEntries > 0 || opts.RetainAge > 0) && opts.ArchiveDir == "" {
		opts.ArchiveDir = filepath.Join(filepath.Dir(opts.AnchorPath), "audit-archive")
	}
	l.startRetention(Retention{Entries: opts.RetainEntries, MaxAge: opts.RetainAge}, opts.ArchiveDir)
	return l, nil
}

// state is active while the writer is alive, degraded while an anchor
// mismatch found at start-up is not accepted.
func (l *Log) state() kernel.State {
	if l.broken.Load() != nil {
		return kernel.StateDegraded
	}
	if _, ok := l.k.System.ProcessRegistry.Get(l.pid); ok {
		return kernel.StateActive
	}
	return kernel.StateInactive
}

// Append records ev and returns once its entry is durable.
func (l *Log) Append(ctx context.Context, ev Event) (Entry, error) {
	// The event travels inside the request: a slice of its own was one
	// more allocation per append.
	m := &appendRequest{one: [1]Event{ev}}
	m.events = m.one[:]
	es, err := l.append(ctx, m)
	if err != nil {
		return Entry{}, err
	}
	return es[0], nil
}

// AppendAll records evs as consecutive entries of the chain, in their
// order, and returns once all of them are durable. They reach the writer
// in one message and are committed in one synced transaction: a caller
// with two entries to make for one action (a POST /mcp tools/call: the
// exposer's tool_invoked and the request's api_request) waits for one
// commit, not two in series.
func (l *Log) AppendAll(ctx context.Context, evs ...Event) ([]Entry, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	return l.append(ctx, &appendRequest{events: evs})
}

// append hands m to the writer and waits until its entries are durable.
func (l *Log) append(ctx context.Context, m *appendRequest) ([]Entry, error) {
	if err := l.store.Admits(); err != nil {
		// The disk is below even the audit log's share of the reserve:
		// refuse before the entry is chained, not after (a failed commit
		// restarts the writer).
		return nil, err
	}
	m.done = make(chan appendResult, 1)
	l.k.Root.Send(l.pid, m)
	select {
	case r := <-m.done:
		return r.entries, r.err
	case <-ctx.Done():
		return nil, kernel.Unavailable("audit log did not confirm the write in time")
	}
}

// Recent returns up to limit newest committed entries, newest first. It
// answers 503 actor_unavailable when the writer is not running, and
// request_cancelled or actor_timeout when ctx has ended, like kernel.Ask,
// but reads the entries the writer publishes after every commit
// (recentView) instead of asking it: GET /api/audit/recent is a measured
// hot path (docs/architecture.md, "Asking an actor"; docs/bench.md).
func (l *Log) Recent(ctx context.Context, limit int) (*RecentReply, error) {
	if _, alive := l.k.System.ProcessRegistry.Get(l.pid); !alive {
		return nil, &kernel.Error{Kind: kernel.KindUnavailable, Code: "actor_unavailable",
			Msg: l.pid.Id + " is not running", Err: actor.ErrDeadLetter}
	}
	if err := ctx.Err(); err != nil {
		return nil, kernel.AskEnded(l.pid, err)
	}
	return l.recent.reply(limit), nil
}

// RecentItems is Recent for a caller that serves only the items (GET
// /api/audit/recent): they are appended to dst, which the caller may
// keep on its stack, with the chain's length and tip read at the same
// moment. Recent's reply (two slices and the reply itself) was three of
// that route's eleven allocations per request.
func (l *Log) RecentItems(ctx context.Context, limit int, dst [][]byte) (items [][]byte, total uint64, tip string, err error) {
	if _, alive := l.k.System.ProcessRegistry.Get(l.pid); !alive {
		return dst, 0, "", &kernel.Error{Kind: kernel.KindUnavailable, Code: "actor_unavailable",
			Msg: l.pid.Id + " is not running", Err: actor.ErrDeadLetter}
	}
	if err := ctx.Err(); err != nil {
		return dst, 0, "", kernel.AskEnded(l.pid, err)
	}
	items, total, tip = l.recent.items(limit, dst)
	return items, total, tip, nil
}

// Verify walks the whole committed chain and checks the anchor.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	snap, err := kernel.Ask[*SnapshotReply](ctx, l.k, l.pid, &Snapshot{})
	if err != nil {
		return Report{}, err
	}
	rep, err := Verify(l.store, l.anchorPath, snap.Length)
	if m := l.broken.Load(); err == nil && m != nil {
		rep.markMismatch(m)
	}
	return rep, err
}

// Stop ends the retention goroutine; the daemon calls it before stopping
// the actors.
func (l *Log) Stop() {
	if l.stopRetention != nil {
		close(l.stopRetention)
		l.stopRetention = nil
	}
}

// Broken is the anchor mismatch this daemon started with (degraded mode),
// nil when the anchor matched.
func (l *Log) Broken() *Mismatch { return l.broken.Load() }

// ErrNothingToAccept is Accept's answer when the anchor matched at
// start-up, or its mismatch is accepted already.
var ErrNothingToAccept = &kernel.Error{Kind: kernel.KindConflict, Code: "nothing_to_accept",
	Msg: "the audit anchor matches the stored chain: there is no mismatch to accept"}

// Accept is `fangd audit accept` for a running, degraded daemon: it
// appends the same audit_anchor_accepted entry (AcceptEvent), and only
// once that entry is durable does the writer re-anchor on it, so the
// anchor never moves past a break that is not on the record. From then on
// the audit trail verifies and the daemon is no longer degraded. who
// names the caller in the entry.
func (l *Log) Accept(ctx context.Context, reason, who, sourceIP string) (Entry, error) {
	m := l.broken.Load()
	if m == nil {
		return Entry{}, ErrNothingToAccept
	}
	ev := AcceptEvent(m, who, reason)
	ev.SourceIP = sourceIP
	done := make(chan appendResult, 1)
	l.k.Root.Send(l.pid, &appendRequest{events: []Event{ev}, done: done, accept: true})
	select {
	case r := <-done:
		if r.err != nil {
			return Entry{}, r.err
		}
		return r.entries[0], nil
	case <-ctx.Done():
		return Entry{}, kernel.Unavailable("audit log did not confirm the acceptance in time")
	}
}

// AppendTimeout bounds how long a request waits for its audit entry.
const AppendTimeout = 10 * time.Second
