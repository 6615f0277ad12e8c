package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/a2a"
)

// A2ATasks is the cluster's A2A task directory (docs/cluster.md "A2A
// tasks across the cluster"), a2a.Cluster on etcd. A task runs on the node
// that created it; under /fangd/a2a/<cluster>/ the directory keeps
//
//	t/<task id>           -> a2a.ClusterTask (node, state, the task record
//	                         as created, then as it ended: capped)
//	run/<node>/<task id>  -> "" while the task runs (what the sweep reads)
//	ctx/<context id>      -> the node of the context's latest task
//
// Writes are batched per node: whatever was queued while a Txn was in
// flight goes in the next one (up to a2aMaxOps operations and a2aMaxBytes),
// so concurrent SendMessage calls share etcd round trips. A registration
// waits for its Txn (the task's id is acknowledged only once any node can
// find it); a final entry does not. A final entry is written only if the
// task's entry is still the one this node registered (its mod revision):
// once the sweep has marked a task lost, the first final state stands.
//
// Every node sweeps every a2aSweepEvery: a running task whose node has had
// no node record for a2aLostGrace is marked failed ("lost") with a Txn
// conditioned on the entry's mod revision, so exactly one node does it.
//
// Entries live on a lease of ttl (plus up to a2aLeaseEvery: one lease is
// granted per a2aLeaseEvery and never kept alive), so etcd forgets a task
// on its own about ttl after its last write; nothing deletes entries.
type A2ATasks struct {
	cli   *clientv3.Client
	pre   string
	node  string
	log   zerolog.Logger
	ttl   time.Duration
	alive func(ctx context.Context) (map[string]bool, error)
	now   func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	wake   chan struct{}

	mu    sync.Mutex
	queue []a2aOp
	// revs is the mod revision of each running task's registration.
	revs       map[string]int64
	lease      clientv3.LeaseID
	leaseSince time.Time
	// missing is when the sweep first saw a node without a record.
	missing map[string]time.Time

	// commits counts Txns committed (tests, docs: batching).
	commits atomic.Int64
}

var _ a2a.Cluster = (*A2ATasks)(nil)

const (
	// a2aMaxOps stays under etcd's default --max-txn-ops (128).
	a2aMaxOps = 120
	// a2aMaxBytes stays under etcd's 1.5 MiB request limit.
	a2aMaxBytes = 1 << 20
	// a2aSweepEvery is how often each node looks for lost tasks.
	a2aSweepEvery = 2 * time.Second
	// a2aLostGrace is how long a node must have had no record before its
	// tasks count as lost (a lease renewal across an etcd blip).
	a2aLostGrace = 3 * time.Second
	// a2aLeaseEvery is how long one entry lease is used for new writes.
	a2aLeaseEvery = 10 * time.Minute
)

// A2ALostAfter bounds how long after its node died a running task is
// marked failed: the node record's lease, the grace, two sweeps.
const A2ALostAfter = recordTTL*time.Second + a2aLostGrace + 2*a2aSweepEvery

type a2aOpKind int

const (
	opRegister a2aOpKind = iota
	opFinish
	opForget
)

type a2aOp struct {
	kind a2aOpKind
	task a2a.ClusterTask
	raw  []byte
	done chan error // registrations wait
}

func (o *a2aOp) ops() int {
	if o.kind == opFinish {
		return 2
	}
	return 3
}

// StartA2A starts this node's task directory (writer and sweep) and hands
// it to the A2A service. ttl is how long entries stay in etcd.
func (n *Node) StartA2A(svc interface{ UseCluster(a2a.Cluster) }, ttl time.Duration) *A2ATasks {
	t := newA2ATasks(n.etcd, n.opts.Name, n.opts.NodeName, n.opts.Log, ttl, n.liveNodeNames)
	n.mu.Lock()
	n.a2a = t
	n.mu.Unlock()
	go t.writer()
	go t.sweeper()
	svc.UseCluster(t)
	return t
}

// A2A is the node's task directory, nil before StartA2A.
func (n *Node) A2A() *A2ATasks {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.a2a
}

// liveNodeNames are the node names with a record in etcd (alive, or dead
// for less than the record's lease).
func (n *Node) liveNodeNames(ctx context.Context) (map[string]bool, error) {
	resp, err := n.etcd.Get(ctx, "/fangd/nodes/"+n.opts.Name+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && r.NodeName != "" {
			out[r.NodeName] = true
		}
	}
	return out, nil
}

