package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Cluster mode (docs/cluster.md, "Channels across the cluster"): channel
// records, their sealed secrets and each channel's durable state (inbox,
// outbox, cursors, sequence reservation) live in etcd instead of the
// node's Badger, and a channel's actor runs only on the node that holds
// the channel's ownership lease. actors/cluster implements Cluster on etcd
// and decides ownership; this file is the channel runtime's side of it.

// Cluster is the cluster-wide store of channels.
type Cluster interface {
	// PutChannel stores a channel's record (JSON) and its sealed secrets,
	// replacing the previous ones, in one transaction, with its account
	// fingerprint (accountKey, "" for none) claimed cluster-wide: another
	// channel holding it is an error wrapping ErrAccountTaken.
	PutChannel(ctx context.Context, name string, rec []byte, sealed map[string][]byte, account string) error
	// DeleteChannel removes a channel's record, secrets, state and owner.
	DeleteChannel(ctx context.Context, name string) error
	// State reads a channel's state keys (relative: "in/…", "out/…",
	// "cur/…") and values.
	State(ctx context.Context, name string) (map[string][]byte, error)
	// Commit applies ops to a channel's state in one transaction, only if
	// this node still holds the channel's ownership lease (fencing: a
	// node that lost it can never write a cursor or queue). ops must fit
	// one etcd transaction (MaxOps, MaxBytes).
	Commit(ctx context.Context, name string, ops []StateOp) error
	// Kick asks for an ownership round now (a channel was created).
	Kick()
}

// ErrAccountTaken is PutChannel's error when another channel of the
// cluster uses the same platform account (one poller per bot token).
var ErrAccountTaken = errors.New("another channel uses this bot account")

// StateOp is one write to a channel's state: a put, or a delete.
type StateOp struct {
	Key    string
	Value  []byte
	Delete bool
}

// Limits of one state transaction: etcd refuses more than 128 operations
// (--max-txn-ops) or 1.5 MiB (--max-request-bytes) per request by default;
// the fencing compare and a margin are left.
const (
	MaxOps   = 120
	MaxBytes = 1 << 20
)

// ClusterChannel is one channel as the ownership round saw it.
type ClusterChannel struct {
	Name   string
	Record []byte
	Sealed map[string][]byte
	// Node hosts the channel ("" while nobody holds it); Mine is true
	// when it is this node, with its lease alive.
	Node string
	Mine bool
}

// StateRemote is a cluster channel hosted by another node (Status.Node
// names it), or by none yet.
const StateRemote = "remote"

// clusterState is the runtime's cluster side: the records and sealed
// secrets from the last ownership round (or this node's own writes).
type clusterState struct {
	mu     sync.Mutex
	cl     Cluster
	recs   map[string]record
	raw    map[string]string
	sealed map[string]map[string][]byte
}

func (c *clusterState) store() Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cl
}

// errNoCluster is a cluster store call before the node joined.
var errNoCluster = kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "the cluster is not joined yet")

// UseCluster hands over the cluster store once the node joined (cluster
// mode starts the channels before the membership, which needs the API
// listener's address). Only for a Service started with Clustered.
func (s *Service) UseCluster(cl Cluster) {
	s.rt.clu.mu.Lock()
	s.rt.clu.cl = cl
	s.rt.clu.mu.Unlock()
}

// Clustered reports whether channels are cluster-wide.
func (s *Service) Clustered() bool { return s.rt.clu != nil }

// ApplyCluster hands the supervisor the result of an ownership round: it
// starts the channels this node now holds, stops those it lost, and lists
// the others as hosted elsewhere.
func (s *Service) ApplyCluster(chans []ClusterChannel) {
	s.rt.k.Root.Send(s.pid, &clusterView{chans: chans})
}

// Hosting is which node hosts each configured channel ("" for none), for
// GET /api/cluster.
func (s *Service) Hosting(ctx context.Context) (map[string]string, error) {
	snaps, err := s.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(snaps))
	for n, sn := range snaps {
		out[n] = sn.status.Node
	}
	return out, nil
}

// clusterView is an ownership round's result, for the supervisor.
type clusterView struct{ chans []ClusterChannel }

