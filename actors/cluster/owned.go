package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// owned is the lease-fenced ownership both cluster-wide kinds share
// (channels.go, webhooks.go; docs/cluster.md): one owner lease per node
// and kind, kept alive by the etcd client; an owner key <pre>own/<name>
// per entity bound to its owner's lease and taken only when absent; a
// round every second that places unowned entities by rendezvous hashing;
// and state writes as Txns conditioned on the owner key still carrying
// the writer's lease.
type owned struct {
	cli      *clientv3.Client
	pre      string
	what     string // "channel", "webhook": for logs
	memberID string
	nodeName string
	log      zerolog.Logger
	// members are the member ids of this node's cluster topology.
	members func() []string
	// excluded reports that this node dropped out of its own topology
	// (upstream's etcd-rejoin trap): it then holds nothing (nil: never).
	excluded func() bool

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	lease *leaseKeeper // the owner lease

	mu      sync.Mutex
	unowned map[string]time.Time
}

const (
	// ownerTTL is the owner lease: a killed host's entities are free this
	// long after its last keep-alive.
	ownerTTL = 4
	// fenceAfter: a node that has not had a keep-alive acknowledged for
	// this long treats its entities as lost and stops them itself, before
	// the lease can expire on the server.
	fenceAfter = 3 * time.Second
	roundEvery = time.Second
	// takeoverGrace is how long any node waits before taking an entity
	// whose rendezvous choice has not.
	takeoverGrace = 2 * time.Second
)

// Limits of one state Txn: etcd refuses more than 128 operations
// (--max-txn-ops) or 1.5 MiB (--max-request-bytes) per request by default;
// the fencing compare and a margin are left.
const (
	maxTxnOps   = 120
	maxTxnBytes = 1 << 20
)

// ErrFenced is a state write refused because this node no longer holds
// the entity's owner lease.
var ErrFenced = errors.New("cluster: this node no longer owns the entity (fenced)")

func newOwned(cli *clientv3.Client, pre, what, memberID, nodeName string, log zerolog.Logger, members func() []string) *owned {
	o := &owned{cli: cli, pre: pre, what: what, memberID: memberID, nodeName: nodeName, log: log, members: members,
		kick: make(chan struct{}, 1), done: make(chan struct{}), unowned: map[string]time.Time{}}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.lease = &leaseKeeper{cli: cli, ctx: o.ctx, ttl: ownerTTL, grantWithin: roundEvery, log: log,
		notGranted: fmt.Sprintf("%s owner lease not granted; retrying", what),
		lost:       fmt.Sprintf("%s owner lease lost; this node's %ss stop here and may move", what, what)}
	return o
}

func (o *owned) ownKey(name string) string { return o.pre + "own/" + name }

// Kick runs a round now.
func (o *owned) Kick() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// loop runs round every roundEvery and on Kick until stop.
func (o *owned) loop(round func()) {
	defer close(o.done)
	t := time.NewTicker(roundEvery)
	defer t.Stop()
	for {
		round()
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
		case <-o.kick:
		}
	}
}

// myLease is the owner lease if it is healthy, else 0.
func (o *owned) myLease() clientv3.LeaseID { return o.lease.fresh(fenceAfter) }

// claimLease starts a round: an excluded node gives its owner lease up
// (the other members no longer see it and route nothing to it: its
// entities must run elsewhere; revoking frees every owner key at once and
// fences its writes from then on) and takes no new one while excluded;
// any other node makes sure it holds one.
func (o *owned) claimLease() {
	if o.excluded != nil && o.excluded() {
		o.dropLease()
		return
	}
	o.ensureLease()
}

// dropLease revokes the owner lease, if any: every entity this node owns
// is free for the others at once.
func (o *owned) dropLease() {
	lease := o.lease.forget()
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(o.ctx, 2*time.Second)
	_, err := o.cli.Revoke(ctx, lease)
	cancel()
	o.log.Error().Err(err).Msgf("this node is excluded from the cluster: %s owner lease given up, its %ss stop here and move", o.what, o.what)
}

// ensureLease grants the owner lease and keeps it alive; a lost lease
// (keep-alive channel closed: expired, or the client closed) is granted
// again on the next round, with every entity of the old one lost.
func (o *owned) ensureLease() { o.lease.ensure() }

type ownerRec struct {
	MemberID string `json:"member_id"`
	NodeName string `json:"node_name"`
}

// placement is where one entity runs after a round: Node hosts it ("" while
// nobody does); Mine when it is this node, with its lease alive.
type placement struct {
	Node string
	Mine bool
}

