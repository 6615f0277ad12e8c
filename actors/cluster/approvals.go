package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/approval"
)

// Approvals keeps approval requests cluster-wide (docs/cluster.md,
// "Approvals across the cluster"). It is approval.Cluster on etcd: one
// small record per request under /fangd/appr/<cluster>/<id> (no payload,
// no secret), written by the node that raised it (its origin). A decision
// is one Txn conditioned on the record's mod revision while it is pending,
// so of two nodes deciding at once exactly one wins. Each node
//
//   - watches the records and hands a decided one of its own requests to
//     the approvals supervisor (the waiting tool call resumes), after
//     catching up on every record when the watch (re)starts;
//   - sweeps every sweepEvery: a pending record past its deadline is
//     marked expired (the same CAS), whoever raised it, so the death of
//     the origin never leaves a request pending; decided records older
//     than keepDecided are removed.
type Approvals struct {
	cli      *clientv3.Client
	pre      string
	nodeName string
	log      zerolog.Logger
	apply    func(approval.ClusterRecord)
	now      func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

const (
	sweepEvery = time.Second
	// keepDecided is how long a decided record stays listed cluster-wide
	// (the origin keeps its own copy as on a single node).
	keepDecided = time.Hour
)

var _ approval.Cluster = (*Approvals)(nil)

// ApprovalRuntime is the approvals side (approval.Approvals).
type ApprovalRuntime interface {
	UseCluster(approval.Cluster)
	ApplyCluster(approval.ClusterRecord)
}

// StartApprovals hands the approvals this store and starts the watch and
// the sweep.
func (n *Node) StartApprovals(rt ApprovalRuntime) *Approvals {
	a := newApprovals(n.etcd, n.opts.Name, n.opts.NodeName, n.opts.Log, rt.ApplyCluster)
	n.mu.Lock()
	n.approvals = a
	n.mu.Unlock()
	rt.UseCluster(a)
	go a.loop()
	return a
}

func newApprovals(cli *clientv3.Client, cluster, nodeName string, log zerolog.Logger, apply func(approval.ClusterRecord)) *Approvals {
	a := &Approvals{cli: cli, pre: "/fangd/appr/" + cluster + "/", nodeName: nodeName, log: log, apply: apply,
		now: time.Now, done: make(chan struct{})}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a
}

// NodeName is this node's name, the origin of the requests it raises.
func (a *Approvals) NodeName() string { return a.nodeName }

func (a *Approvals) key(id string) string { return a.pre + id }

// Put stores a new pending record (only if the id is new: a record is
// never put back to pending).
func (a *Approvals) Put(ctx context.Context, rec approval.ClusterRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(a.key(rec.ID)), "=", 0)).
		Then(clientv3.OpPut(a.key(rec.ID), string(b))).Commit()
	return err
}

// Get reads one record.
func (a *Approvals) Get(ctx context.Context, id string) (approval.ClusterRecord, bool, error) {
	var rec approval.ClusterRecord
	r, err := a.cli.Get(ctx, a.key(id))
	if err != nil || len(r.Kvs) == 0 {
		return rec, false, err
	}
	return rec, json.Unmarshal(r.Kvs[0].Value, &rec) == nil, nil
}

// List reads every record.
func (a *Approvals) List(ctx context.Context) ([]approval.ClusterRecord, error) {
	recs, _, err := a.list(ctx)
	return recs, err
}

type stored struct {
	rec approval.ClusterRecord
	rev int64 // mod revision
}

func (a *Approvals) list(ctx context.Context) ([]approval.ClusterRecord, []stored, error) {
	r, err := a.cli.Get(ctx, a.pre, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, err
	}
	recs := make([]approval.ClusterRecord, 0, len(r.Kvs))
	kvs := make([]stored, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var rec approval.ClusterRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		recs = append(recs, rec)
		kvs = append(kvs, stored{rec: rec, rev: kv.ModRevision})
	}
	return recs, kvs, nil
}