// applyCluster reconciles the children with an ownership round.
func (s *supervisor) applyCluster(c actor.Context, v *clusterView) {
	cs := s.rt.clu
	seen := map[string]bool{}
	for _, cc := range v.chans {
		seen[cc.Name] = true
		if s.removing[cc.Name] {
			continue
		}
		var rec record
		if err := json.Unmarshal(cc.Record, &rec); err != nil || rec.Name != cc.Name {
			s.rt.log.Error().Str("channel", cc.Name).Msg("cluster channel record unreadable; skipped")
			continue
		}
		cs.mu.Lock()
		changed := cs.raw[cc.Name] != string(cc.Record)
		cs.recs[cc.Name], cs.raw[cc.Name], cs.sealed[cc.Name] = rec, string(cc.Record), cc.Sealed
		cs.mu.Unlock()
		ch := s.children[cc.Name]
		if ch == nil {
			ch = &child{rec: rec, wg: &sync.WaitGroup{}}
			s.children[cc.Name] = ch
		}
		ch.rec = rec
		switch {
		case cc.Mine && ch.pid == nil && ch.crashed && !changed:
			// Stopped after repeated crashes: kept in error, as on a
			// single node, until reconfigured through any node.
		case cc.Mine && ch.pid == nil:
			ch.crashed = false
			ch.status = Status{Node: cc.Node}
			s.spawn(c, ch)
			s.rt.log.Info().Str("channel", cc.Name).Msg("channel taken over by this node")
		case cc.Mine && changed:
			c.Send(ch.pid, &reconfigure{})
		case !cc.Mine && ch.pid != nil:
			// Lost the lease (or the etcd link): stop polling at once;
			// every write of the old actor is fenced anyway.
			c.Stop(ch.pid)
			ch.pid = nil
			s.rt.log.Warn().Str("channel", cc.Name).Str("now_on", cc.Node).Msg("channel no longer hosted here; stopped")
		}
		if !cc.Mine {
			ch.status = Status{State: StateRemote, Node: cc.Node}
		}
		ch.status.Node = cc.Node
	}
	for name, ch := range s.children {
		if seen[name] || s.removing[name] {
			continue
		}
		// Deleted through another node.
		if ch.pid != nil {
			c.Stop(ch.pid)
		}
		if ch.account != "" && s.accounts[ch.account] == name {
			delete(s.accounts, ch.account)
		}
		delete(s.children, name)
		cs.mu.Lock()
		delete(cs.recs, name)
		delete(cs.raw, name)
		delete(cs.sealed, name)
		cs.mu.Unlock()
	}
}

// record is channel name's stored record: from Badger, or in cluster
// mode as the last ownership round (or this node's write) saw it.
func (rt *runtime) record(name string) (record, error) {
	if rt.clu == nil {
		return rt.records.Get(name)
	}
	rt.clu.mu.Lock()
	defer rt.clu.mu.Unlock()
	r, ok := rt.clu.recs[name]
	if !ok {
		return record{}, store.ErrNotFound
	}
	return r, nil
}

// withSecret opens one stored secret of channel name (ErrNotFound if none).
func (rt *runtime) withSecret(name, key string, fn func([]byte) error) error {
	if rt.clu == nil {
		return rt.vault.With(secretName(name, key), fn)
	}
	rt.clu.mu.Lock()
	sealed, ok := rt.clu.sealed[name][key]
	rt.clu.mu.Unlock()
	if !ok {
		return store.ErrNotFound
	}
	if err := rt.vault.Open(secretName(name, key), sealed, fn); err != nil {
		return fmt.Errorf("%w (every node needs the same %s in cluster mode)", err, store.VaultKeyEnv)
	}
	return nil
}

