package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/channel"
)

// Channels keeps chat channels cluster-wide (docs/cluster.md, "Channels
// across the cluster"). It is channel.Cluster on etcd, and it runs the
// ownership rounds that make each channel's adapter run on exactly one
// node:
//
//   - every node holds one owner lease (ownerTTL), kept alive by the etcd
//     client; a node killed with -9 loses it ownerTTL later;
//   - /fangd/chan/<cluster>/own/<name> names a channel's owner and is bound
//     to the owner's lease: it is taken with a Txn that succeeds only when
//     the key does not exist, so two nodes never both hold it, whatever
//     each believes the topology is;
//   - every write of a channel's state is a Txn conditioned on that key's
//     lease still being the writer's (fencing): a node that lost the
//     channel cannot advance its cursor or touch its queues, even before
//     it notices;
//   - each round (every second, and at once after a channel is created)
//     reads the channels and owners, takes the unowned channels this node
//     is the rendezvous choice for among the members of the cluster
//     topology (the same hashing the cluster's disthash identity lookup
//     uses to place grains), and any channel left unowned for
//     takeoverGrace (the topology may still list a dead member as the
//     choice), then tells the channel supervisor what runs here.
type Channels struct {
	cli      *clientv3.Client
	pre      string
	memberID string
	nodeName string
	log      zerolog.Logger
	// members are the member ids of this node's cluster topology.
	members func() []string
	apply   func([]channel.ClusterChannel)
	// excluded reports that this node dropped out of its own topology
	// (upstream's etcd-rejoin trap): it then holds no channel (nil: never).
	excluded func() bool

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	lease   clientv3.LeaseID
	leaseOK time.Time // last keep-alive the etcd server acknowledged
	unowned map[string]time.Time
	last    []channel.ClusterChannel // the last round's result
}

const (
	// ownerTTL is the owner lease: a killed host's channels are free this
	// long after its last keep-alive.
	ownerTTL = 4
	// fenceAfter: a node that has not had a keep-alive acknowledged for
	// this long treats its channels as lost and stops them itself, before
	// the lease can expire on the server.
	fenceAfter = 3 * time.Second
	roundEvery = time.Second
	// takeoverGrace is how long any node waits before taking a channel
	// whose rendezvous choice has not.
	takeoverGrace = 2 * time.Second
)

// ErrFenced is a state write refused because this node no longer holds
// the channel's owner lease.
var ErrFenced = errors.New("cluster: this node no longer owns the channel (fenced)")

var _ channel.Cluster = (*Channels)(nil)

// ChannelRuntime is the channel supervisor's side (channel.Service).
type ChannelRuntime interface {
	UseCluster(channel.Cluster)
	ApplyCluster([]channel.ClusterChannel)
}

// StartChannels hands the channel runtime this store and starts the
// ownership rounds, whose results go to rt.ApplyCluster.
func (n *Node) StartChannels(rt ChannelRuntime) *Channels {
	c := newChannels(n.etcd, n.opts.Name, n.memberI, n.opts.NodeName, n.opts.Log, func() []string {
		var ids []string
		for _, m := range n.C.MemberList.Members().Members() {
			ids = append(ids, m.Id)
		}
		return ids
	}, rt.ApplyCluster)
	c.excluded = n.Excluded
	n.mu.Lock()
	n.channels = c
	n.mu.Unlock()
	rt.UseCluster(c)
	go c.loop()
	return c
}