// Decide is the compare-and-swap pending -> decided (approval.Cluster).
func (a *Approvals) Decide(ctx context.Context, id string, next func(approval.ClusterRecord) approval.ClusterRecord) (approval.ClusterRecord, bool, bool, error) {
	for {
		r, err := a.cli.Get(ctx, a.key(id))
		if err != nil {
			return approval.ClusterRecord{}, false, false, err
		}
		if len(r.Kvs) == 0 {
			return approval.ClusterRecord{}, false, false, nil
		}
		var cur approval.ClusterRecord
		if err := json.Unmarshal(r.Kvs[0].Value, &cur); err != nil {
			return cur, false, false, err
		}
		if cur.Status != approval.StatusPending {
			return cur, false, true, nil
		}
		want, won := next(cur), true
		if now := a.now(); !now.Before(cur.Deadline) && want.Status != approval.StatusExpired && want.DecidedVia != approval.ViaTimeout {
			// Too late: the deadline holds whoever decides (the origin's
			// own timeout action, e.g. approving a low-risk call, passes).
			want, won = a.expired(cur, now), false
		}
		b, err := json.Marshal(want)
		if err != nil {
			return cur, false, true, err
		}
		t, err := a.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(a.key(id)), "=", r.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(a.key(id), string(b))).Commit()
		if err != nil {
			return cur, false, true, err
		}
		if t.Succeeded {
			return want, won, true, nil
		}
		// Changed meanwhile (another decider): read it again.
	}
}

func (a *Approvals) expired(cur approval.ClusterRecord, now time.Time) approval.ClusterRecord {
	now = now.UTC()
	cur.Status, cur.DecidedAt, cur.DecidedBy, cur.DecidedVia, cur.DecidedOn = approval.StatusExpired, &now, "system", approval.ViaTimeout, a.nodeName
	cur.Reason = "no decision in time"
	return cur
}

func (a *Approvals) loop() {
	defer close(a.done)
	for a.ctx.Err() == nil {
		a.watch()
		select {
		case <-a.ctx.Done():
		case <-time.After(sweepEvery):
		}
	}
}

// watch catches up on every record, then follows changes, sweeping every
// sweepEvery, until the watch ends (then the loop starts it again).
func (a *Approvals) watch() {
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	r, err := a.cli.Get(ctx, a.pre, clientv3.WithPrefix())
	cancel()
	if err != nil {
		if a.ctx.Err() == nil {
			a.log.Warn().Err(err).Msg("approvals: etcd did not answer; retrying")
		}
		return
	}
	for _, kv := range r.Kvs {
		a.seen(kv.Value)
	}
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(a.ctx))
	defer wcancel()
	wch := a.cli.Watch(wctx, a.pre, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1))
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-tick.C:
			a.sweep()
		case w, ok := <-wch:
			if !ok || w.Err() != nil {
				return
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypePut {
					a.seen(ev.Kv.Value)
				}
			}
		}
	}
}

// seen hands a decided record of this node's own requests to the runtime.
func (a *Approvals) seen(v []byte) {
	var rec approval.ClusterRecord
	if json.Unmarshal(v, &rec) != nil || rec.Node != a.nodeName || rec.Status == approval.StatusPending {
		return
	}
	a.apply(rec)
}

// sweep marks every pending record past its deadline expired and removes
// old decided ones.
func (a *Approvals) sweep() {
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	_, kvs, err := a.list(ctx)
	if err != nil {
		return
	}
	now := a.now()
	for _, s := range kvs {
		switch {
		case s.rec.Status == approval.StatusPending && !now.Before(s.rec.Deadline):
			_, won, _, err := a.Decide(ctx, s.rec.ID, func(cur approval.ClusterRecord) approval.ClusterRecord { return a.expired(cur, now) })
			if err == nil && won {
				a.log.Info().Str("approval_id", s.rec.ID).Str("origin", s.rec.Node).Msg("approval past its deadline marked expired")
			}
		case s.rec.Status != approval.StatusPending && s.rec.DecidedAt != nil && now.Sub(*s.rec.DecidedAt) > keepDecided:
			_, _ = a.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(a.key(s.rec.ID)), "=", s.rev)).
				Then(clientv3.OpDelete(a.key(s.rec.ID))).Commit()
		}
	}
}

// stop ends the watch and the sweep.
func (a *Approvals) stop() {
	a.once.Do(func() {
		a.cancel()
		<-a.done
	})
}
