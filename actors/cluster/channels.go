package cluster

import (
	"context"
	"fmt"
	"strings"

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
	*ownedSet
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
	return &Channels{newOwnedSet(cli, "/fangd/chan/"+cluster+"/", "st/", "channel", memberID, nodeName, log, members,
		applyAs(apply, func(e ownedEntity) channel.ClusterChannel {
			return channel.ClusterChannel{Name: e.Name, Record: e.Record, Sealed: e.Sealed, Node: e.Node, Mine: e.Mine}
		}))}
}

// ChannelHost is where one channel runs, for GET /api/cluster.
type ChannelHost struct {
	Name string `json:"name"`
	// Node is the hosting node's name; "" while no node holds it.
	Node string `json:"node"`
}

// ChannelHosts is where each channel runs, from this node's last round.
func (n *Node) ChannelHosts() []ChannelHost {
	set, _, _, _ := n.ownedSets()
	return hostsAs(set, func(name, node string) ChannelHost { return ChannelHost{Name: name, Node: node} })
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

// DeleteChannel removes a channel's record, secrets, state, owner and
// account claim in one Txn; the host's next write is fenced (its owner key
// is gone).
func (c *Channels) DeleteChannel(ctx context.Context, name string) error {
	accts, err := c.cli.Get(ctx, c.pre+"acct/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var extra []clientv3.Op
	for _, kv := range accts.Kvs {
		if string(kv.Value) == name {
			extra = append(extra, clientv3.OpDelete(string(kv.Key)))
		}
	}
	return c.deleteAll(ctx, name, extra...)
}

// State reads a channel's state.
func (c *Channels) State(ctx context.Context, name string) (map[string][]byte, error) {
	return c.readState(ctx, name)
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