func newChannels(cli *clientv3.Client, cluster, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]channel.ClusterChannel)) *Channels {
	c := &Channels{cli: cli, pre: "/fangd/chan/" + cluster + "/", memberID: memberID, nodeName: nodeName,
		log: log, members: members, apply: apply,
		kick: make(chan struct{}, 1), done: make(chan struct{}), unowned: map[string]time.Time{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

func (c *Channels) cfgKey(name string) string { return c.pre + "cfg/" + name }
func (c *Channels) secKey(name string) string { return c.pre + "sec/" + name + "/" }
func (c *Channels) ownKey(name string) string { return c.pre + "own/" + name }
func (c *Channels) stKey(name string) string  { return c.pre + "st/" + name + "/" }

// Kick runs a round now.
func (c *Channels) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Channels) loop() {
	defer close(c.done)
	t := time.NewTicker(roundEvery)
	defer t.Stop()
	for {
		c.round()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

// myLease is the owner lease if it is healthy, else 0.
func (c *Channels) myLease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease == 0 || time.Since(c.leaseOK) > fenceAfter {
		return 0
	}
	return c.lease
}

// ensureLease grants the owner lease and keeps it alive; a lost lease
// (keep-alive channel closed: expired, or the client closed) is granted
// again on the next round, with every channel of the old one lost.
func (c *Channels) ensureLease() {
	c.mu.Lock()
	have := c.lease != 0
	c.mu.Unlock()
	if have {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, roundEvery)
	g, err := c.cli.Grant(ctx, ownerTTL)
	cancel()
	if err != nil {
		c.log.Warn().Err(err).Msg("channel owner lease not granted; retrying")
		return
	}
	ch, err := c.cli.KeepAlive(c.ctx, g.ID)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.lease, c.leaseOK = g.ID, time.Now()
	c.mu.Unlock()
	go func() {
		for range ch {
			c.mu.Lock()
			c.leaseOK = time.Now()
			c.mu.Unlock()
		}
		c.mu.Lock()
		if c.lease == g.ID {
			c.lease = 0
		}
		c.mu.Unlock()
		if c.ctx.Err() == nil {
			c.log.Warn().Msg("channel owner lease lost; its channels stop here and may move")
		}
	}()
}

type ownerRec struct {
	MemberID string `json:"member_id"`
	NodeName string `json:"node_name"`
}

// round is one ownership round.
func (c *Channels) round() {
	if c.excluded != nil && c.excluded() {
		// The other members no longer see this node and route nothing
		// to it: its channels must run elsewhere. Giving up the owner
		// lease frees every owner key at once (its fenced writes fail
		// from then on); no new lease while excluded, so nothing is
		// taken.
		c.dropLease()
	} else {
		c.ensureLease()
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*roundEvery)
	defer cancel()
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(c.pre+"cfg/", clientv3.WithPrefix()),
		clientv3.OpGet(c.pre+"sec/", clientv3.WithPrefix()),
		clientv3.OpGet(c.pre+"own/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("channel ownership round: etcd did not answer")
		}
		// Nothing known: keep what runs unless the lease went stale.
		if c.myLease() == 0 {
			c.applyLost()
		}
		return
	}
	cfgs := resp.Responses[0].GetResponseRange().Kvs
	secs := resp.Responses[1].GetResponseRange().Kvs
	owns := resp.Responses[2].GetResponseRange().Kvs
	sealed := map[string]map[string][]byte{}
	for _, kv := range secs {
		rest := strings.TrimPrefix(string(kv.Key), c.pre+"sec/")
		name, key, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		if sealed[name] == nil {
			sealed[name] = map[string][]byte{}
		}
		sealed[name][key] = kv.Value
	}
	type owner struct {
		rec   ownerRec
		lease clientv3.LeaseID
	}
	owners := map[string]owner{}
	for _, kv := range owns {
		var r ownerRec
		_ = json.Unmarshal(kv.Value, &r)
		owners[strings.TrimPrefix(string(kv.Key), c.pre+"own/")] = owner{rec: r, lease: clientv3.LeaseID(kv.Lease)}
	}
	lease := c.myLease()
	members := c.members()
	me := ownerRec{MemberID: c.memberID, NodeName: c.nodeName}
	now := time.Now()
	var out []channel.ClusterChannel
	seen := map[string]bool{}
	for _, kv := range cfgs {
		name := strings.TrimPrefix(string(kv.Key), c.pre+"cfg/")
		seen[name] = true
		o, owned := owners[name]
		if !owned {
			c.mu.Lock()
			since, ok := c.unowned[name]
			if !ok {
				since = now
				c.unowned[name] = now
			}
			c.mu.Unlock()
			if lease != 0 && (rendezvous(name, members) == c.memberID || now.Sub(since) >= takeoverGrace) {
				if c.take(ctx, name, me, lease) {
					o, owned = owner{rec: me, lease: lease}, true
				}
			}
		}
		if owned {
			c.mu.Lock()
			delete(c.unowned, name)
			c.mu.Unlock()
		}
		cc := channel.ClusterChannel{Name: name, Record: kv.Value, Sealed: sealed[name]}
		if owned {
			cc.Node = o.rec.NodeName
			cc.Mine = lease != 0 && o.lease == lease
		}
		out = append(out, cc)
	}
	c.mu.Lock()
	for name := range c.unowned {
		if !seen[name] {
			delete(c.unowned, name)
		}
	}
	c.last = out
	c.mu.Unlock()
	// An owner key whose channel was deleted while this node held it.
	for name, o := range owners {
		if !seen[name] && lease != 0 && o.lease == lease {
			_, _ = c.cli.Delete(ctx, c.ownKey(name))
		}
	}
	c.apply(out)
}

// dropLease revokes the owner lease, if any: every channel this node owns
// is free for the others at once.
func (c *Channels) dropLease() {
	c.mu.Lock()
	lease := c.lease
	c.lease = 0
	c.mu.Unlock()
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	_, err := c.cli.Revoke(ctx, lease)
	cancel()
	c.log.Error().Err(err).Msg("this node is excluded from the cluster: channel owner lease given up, its channels stop here and move")
}

// applyLost tells the supervisor this node holds nothing any more (its
// lease went stale while etcd did not answer): the last round's channels,
// none of them here.
func (c *Channels) applyLost() {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	var out []channel.ClusterChannel
	mine := false
	for _, cc := range last {
		if cc.Mine {
			mine = true
			cc.Mine, cc.Node = false, ""
		}
		out = append(out, cc)
	}
	if !mine {
		return
	}
	c.log.Error().Msg("channel owner lease not confirmed by etcd; stopping this node's channels (fenced)")
	c.mu.Lock()
	c.last = out
	c.mu.Unlock()
	c.apply(out)
}

// take claims an unowned channel for this node's lease.
func (c *Channels) take(ctx context.Context, name string, me ownerRec, lease clientv3.LeaseID) bool {
	b, _ := json.Marshal(me)
	r, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(c.ownKey(name)), "=", 0)).
		Then(clientv3.OpPut(c.ownKey(name), string(b), clientv3.WithLease(lease))).
		Commit()
	if err != nil || !r.Succeeded {
		return false
	}
	c.log.Info().Str("channel", name).Msg("took the channel's owner lease")
	return true
}