// assign is the ownership part of a round: given the entities that exist
// (names) and the owner keys read in the same Txn, it takes the unowned
// ones this node should have (the rendezvous choice among the topology's
// members, or any node once takeoverGrace passed), drops owner keys of
// entities that no longer exist, and says where each runs.
//
// eligible, when not nil, restricts each entity to the member ids it
// names (an MCP server of config.toml runs only on a node whose file
// lists it, mcpconf.go): the rendezvous choice is among the topology's
// members that are eligible, only an eligible node takes it over, and a
// node that holds an entity it is no longer eligible for gives it up.
func (o *owned) assign(ctx context.Context, names []string, owns []*mvccpb.KeyValue, eligible map[string][]string) map[string]placement {
	type owner struct {
		rec   ownerRec
		lease clientv3.LeaseID
	}
	owners := map[string]owner{}
	for _, kv := range owns {
		var r ownerRec
		_ = json.Unmarshal(kv.Value, &r)
		owners[strings.TrimPrefix(string(kv.Key), o.pre+"own/")] = owner{rec: r, lease: clientv3.LeaseID(kv.Lease)}
	}
	lease := o.myLease()
	members := o.members()
	me := ownerRec{MemberID: o.memberID, NodeName: o.nodeName}
	now := time.Now()
	out := make(map[string]placement, len(names))
	for _, name := range names {
		ow, ok := owners[name]
		candidates, mayTake := members, true
		if eligible != nil {
			candidates, mayTake = eligibleMembers(members, eligible[name], o.memberID)
			if ok && !mayTake && lease != 0 && ow.lease == lease {
				// Held here but no longer listed here: free it at once.
				if o.give(ctx, name, lease) {
					delete(owners, name)
					ow, ok = owner{}, false
				}
			}
		}
		if !ok {
			o.mu.Lock()
			since, seen := o.unowned[name]
			if !seen {
				since = now
				o.unowned[name] = now
			}
			o.mu.Unlock()
			if lease != 0 && mayTake && (rendezvous(name, candidates) == o.memberID || now.Sub(since) >= takeoverGrace) {
				if o.take(ctx, name, me, lease) {
					ow, ok = owner{rec: me, lease: lease}, true
				}
			}
		}
		var p placement
		if ok {
			o.mu.Lock()
			delete(o.unowned, name)
			o.mu.Unlock()
			p = placement{Node: ow.rec.NodeName, Mine: lease != 0 && ow.lease == lease}
		}
		out[name] = p
	}
	o.mu.Lock()
	for name := range o.unowned {
		if _, ok := out[name]; !ok {
			delete(o.unowned, name)
		}
	}
	o.mu.Unlock()
	// An owner key whose entity was deleted while this node held it.
	for name, ow := range owners {
		if _, ok := out[name]; !ok && lease != 0 && ow.lease == lease {
			_, _ = o.cli.Delete(ctx, o.ownKey(name))
		}
	}
	return out
}

// take claims an unowned entity for this node's lease.
func (o *owned) take(ctx context.Context, name string, me ownerRec, lease clientv3.LeaseID) bool {
	b, _ := json.Marshal(me)
	r, err := o.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(o.ownKey(name)), "=", 0)).
		Then(clientv3.OpPut(o.ownKey(name), string(b), clientv3.WithLease(lease))).
		Commit()
	if err != nil || !r.Succeeded {
		return false
	}
	o.log.Info().Str(o.what, name).Msgf("took the %s's owner lease", o.what)
	return true
}

// give drops this node's owner key of name, if it still carries lease.
func (o *owned) give(ctx context.Context, name string, lease clientv3.LeaseID) bool {
	r, err := o.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(o.ownKey(name)), "=", lease)).
		Then(clientv3.OpDelete(o.ownKey(name))).
		Commit()
	if err != nil || !r.Succeeded {
		return false
	}
	o.log.Info().Str(o.what, name).Msgf("gave the %s's owner key up (no longer eligible here)", o.what)
	return true
}

// eligibleMembers is the topology's members among ids, and whether self
// is one of ids.
func eligibleMembers(members, ids []string, self string) ([]string, bool) {
	var out []string
	for _, m := range members {
		if slices.Contains(ids, m) {
			out = append(out, m)
		}
	}
	return out, slices.Contains(ids, self)
}

// rendezvous is the member with the highest FNV-1a score for the
// entity's name (rendezvous hashing, as the cluster's disthash lookup
// places grains), "" when there is none.
func rendezvous(name string, members []string) string {
	best, bestScore := "", uint32(0)
	for _, m := range members {
		h := fnv.New32a()
		h.Write([]byte(name))
		h.Write([]byte(m))
		if s := h.Sum32(); best == "" || s > bestScore {
			best, bestScore = m, s
		}
	}
	return best
}

// stateOp is one write under an entity's state prefix: a put or a delete.
type stateOp struct {
	key    string
	value  []byte
	delete bool
}