// persistCluster writes a record and its sealed secrets to etcd (a rare
// admin call, like the Badger write it replaces) and remembers them.
func (rt *runtime) persistCluster(rec record, secrets map[string]string, account string) error {
	cl := rt.clu.store()
	if cl == nil {
		return errNoCluster
	}
	sealed := make(map[string][]byte, len(secrets))
	for k, v := range secrets {
		b, err := rt.vault.Seal(secretName(rec.Name, k), []byte(v))
		if err != nil {
			return err
		}
		sealed[k] = b
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.PutChannel(ctx, rec.Name, raw, sealed, account); err != nil {
		if errors.Is(err, ErrAccountTaken) {
			return kernel.Errorf(kernel.KindConflict, "account_in_use", "%s; one poller per token is allowed", err.Error())
		}
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "storing the channel in etcd failed: %s", err.Error())
	}
	rt.clu.mu.Lock()
	rt.clu.recs[rec.Name], rt.clu.raw[rec.Name], rt.clu.sealed[rec.Name] = rec, string(raw), sealed
	rt.clu.mu.Unlock()
	cl.Kick()
	return nil
}

// queueStore is where a channel's inbox, outbox and cursors live: the
// node's Badger (queues) or, in cluster mode, etcd (clusterQueues).
type queueStore interface {
	load(channel string) ([]*inItem, []*outItem, error)
	putInbox(channel string, items []*inItem, cur *Cursor, done func(error))
	finishTurn(channel string, in *inItem, out []*outItem, done func(error))
	sent(channel string, seq uint64, done func(error))
	cursor(channel, key string) (string, error)
	saveCursor(channel, key, value string) error
	saveCursorAsync(channel, key, value string, done func(error))
}

var (
	_ queueStore = (*queues)(nil)
	_ queueStore = (*clusterQueues)(nil)
)

// clusterQueues keeps channel state in etcd through Cluster.Commit. Each
// channel has one writer that commits in the order writes were handed
// over, grouping what queued up while a commit was in flight into one
// transaction (up to MaxOps/MaxBytes): the ordering putInbox and
// finishTurn promise holds as with Badger, at one etcd round trip per
// batch instead of per message.
type clusterQueues struct {
	clu     *clusterState
	mu      sync.Mutex
	writers map[string]*stateWriter
}

type stateWrite struct {
	ops  []StateOp
	done func(error)
}

type stateWriter struct {
	mu      sync.Mutex
	queue   []stateWrite
	running bool
}

func newClusterQueues(clu *clusterState) *clusterQueues {
	return &clusterQueues{clu: clu, writers: map[string]*stateWriter{}}
}

func inKey(seq uint64) string  { return fmt.Sprintf("in/%020d", seq) }
func outKey(seq uint64) string { return fmt.Sprintf("out/%020d", seq) }
func curKey(key string) string { return "cur/" + strings.ReplaceAll(key, "/", "_") }

func (q *clusterQueues) write(channel string, ops []StateOp, done func(error)) {
	q.mu.Lock()
	w := q.writers[channel]
	if w == nil {
		w = &stateWriter{}
		q.writers[channel] = w
	}
	q.mu.Unlock()
	w.mu.Lock()
	w.queue = append(w.queue, stateWrite{ops: ops, done: done})
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go q.flush(channel, w)
	}
}

// flush commits w's queue batch by batch until it is empty.
func (q *clusterQueues) flush(channel string, w *stateWriter) {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		// Whole writes while they fit; a single write larger than one
		// transaction goes alone, cut into consecutive transactions
		// (docs/cluster.md says what that means).
		n, ops, size := 0, 0, 0
		for _, sw := range w.queue {
			o, b := len(sw.ops), opsBytes(sw.ops)
			if n > 0 && (ops+o > MaxOps || size+b > MaxBytes) {
				break
			}
			n, ops, size = n+1, ops+o, size+b
		}
		batch := w.queue[:n:n]
		w.queue = w.queue[n:]
		w.mu.Unlock()
		var all []StateOp
		for _, sw := range batch {
			all = append(all, sw.ops...)
		}
		err := q.commit(channel, all)
		for _, sw := range batch {
			if sw.done != nil {
				sw.done(err)
			}
		}
	}
}

func opsBytes(ops []StateOp) int {
	n := 0
	for _, o := range ops {
		n += len(o.Key) + len(o.Value) + 64
	}
	return n
}