func newA2ATasks(cli *clientv3.Client, cluster, node string, log zerolog.Logger, ttl time.Duration, alive func(context.Context) (map[string]bool, error)) *A2ATasks {
	t := &A2ATasks{cli: cli, pre: "/fangd/a2a/" + cluster + "/", node: node, log: log, ttl: ttl, alive: alive,
		now: time.Now, done: make(chan struct{}), wake: make(chan struct{}, 1),
		revs: map[string]int64{}, missing: map[string]time.Time{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// NodeName is this node's name.
func (t *A2ATasks) NodeName() string { return t.node }

// hosted is how many tasks this node registered that have not ended (the
// node record's hosted.a2a_task).
func (t *A2ATasks) hosted() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.revs)
}

func (t *A2ATasks) taskKey(id string) string       { return t.pre + "t/" + id }
func (t *A2ATasks) runKey(node, id string) string  { return t.pre + "run/" + node + "/" + id }
func (t *A2ATasks) ctxKey(contextID string) string { return t.pre + "ctx/" + contextID }

func (t *A2ATasks) enqueue(op a2aOp) {
	t.mu.Lock()
	t.queue = append(t.queue, op)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Register implements a2a.Cluster.
func (t *A2ATasks) Register(ctx context.Context, task a2a.ClusterTask) error {
	raw, err := json.Marshal(task)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	t.enqueue(a2aOp{kind: opRegister, task: task, raw: raw, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.ctx.Done():
		return errors.New("a2a directory: stopped")
	}
}

// Finished implements a2a.Cluster.
func (t *A2ATasks) Finished(task a2a.ClusterTask) {
	raw, err := json.Marshal(task)
	if err != nil {
		t.log.Error().Err(err).Str("task", task.ID).Msg("a2a directory: final entry not encoded")
		return
	}
	t.enqueue(a2aOp{kind: opFinish, task: task, raw: raw})
}

// Forget implements a2a.Cluster.
func (t *A2ATasks) Forget(id, contextID string) {
	t.enqueue(a2aOp{kind: opForget, task: a2a.ClusterTask{ID: id, ContextID: contextID}})
}

// Running implements a2a.Cluster.
func (t *A2ATasks) Running(ctx context.Context) ([]string, error) {
	p := t.pre + "run/" + t.node + "/"
	resp, err := t.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key[len(p):]))
	}
	return out, nil
}

