package cluster

import (
	"context"
	"strings"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/webhook"
)

// Webhooks keeps webhook endpoints cluster-wide (docs/cluster.md,
// "Webhooks across the cluster"): webhook.Cluster on etcd, with the same
// lease-fenced ownership rounds as channels (owned.go), so that each
// endpoint's outbox runs on exactly one node. Keys under
// /fangd/hook/<cluster>/:
//
//   - cfg/<id>: the endpoint record; sec/<id>/<name>: its secrets, sealed
//     with the vault key; own/<id>: its owner, bound to the owner's lease;
//   - e/<id>/…: its state: the outbox (q/), dead letters (dl/), attempts
//     (att/), bookkeeping (meta), written only under the owner key's lease,
//     and the intake (in/<node>/…) with each producing node's bus cursor
//     (pc/<node>), which any node appends to while the record exists.
type Webhooks struct {
	*ownedSet
}

var _ webhook.Cluster = (*Webhooks)(nil)

// WebhookRuntime is the webhook engine's side (webhook.Engine).
type WebhookRuntime interface {
	UseCluster(webhook.Cluster, string)
	ApplyCluster([]webhook.ClusterEndpoint)
}

// StartWebhooks hands the webhook engine this store and starts the
// ownership rounds, whose results go to rt.ApplyCluster.
func (n *Node) StartWebhooks(rt WebhookRuntime) *Webhooks {
	w := newWebhooks(n.etcd, n.opts.Name, n.memberI, n.opts.NodeName, n.opts.Log, n.topology, rt.ApplyCluster)
	w.excluded = n.Excluded
	n.mu.Lock()
	n.webhooks = w
	n.mu.Unlock()
	rt.UseCluster(w, n.opts.NodeName)
	go w.loop(w.round)
	return w
}

func newWebhooks(cli *clientv3.Client, cluster, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]webhook.ClusterEndpoint)) *Webhooks {
	return &Webhooks{newOwnedSet(cli, "/fangd/hook/"+cluster+"/", "e/", "webhook", memberID, nodeName, log, members,
		applyAs(apply, func(e ownedEntity) webhook.ClusterEndpoint {
			return webhook.ClusterEndpoint{ID: e.Name, Record: e.Record, Sealed: e.Sealed, Node: e.Node, Mine: e.Mine}
		}))}
}

// WebhookHost is where one endpoint's outbox runs, for GET /api/cluster.
type WebhookHost struct {
	ID string `json:"id"`
	// Node is the hosting node's name; "" while no node holds it.
	Node string `json:"node"`
}

// WebhookHosts is where each endpoint's outbox runs, from the last round.
func (n *Node) WebhookHosts() []WebhookHost {
	_, set, _, _ := n.ownedSets()
	return hostsAs(set, func(id, node string) WebhookHost { return WebhookHost{ID: id, Node: node} })
}

// PutEndpoint stores a record and its changed sealed secrets in one Txn.
func (w *Webhooks) PutEndpoint(ctx context.Context, id string, rec []byte, sealed map[string][]byte) error {
	ops := []clientv3.Op{clientv3.OpPut(w.cfgKey(id), string(rec))}
	for k, v := range sealed {
		if v == nil {
			ops = append(ops, clientv3.OpDelete(w.secKey(id)+k))
		} else {
			ops = append(ops, clientv3.OpPut(w.secKey(id)+k, string(v)))
		}
	}
	_, err := w.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

// DeleteEndpoint removes a record, its secrets, state and owner in one Txn;
// the host's next write is fenced (its owner key is gone).
func (w *Webhooks) DeleteEndpoint(ctx context.Context, id string) error {
	return w.deleteAll(ctx, id)
}

// Append writes ops (an intake append and the producer's cursor) while
// the endpoint's record exists: a producer never writes state for an
// endpoint deleted meanwhile.
func (w *Webhooks) Append(ctx context.Context, id string, ops []webhook.StateOp) (bool, error) {
	tops := make([]clientv3.Op, 0, len(ops))
	for _, o := range ops {
		if o.Delete {
			tops = append(tops, clientv3.OpDelete(w.stKey(id)+o.Key))
		} else {
			tops = append(tops, clientv3.OpPut(w.stKey(id)+o.Key, string(o.Value)))
		}
	}
	r, err := w.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(w.cfgKey(id)), ">", 0)).Then(tops...).Commit()
	if err != nil {
		return false, err
	}
	return r.Succeeded, nil
}

// Commit writes ops to id's state under the owner lease (fenced).
func (w *Webhooks) Commit(ctx context.Context, id string, ops []webhook.StateOp) error {
	sops := make([]stateOp, len(ops))
	for i, o := range ops {
		sops[i] = stateOp{key: o.Key, value: o.Value, delete: o.Delete}
	}
	return w.commit(ctx, id, w.stKey(id), sops)
}

// Read lists id's state keys under prefix in [start, end).
func (w *Webhooks) Read(ctx context.Context, id, prefix, start, end string, reverse bool, limit int) ([]webhook.StateKV, error) {
	base := w.stKey(id)
	from := base + prefix
	if start > prefix {
		from = base + start
	}
	to := clientv3.GetPrefixRangeEnd(base + prefix)
	if end != "" {
		to = base + end
	}
	opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(int64(limit))}
	if reverse {
		opts = append(opts, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	}
	r, err := w.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, err
	}
	out := make([]webhook.StateKV, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, webhook.StateKV{Key: strings.TrimPrefix(string(kv.Key), base), Value: kv.Value})
	}
	return out, nil
}

// Count is how many of id's state keys are under prefix.
func (w *Webhooks) Count(ctx context.Context, id, prefix string) (int, error) {
	r, err := w.cli.Get(ctx, w.stKey(id)+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(r.Count), nil
}