// commit writes ops in as few transactions as the limits allow, in order.
func (q *clusterQueues) commit(channel string, ops []StateOp) error {
	cl := q.clu.store()
	if cl == nil {
		return errNoCluster
	}
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n < MaxOps {
			b := opsBytes(ops[n : n+1])
			if n > 0 && size+b > MaxBytes {
				break
			}
			n, size = n+1, size+b
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cl.Commit(ctx, channel, ops[:n])
		cancel()
		if err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

func (q *clusterQueues) load(channel string) ([]*inItem, []*outItem, error) {
	cl := q.clu.store()
	if cl == nil {
		return nil, nil, errNoCluster
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := cl.State(ctx, channel)
	if err != nil {
		return nil, nil, err
	}
	keys := slices.Sorted(maps.Keys(kv))
	var in []*inItem
	var out []*outItem
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "in/"):
			var it inItem
			if err := json.Unmarshal(kv[k], &it); err != nil {
				return nil, nil, fmt.Errorf("channel %s state %s: %w", channel, k, err)
			}
			in = append(in, &it)
		case strings.HasPrefix(k, "out/"):
			var it outItem
			if err := json.Unmarshal(kv[k], &it); err != nil {
				return nil, nil, fmt.Errorf("channel %s state %s: %w", channel, k, err)
			}
			out = append(out, &it)
		}
	}
	return in, out, nil
}

// putInbox stores accepted messages and the cursor past them in one
// transaction (the cursor last, so that a batch cut in two for etcd's
// limits never advances the cursor before its messages are stored).
func (q *clusterQueues) putInbox(channel string, items []*inItem, cur *Cursor, done func(error)) {
	ops, err := putOps(items, func(it *inItem) string { return inKey(it.Seq) })
	if err != nil {
		done(err)
		return
	}
	if cur != nil {
		ops = append(ops, StateOp{Key: curKey(cur.Key), Value: []byte(cur.Value)})
	}
	q.write(channel, ops, done)
}

// finishTurn puts a turn's reply in the outbox and drops its inbox item in
// one transaction.
func (q *clusterQueues) finishTurn(channel string, in *inItem, out []*outItem, done func(error)) {
	ops, err := putOps(out, func(it *outItem) string { return outKey(it.Seq) })
	if err != nil {
		done(err)
		return
	}
	if in != nil {
		ops = append(ops, StateOp{Key: inKey(in.Seq), Delete: true})
	}
	q.write(channel, ops, done)
}

// putOps are the ops that store items as JSON under key(item), with room
// for one more (the cursor, or the inbox item a reply answers).
func putOps[T any](items []T, key func(T) string) ([]StateOp, error) {
	ops := make([]StateOp, 0, len(items)+1)
	for _, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return nil, err
		}
		ops = append(ops, StateOp{Key: key(it), Value: b})
	}
	return ops, nil
}

func (q *clusterQueues) sent(channel string, seq uint64, done func(error)) {
	q.write(channel, []StateOp{{Key: outKey(seq), Delete: true}}, done)
}

func (q *clusterQueues) cursor(channel, key string) (string, error) {
	cl := q.clu.store()
	if cl == nil {
		return "", errNoCluster
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := cl.State(ctx, channel)
	if err != nil {
		return "", err
	}
	return string(kv[curKey(key)]), nil
}

func (q *clusterQueues) saveCursor(channel, key, value string) error {
	done := make(chan error, 1)
	q.saveCursorAsync(channel, key, value, func(err error) { done <- err })
	return <-done
}

func (q *clusterQueues) saveCursorAsync(channel, key, value string, done func(error)) {
	q.write(channel, []StateOp{{Key: curKey(key), Value: []byte(value)}}, done)
}

// Badger's queues as a queueStore: the cursor methods.

func (q *queues) cursor(channel, key string) (string, error) {
	v, err := q.cursors.Get(cursorKey(channel, key))
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return v, err
}

func (q *queues) saveCursor(channel, key, value string) error {
	return q.cursors.Put(cursorKey(channel, key), value)
}

func (q *queues) saveCursorAsync(channel, key, value string, done func(error)) {
	q.cursors.PutAsync(cursorKey(channel, key), value, done)
}
