package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
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
	*owned
	apply func([]channel.ClusterChannel)

	mu   sync.Mutex
	last []channel.ClusterChannel // the last round's result
}

var _ channel.Cluster = (*Channels)(nil)

// ChannelRuntime is the channel supervisor's side (channel.Service).
type ChannelRuntime interface {
	UseCluster(channel.Cluster)
	ApplyCluster([]channel.ClusterChannel)
}

// StartChannels hands the channel runtime this store and starts the
// ownership rounds, whose results go to rt.ApplyCluster.
func (n *Node) StartChannels(rt ChannelRuntime) *Channels {
	c := newChannels(n.etcd, n.opts.Name, n.memberI, n.opts.NodeName, n.opts.Log, n.topology, rt.ApplyCluster)
	c.excluded = n.Excluded
	n.mu.Lock()
	n.channels = c
	n.mu.Unlock()
	rt.UseCluster(c)
	go c.loop(c.round)
	return c
}

// topology is the member ids of this node's cluster topology.
func (n *Node) topology() []string {
	var ids []string
	for _, m := range n.C.MemberList.Members().Members() {
		ids = append(ids, m.Id)
	}
	return ids
}

func newChannels(cli *clientv3.Client, cluster, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]channel.ClusterChannel)) *Channels {
	return &Channels{owned: newOwned(cli, "/fangd/chan/"+cluster+"/", "channel", memberID, nodeName, log, members), apply: apply}
}

func (c *Channels) cfgKey(name string) string { return c.pre + "cfg/" + name }
func (c *Channels) secKey(name string) string { return c.pre + "sec/" + name + "/" }
func (c *Channels) stKey(name string) string  { return c.pre + "st/" + name + "/" }

// round is one ownership round.
func (c *Channels) round() {
	c.claimLease()
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
	sealed := sealedByName(c.pre+"sec/", resp.Responses[1].GetResponseRange().Kvs)
	names := make([]string, 0, len(cfgs))
	for _, kv := range cfgs {
		names = append(names, strings.TrimPrefix(string(kv.Key), c.pre+"cfg/"))
	}
	places := c.assign(ctx, names, resp.Responses[2].GetResponseRange().Kvs)
	out := make([]channel.ClusterChannel, 0, len(cfgs))
	for i, kv := range cfgs {
		p := places[names[i]]
		out = append(out, channel.ClusterChannel{Name: names[i], Record: kv.Value, Sealed: sealed[names[i]], Node: p.Node, Mine: p.Mine})
	}
	c.mu.Lock()
	c.last = out
	c.mu.Unlock()
	c.apply(out)
}

// sealedByName groups sealed secrets <pre><name>/<key> by name and key.
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
// channel (the channel runtime keeps each call within channel.MaxOps and
// channel.MaxBytes). Several ops on one key (a batch that stored and then
// removed a message) collapse into the last.
func (c *Channels) Commit(ctx context.Context, name string, ops []channel.StateOp) error {
	sops := make([]stateOp, len(ops))
	for i, o := range ops {
		sops[i] = stateOp{key: o.Key, value: o.Value, delete: o.Delete}
	}
	return c.commit(ctx, name, c.stKey(name), sops)
}