// commit applies ops (keys relative to base) in order, in as few Txns as
// etcd's limits allow, each conditioned on name's owner key still carrying
// this node's lease. Several ops on one key collapse into the last, which
// etcd requires within a Txn and which leaves the same result.
func (o *owned) commit(ctx context.Context, name, base string, ops []stateOp) error {
	lease := o.myLease()
	if lease == 0 {
		return ErrFenced
	}
	last := map[string]int{}
	for i, op := range ops {
		last[op.key] = i
	}
	var tops []clientv3.Op
	size := 0
	flush := func() error {
		if len(tops) == 0 {
			return nil
		}
		r, err := o.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(o.ownKey(name)), "=", lease)).
			Then(tops...).Commit()
		tops, size = tops[:0], 0
		if err != nil {
			return fmt.Errorf("cluster: etcd: %w", err)
		}
		if !r.Succeeded {
			return ErrFenced
		}
		return nil
	}
	for i, op := range ops {
		if last[op.key] != i {
			continue
		}
		b := len(op.key) + len(base) + len(op.value) + 64
		if len(tops) > 0 && (len(tops) >= maxTxnOps || size+b > maxTxnBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		if op.delete {
			tops = append(tops, clientv3.OpDelete(base+op.key))
		} else {
			tops = append(tops, clientv3.OpPut(base+op.key, string(op.value)))
		}
		size += b
	}
	return flush()
}

// stop ends the rounds and revokes the owner lease, so that the other
// nodes take this node's entities at once (graceful leave). Call it after
// the entities' actors stopped.
func (o *owned) stop() {
	// Read before cancelling: the keep-alive goroutine forgets the lease
	// as soon as its context ends.
	before, _ := o.lease.state()
	o.cancel()
	<-o.done
	after := o.lease.forget()
	revokeLease(o.cli, before)
	if after != before {
		revokeLease(o.cli, after)
	}
}

// ownedEntity is one entity of an ownedSet as a round saw it: its record,
// its sealed secrets, and where it runs.
type ownedEntity struct {
	Name   string
	Record []byte
	Sealed map[string][]byte
	// Node hosts the entity ("" while nobody does); Mine when it is this
	// node, with its lease alive.
	Node string
	Mine bool
	// State is the entity's state keys (relative to its state prefix),
	// read in the round only for a set made withState.
	State map[string][]byte
}

// ownedSet is one cluster-wide kind's placement on top of owned: under
// its prefix, cfg/<name> is an entity's record, sec/<name>/<key> its
// secrets sealed with the vault key, own/<name> its owner, and
// <stDir><name>/… its state. Each round reads records, secrets and owners
// in one Txn, places the entities (owned.assign) and hands the result to
// apply; the kinds (channels.go, webhooks.go, mcp.go) keep only their own
// record and state code.
type ownedSet struct {
	*owned
	stDir string
	apply func([]ownedEntity)
	// withState reads every entity's state in the round too: for a kind
	// whose state is small and every node shows (an MCP server's tools).
	withState bool
	// list, when set, makes the entities the names nodes advertise under
	// lst/ instead of records under cfg/ (listing).
	list *listing

	lastMu sync.Mutex
	last   []ownedEntity // the last round's result
}

func newOwnedSet(cli *clientv3.Client, pre, stDir, what, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]ownedEntity)) *ownedSet {
	return &ownedSet{owned: newOwned(cli, pre, what, memberID, nodeName, log, members), stDir: stDir, apply: apply}
}

func (s *ownedSet) cfgKey(name string) string { return s.pre + "cfg/" + name }
func (s *ownedSet) secKey(name string) string { return s.pre + "sec/" + name + "/" }
func (s *ownedSet) stKey(name string) string  { return s.pre + s.stDir + name + "/" }