// Task reads task id's entry.
func (t *A2ATasks) Task(ctx context.Context, id string) (a2a.ClusterTask, bool, error) {
	var task a2a.ClusterTask
	resp, err := t.cli.Get(ctx, t.taskKey(id))
	if err != nil {
		return task, false, fmt.Errorf("a2a directory: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return task, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &task); err != nil {
		return task, false, fmt.Errorf("a2a directory: entry of %s: %w", id, err)
	}
	return task, true, nil
}

// ContextNode is the node of the latest task of contextID.
func (t *A2ATasks) ContextNode(ctx context.Context, contextID string) (string, bool, error) {
	resp, err := t.cli.Get(ctx, t.ctxKey(contextID))
	if err != nil {
		return "", false, fmt.Errorf("a2a directory: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// writer commits the queue in batches until the directory stops, then
// flushes what is left (bounded: a stopping node's final entries).
func (t *A2ATasks) writer() {
	defer close(t.done)
	for {
		select {
		case <-t.wake:
		case <-t.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for t.flush(ctx) {
			}
			cancel()
			t.failWaiters(errors.New("a2a directory: stopped"))
			return
		}
		for t.ctx.Err() == nil && t.flush(t.ctx) {
		}
	}
}

// flush commits one batch; it reports whether there was one.
func (t *A2ATasks) flush(ctx context.Context) bool {
	t.mu.Lock()
	n, ops, size := 0, 0, 0
	for n < len(t.queue) {
		o := &t.queue[n]
		if n > 0 && (ops+o.ops() > a2aMaxOps || size+len(o.raw)+256 > a2aMaxBytes) {
			break
		}
		ops += o.ops()
		size += len(o.raw) + 256
		n++
	}
	batch := append([]a2aOp(nil), t.queue[:n]...)
	t.queue = append(t.queue[:0], t.queue[n:]...)
	t.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	if err := t.commit(ctx, batch); err != nil {
		t.log.Warn().Err(err).Int("entries", len(batch)).Msg("a2a directory: etcd write failed")
		var retry []a2aOp
		for _, o := range batch {
			switch o.kind {
			case opRegister:
				o.done <- err
			default:
				retry = append(retry, o)
			}
		}
		if len(retry) > 0 && ctx.Err() == nil {
			// Final entries and forgets are retried (the host is alive:
			// nothing else writes them); the wait spaces the tries.
			t.mu.Lock()
			t.queue = append(retry, t.queue...)
			t.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return true
}

func (t *A2ATasks) failWaiters(err error) {
	t.mu.Lock()
	q := t.queue
	t.queue = nil
	t.mu.Unlock()
	for _, o := range q {
		if o.done != nil {
			o.done <- err
		}
	}
}

// entryLease is the lease new entries are written with: a fresh one every
// a2aLeaseEvery, of ttl + a2aLeaseEvery, never kept alive.
func (t *A2ATasks) entryLease(ctx context.Context) (clientv3.LeaseID, error) {
	now := t.now()
	t.mu.Lock()
	id, since := t.lease, t.leaseSince
	t.mu.Unlock()
	if id != 0 && now.Sub(since) < a2aLeaseEvery {
		return id, nil
	}
	g, err := t.cli.Grant(ctx, int64((t.ttl+a2aLeaseEvery)/time.Second))
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	t.lease, t.leaseSince = g.ID, now
	t.mu.Unlock()
	return g.ID, nil
}

// commit writes one batch in one Txn: registrations and forgets as they
// are, final entries conditioned on their registration's mod revision.
// A final entry whose condition failed is looked at again: dropped when
// the entry is final already (the sweep marked the task lost), retried
// with the new revision otherwise.
func (t *A2ATasks) commit(ctx context.Context, batch []a2aOp) error {
	lease, err := t.entryLease(ctx)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := t.knownRevisions(ctx, batch); err != nil {
			return err
		}
		var conds []clientv3.Cmp
		var then, els []clientv3.Op
		var finishes []int
		// etcd refuses a key twice in one Txn: tasks of one context
		// share its key, and a task's final entry may be queued twice
		// (a restart's reconciliation).
		seen := map[string]bool{}
		for i := range batch {
			o := &batch[i]
			id := o.task.ID
			switch o.kind {
			case opRegister:
				seen[t.taskKey(id)] = true // ids are new: never twice
				then = append(then, clientv3.OpPut(t.taskKey(id), string(o.raw), clientv3.WithLease(lease)),
					clientv3.OpPut(t.runKey(t.node, id), "", clientv3.WithLease(lease)))
				if k := t.ctxKey(o.task.ContextID); o.task.ContextID != "" && !seen[k] {
					seen[k] = true
					then = append(then, clientv3.OpPut(k, t.node, clientv3.WithLease(lease)))
				}
			case opFinish:
				if o.raw == nil || seen[t.taskKey(id)] { // dropped, or twice
					continue
				}
				seen[t.taskKey(id)] = true
				t.mu.Lock()
				rev := t.revs[id]
				t.mu.Unlock()
				if rev < 0 {
					conds = append(conds, clientv3.Compare(clientv3.CreateRevision(t.taskKey(id)), "=", 0))
				} else {
					conds = append(conds, clientv3.Compare(clientv3.ModRevision(t.taskKey(id)), "=", rev))
				}
				finishes = append(finishes, i)
				then = append(then, clientv3.OpPut(t.taskKey(id), string(o.raw), clientv3.WithLease(lease)),
					clientv3.OpDelete(t.runKey(t.node, id)))
				els = append(els, clientv3.OpGet(t.taskKey(id)))
			case opForget:
				if seen[t.taskKey(id)] {
					continue
				}
				seen[t.taskKey(id)] = true
				then = append(then, clientv3.OpDelete(t.taskKey(id)), clientv3.OpDelete(t.runKey(t.node, id)))
			}
		}
		if len(then) == 0 {
			return nil
		}
		resp, err := t.cli.Txn(ctx).If(conds...).Then(then...).Else(els...).Commit()
		if err != nil {
			return err
		}
		t.commits.Add(1)
		if resp.Succeeded {
			t.mu.Lock()
			for i := range batch {
				o := &batch[i]
				switch o.kind {
				case opRegister:
					t.revs[o.task.ID] = resp.Header.Revision
				case opFinish, opForget:
					delete(t.revs, o.task.ID)
				}
			}
			t.mu.Unlock()
			for _, o := range batch {
				if o.done != nil {
					o.done <- nil
				}
			}
			return nil
		}
		// Some final entry's condition failed: see what is there now.
		for j, i := range finishes {
			o := &batch[i]
			rr := resp.Responses[j].GetResponseRange()
			t.mu.Lock()
			if rr == nil || len(rr.Kvs) == 0 {
				t.revs[o.task.ID] = -1
				t.mu.Unlock()
				continue
			}
			t.mu.Unlock()
			var cur a2a.ClusterTask
			if json.Unmarshal(rr.Kvs[0].Value, &cur) == nil && cur.Terminal() {
				t.log.Warn().Str("task", o.task.ID).Str("cluster_state", string(cur.State)).Str("local_state", string(o.task.State)).
					Msg("a2a directory: the cluster had already marked this task final; its final state here stays on this node")
				o.raw = nil
				t.mu.Lock()
				delete(t.revs, o.task.ID)
				t.mu.Unlock()
				continue
			}
			t.mu.Lock()
			t.revs[o.task.ID] = rr.Kvs[0].ModRevision
			t.mu.Unlock()
		}
		if attempt >= 3 {
			return errors.New("a2a directory: final entries kept changing under this node")
		}
	}
}

// knownRevisions finds the registration revision of final entries this
// node did not register in this process (a restart): the entry's current
// mod revision, or -1 for none; a final one is dropped.
func (t *A2ATasks) knownRevisions(ctx context.Context, batch []a2aOp) error {
	for i := range batch {
		o := &batch[i]
		if o.kind != opFinish || o.raw == nil {
			continue
		}
		t.mu.Lock()
		_, ok := t.revs[o.task.ID]
		t.mu.Unlock()
		if ok {
			continue
		}
		resp, err := t.cli.Get(ctx, t.taskKey(o.task.ID))
		if err != nil {
			return err
		}
		rev := int64(-1)
		if len(resp.Kvs) > 0 {
			var cur a2a.ClusterTask
			if json.Unmarshal(resp.Kvs[0].Value, &cur) == nil && cur.Terminal() {
				o.raw = nil // final already: the first final state stands
				_, _ = t.cli.Delete(ctx, t.runKey(t.node, o.task.ID))
				continue
			}
			rev = resp.Kvs[0].ModRevision
		}
		t.mu.Lock()
		t.revs[o.task.ID] = rev
		t.mu.Unlock()
	}
	return nil
}

// sweeper runs the lost-task sweep every a2aSweepEvery.
func (t *A2ATasks) sweeper() {
	tick := time.NewTicker(a2aSweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
			if err := t.sweep(ctx); err != nil && t.ctx.Err() == nil {
				t.log.Debug().Err(err).Msg("a2a directory: sweep skipped (etcd did not answer)")
			}
			cancel()
		}
	}
}

// sweep marks failed every running task of a node that has had no node
// record for a2aLostGrace. It returns how many it marked.
func (t *A2ATasks) sweep(ctx context.Context) error {
	_, err := t.sweepOnce(ctx)
	return err
}

func (t *A2ATasks) sweepOnce(ctx context.Context) (int, error) {
	p := t.pre + "run/"
	resp, err := t.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	byNode := map[string][]string{}
	for _, kv := range resp.Kvs {
		node, id, ok := strings.Cut(string(kv.Key[len(p):]), "/")
		if ok && node != t.node {
			byNode[node] = append(byNode[node], id)
		}
	}
	if len(byNode) == 0 {
		return 0, nil
	}
	alive, err := t.alive(ctx)
	if err != nil {
		return 0, err
	}
	now := t.now()
	marked := 0
	t.mu.Lock()
	for node := range t.missing {
		if alive[node] {
			delete(t.missing, node)
		}
	}
	t.mu.Unlock()
	for node, ids := range byNode {
		if alive[node] {
			continue
		}
		t.mu.Lock()
		since, seen := t.missing[node]
		if !seen {
			t.missing[node] = now
		}
		t.mu.Unlock()
		if !seen || now.Sub(since) < a2aLostGrace {
			continue
		}
		for _, id := range ids {
			ok, err := t.markLost(ctx, node, id, now)
			if err != nil {
				return marked, err
			}
			if ok {
				marked++
			}
		}
	}
	return marked, nil
}

// markLost fails one running task of a dead node, unless its entry moved
// meanwhile; it reports whether this node did it.
func (t *A2ATasks) markLost(ctx context.Context, node, id string, now time.Time) (bool, error) {
	resp, err := t.cli.Get(ctx, t.taskKey(id))
	if err != nil {
		return false, err
	}
	if len(resp.Kvs) == 0 {
		_, err := t.cli.Delete(ctx, t.runKey(node, id))
		return false, err
	}
	var cur a2a.ClusterTask
	if err := json.Unmarshal(resp.Kvs[0].Value, &cur); err != nil || cur.Terminal() {
		_, err := t.cli.Delete(ctx, t.runKey(node, id))
		return false, err
	}
	lost := cur.Lost(now)
	raw, err := json.Marshal(lost)
	if err != nil {
		return false, err
	}
	// The entry keeps its lease (its ttl runs from the registration).
	opts := []clientv3.OpOption{}
	if l := resp.Kvs[0].Lease; l != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(l)))
	}
	tr, err := t.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(t.taskKey(id)), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(t.taskKey(id), string(raw), opts...), clientv3.OpDelete(t.runKey(node, id))).
		Commit()
	if err != nil {
		return false, err
	}
	if tr.Succeeded {
		t.log.Info().Str("task", id).Str("node", node).Msg("a2a task of a node that left the cluster marked failed")
	}
	return tr.Succeeded, nil
}

// stop ends the writer (after a bounded last flush) and the sweep.
func (t *A2ATasks) stop() {
	t.once.Do(func() {
		t.cancel()
		<-t.done
	})
}