// rendezvous is the member with the highest FNV-1a score for the
// channel's name (rendezvous hashing, as the cluster's disthash lookup
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

// ChannelHost is where one channel runs, for GET /api/cluster.
type ChannelHost struct {
	Name string `json:"name"`
	// Node is the hosting node's name; "" while no node holds it.
	Node string `json:"node"`
}

// ChannelHosts is where each channel runs, from this node's last round.
func (n *Node) ChannelHosts() []ChannelHost {
	n.mu.Lock()
	c := n.channels
	n.mu.Unlock()
	out := []ChannelHost{}
	if c == nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.last {
		out = append(out, ChannelHost{Name: cc.Name, Node: cc.Node})
	}
	return out
}

// Hosted is how many channels this node hosts, from the last round.
func (c *Channels) Hosted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cc := range c.last {
		if cc.Mine {
			n++
		}
	}
	return n
}

// PutChannel stores a record and its sealed secrets in one Txn, claiming
// the account fingerprint (acct/<fingerprint> = channel name; a SHA-256
// of the adapter and account fields, never a secret in clear) unless
// another channel holds it. The Txn is conditioned on the fingerprint key
// not having changed since it was read, so two nodes configuring the same
// token at once cannot both win.
func (c *Channels) PutChannel(ctx context.Context, name string, rec []byte, sealed map[string][]byte, account string) error {
	cur, err := c.cli.Get(ctx, c.secKey(name), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	accts, err := c.cli.Get(ctx, c.pre+"acct/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var conds []clientv3.Cmp
	ops := []clientv3.Op{clientv3.OpPut(c.cfgKey(name), string(rec))}
	claimed := false
	for _, kv := range accts.Kvs {
		fp := strings.TrimPrefix(string(kv.Key), c.pre+"acct/")
		switch {
		case fp == account && string(kv.Value) != name:
			return fmt.Errorf("%w (channel %s)", channel.ErrAccountTaken, kv.Value)
		case fp == account:
			claimed = true
		case string(kv.Value) == name:
			ops = append(ops, clientv3.OpDelete(string(kv.Key))) // its old account
		}
	}
	if account != "" && !claimed {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(c.pre+"acct/"+account), "=", 0))
		ops = append(ops, clientv3.OpPut(c.pre+"acct/"+account, name))
	}
	for _, kv := range cur.Kvs {
		if _, keep := sealed[strings.TrimPrefix(string(kv.Key), c.secKey(name))]; !keep {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	for k, v := range sealed {
		ops = append(ops, clientv3.OpPut(c.secKey(name)+k, string(v)))
	}
	r, err := c.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !r.Succeeded {
		return fmt.Errorf("%w (configured at the same moment through another node)", channel.ErrAccountTaken)
	}
	return nil
}

// DeleteChannel removes a channel's record, secrets, state and owner in
// one Txn; the host's next write is fenced (its owner key is gone).
func (c *Channels) DeleteChannel(ctx context.Context, name string) error {
	accts, err := c.cli.Get(ctx, c.pre+"acct/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(c.cfgKey(name)),
		clientv3.OpDelete(c.secKey(name), clientv3.WithPrefix()),
		clientv3.OpDelete(c.stKey(name), clientv3.WithPrefix()),
		clientv3.OpDelete(c.ownKey(name)),
	}
	for _, kv := range accts.Kvs {
		if string(kv.Value) == name {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	_, err = c.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

// State reads a channel's state.
func (c *Channels) State(ctx context.Context, name string) (map[string][]byte, error) {
	r, err := c.cli.Get(ctx, c.stKey(name), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), c.stKey(name))] = kv.Value
	}
	return out, nil
}

// Commit applies ops in one Txn if this node's lease still owns the
// channel. Several ops on one key (a batch that stored and then removed
// a message) collapse into the last, which etcd requires and which leaves
// the same result.
func (c *Channels) Commit(ctx context.Context, name string, ops []channel.StateOp) error {
	lease := c.myLease()
	if lease == 0 {
		return ErrFenced
	}
	last := map[string]int{}
	for i, o := range ops {
		last[o.Key] = i
	}
	tops := make([]clientv3.Op, 0, len(last))
	for i, o := range ops {
		if last[o.Key] != i {
			continue
		}
		if o.Delete {
			tops = append(tops, clientv3.OpDelete(c.stKey(name)+o.Key))
		} else {
			tops = append(tops, clientv3.OpPut(c.stKey(name)+o.Key, string(o.Value)))
		}
	}
	r, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(c.ownKey(name)), "=", lease)).
		Then(tops...).Commit()
	if err != nil {
		return fmt.Errorf("cluster: etcd: %w", err)
	}
	if !r.Succeeded {
		return ErrFenced
	}
	return nil
}

// stop ends the rounds and revokes the owner lease, so that the other
// nodes take this node's channels at once (graceful leave). Call it after
// the channel actors stopped.
func (c *Channels) stop() {
	// Read before cancelling: the keep-alive goroutine forgets the lease
	// as soon as its context ends.
	c.mu.Lock()
	before := c.lease
	c.mu.Unlock()
	c.cancel()
	<-c.done
	c.mu.Lock()
	after := c.lease
	c.lease = 0
	c.mu.Unlock()
	for i, lease := range []clientv3.LeaseID{before, after} {
		if lease != 0 && (i == 0 || lease != before) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = c.cli.Revoke(ctx, lease)
			cancel()
		}
	}
}