// round is one ownership round.
func (s *ownedSet) round() {
	s.claimLease()
	ctx, cancel := context.WithTimeout(s.ctx, 2*roundEvery)
	defer cancel()
	recDir := "cfg/"
	if s.list != nil {
		s.syncAdverts(ctx)
		recDir = "lst/"
	}
	gets := []clientv3.Op{
		clientv3.OpGet(s.pre+recDir, clientv3.WithPrefix()),
		clientv3.OpGet(s.pre+"sec/", clientv3.WithPrefix()),
		clientv3.OpGet(s.pre+"own/", clientv3.WithPrefix()),
	}
	if s.withState {
		gets = append(gets, clientv3.OpGet(s.pre+s.stDir, clientv3.WithPrefix()))
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn().Err(err).Msgf("%s ownership round: etcd did not answer", s.what)
		}
		// Nothing known: keep what runs unless the lease went stale.
		if s.myLease() == 0 {
			s.applyLost()
		}
		return
	}
	cfgs := resp.Responses[0].GetResponseRange().Kvs
	sealed := sealedByName(s.pre+"sec/", resp.Responses[1].GetResponseRange().Kvs)
	var names []string
	var records [][]byte
	var eligible map[string][]string
	if s.list != nil {
		names, records, eligible = s.readAdverts(cfgs)
	} else {
		for _, kv := range cfgs {
			names = append(names, strings.TrimPrefix(string(kv.Key), s.pre+"cfg/"))
			records = append(records, kv.Value)
		}
	}
	var states map[string]map[string][]byte
	if s.withState {
		states = sealedByName(s.pre+s.stDir, resp.Responses[3].GetResponseRange().Kvs)
	}
	places := s.assign(ctx, names, resp.Responses[2].GetResponseRange().Kvs, eligible)
	out := make([]ownedEntity, 0, len(names))
	for i, name := range names {
		p := places[name]
		out = append(out, ownedEntity{Name: name, Record: records[i], Sealed: sealed[name], Node: p.Node, Mine: p.Mine,
			State: states[name]})
	}
	s.lastMu.Lock()
	s.last = out
	s.lastMu.Unlock()
	s.apply(out)
}

// sealedByName groups keys <pre><name>/<key> (sealed secrets, states) by
// name and key.
func sealedByName(pre string, kvs []*mvccpb.KeyValue) map[string]map[string][]byte {
	sealed := map[string]map[string][]byte{}
	for _, kv := range kvs {
		name, key, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), pre), "/")
		if !ok {
			continue
		}
		if sealed[name] == nil {
			sealed[name] = map[string][]byte{}
		}
		sealed[name][key] = kv.Value
	}
	return sealed
}

// applyLost tells the runtime this node holds nothing any more (its lease
// went stale while etcd did not answer): the last round's entities, none
// of them here.
func (s *ownedSet) applyLost() {
	s.lastMu.Lock()
	last := s.last
	s.lastMu.Unlock()
	var out []ownedEntity
	mine := false
	for _, e := range last {
		if e.Mine {
			mine = true
			e.Mine, e.Node = false, ""
		}
		out = append(out, e)
	}
	if !mine {
		return
	}
	s.log.Error().Msgf("%s owner lease not confirmed by etcd; stopping this node's %ss (fenced)", s.what, s.what)
	s.lastMu.Lock()
	s.last = out
	s.lastMu.Unlock()
	s.apply(out)
}

// applyAs hands a round's entities to a runtime as the runtime's own
// type (channel.ClusterChannel, webhook.ClusterEndpoint, ...).
func applyAs[T any](apply func([]T), as func(ownedEntity) T) func([]ownedEntity) {
	return func(es []ownedEntity) {
		out := make([]T, len(es))
		for i, e := range es {
			out[i] = as(e)
		}
		apply(out)
	}
}

// ownedSets reads the node's owned sets under n.mu; each is nil until its
// Start ran.
func (n *Node) ownedSets() (channels, webhooks, mcpAPI, mcpConf *ownedSet) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.channels != nil {
		channels = n.channels.ownedSet
	}
	if n.webhooks != nil {
		webhooks = n.webhooks.ownedSet
	}
	if n.mcp != nil {
		mcpAPI, mcpConf = n.mcp.ownedSet, n.mcp.conf
	}
	return channels, webhooks, mcpAPI, mcpConf
}

// hostsAs is where each entity of s runs, from the last round, as rows of
// GET /api/cluster: [], never null, while s has not started (nil).
func hostsAs[H any](s *ownedSet, row func(name, node string) H) []H {
	out := []H{}
	if s == nil {
		return out
	}
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	for _, e := range s.last {
		out = append(out, row(e.Name, e.Node))
	}
	return out
}

// Hosted is how many entities this node hosts, from the last round.
func (s *ownedSet) Hosted() int {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	n := 0
	for _, e := range s.last {
		if e.Mine {
			n++
		}
	}
	return n
}

// deleteAll removes an entity's record, secrets, state and owner in one
// Txn, with extra ops of the kind's own; the host's next write is fenced
// (its owner key is gone).
func (s *ownedSet) deleteAll(ctx context.Context, name string, extra ...clientv3.Op) error {
	ops := append([]clientv3.Op{
		clientv3.OpDelete(s.cfgKey(name)),
		clientv3.OpDelete(s.secKey(name), clientv3.WithPrefix()),
		clientv3.OpDelete(s.stKey(name), clientv3.WithPrefix()),
		clientv3.OpDelete(s.ownKey(name)),
	}, extra...)
	_, err := s.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

// readState reads an entity's state, keys relative to its state prefix.
func (s *ownedSet) readState(ctx context.Context, name string) (map[string][]byte, error) {
	r, err := s.cli.Get(ctx, s.stKey(name), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), s.stKey(name))] = kv.Value
	}
	return out, nil
}
