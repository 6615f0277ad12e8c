package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The agent directory (docs/cluster.md "Request routing"): an agent runs
// on the node it was created on (one activation, no failover), and any
// node must find that node to forward a request for it. Each agent has two
// small keys under /fangd/agents/<cluster>/:
//
//	id/<agent id>   -> {"id","name","node"}
//	name/<name>     -> agent id
//
// The name key makes names unique cluster-wide, as they are on one node:
// a create whose name another node's agent holds is refused in the same
// Txn that registers it. Records are not bound to a lease: an agent
// outlives its node's absence (its node is down, requests for it answer
// 503 host_unreachable until the node is back).

// AgentRecord is one agent's directory entry.
type AgentRecord struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Node string `json:"node"`
}

// AgentNameTaken says another agent holds the name cluster-wide.
type AgentNameTaken struct {
	Name, ID, Node string
}

func (e *AgentNameTaken) Error() string {
	return fmt.Sprintf("agent name %q is taken by agent %s on cluster node %s", e.Name, e.ID, e.Node)
}

// AgentDir is the cluster's agent directory, as seen from one node.
type AgentDir struct {
	etcd   *clientv3.Client
	prefix string
	node   string
	log    zerolog.Logger
}

// Agents returns the node's view of the agent directory.
func (n *Node) Agents() *AgentDir {
	return newAgentDir(n.etcd, n.opts.Name, n.opts.NodeName, n.opts.Log)
}

func newAgentDir(cli *clientv3.Client, cluster, node string, log zerolog.Logger) *AgentDir {
	return &AgentDir{etcd: cli, prefix: "/fangd/agents/" + cluster + "/", node: node, log: log}
}

// NodeName is the node this view registers agents for.
func (d *AgentDir) NodeName() string { return d.node }

func (d *AgentDir) idKey(id string) string     { return d.prefix + "id/" + id }
func (d *AgentDir) nameKey(name string) string { return d.prefix + "name/" + name }

// Register records agent id (named name) as hosted on this node: a new
// name is claimed in the same Txn; a name held by another agent is
// *AgentNameTaken and nothing is written. Registering again is harmless.
func (d *AgentDir) Register(ctx context.Context, id, name string) error {
	rec, _ := json.Marshal(AgentRecord{ID: id, Name: name, Node: d.node})
	nk := d.nameKey(name)
	for {
		resp, err := d.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
			Then(clientv3.OpPut(nk, id), clientv3.OpPut(d.idKey(id), string(rec))).
			Else(clientv3.OpGet(nk)).
			Commit()
		if err != nil {
			return fmt.Errorf("agent directory: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted meanwhile: claim it again
		}
		holder := string(kvs[0].Value)
		if holder == id {
			// Ours already: refresh the id record (the node may have
			// changed its name) if the name key still says so.
			r, err := d.etcd.Txn(ctx).
				If(clientv3.Compare(clientv3.Value(nk), "=", id)).
				Then(clientv3.OpPut(d.idKey(id), string(rec))).
				Commit()
			if err != nil {
				return fmt.Errorf("agent directory: %w", err)
			}
			if r.Succeeded {
				return nil
			}
			continue
		}
		taken := &AgentNameTaken{Name: name, ID: holder}
		if other, ok, err := d.get(ctx, holder); err == nil && ok {
			taken.Node = other.Node
		}
		return taken
	}
}

// Remove deletes agent id's record, and its name key while it names id.
func (d *AgentDir) Remove(ctx context.Context, id, name string) error {
	nk := d.nameKey(name)
	_, err := d.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(nk), "=", id)).
		Then(clientv3.OpDelete(nk), clientv3.OpDelete(d.idKey(id))).
		Else(clientv3.OpDelete(d.idKey(id))).
		Commit()
	if err != nil {
		return fmt.Errorf("agent directory: %w", err)
	}
	return nil
}

func (d *AgentDir) get(ctx context.Context, id string) (AgentRecord, bool, error) {
	resp, err := d.etcd.Get(ctx, d.idKey(id))
	if err != nil {
		return AgentRecord{}, false, fmt.Errorf("agent directory: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return AgentRecord{}, false, nil
	}
	var r AgentRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil || r.Node == "" {
		return AgentRecord{}, false, nil
	}
	return r, true, nil
}

// Lookup finds the agent with id, or else the one named name (one of
// them may be empty): one etcd read by id, two by name.
func (d *AgentDir) Lookup(ctx context.Context, id, name string) (AgentRecord, bool, error) {
	if id != "" {
		return d.get(ctx, id)
	}
	resp, err := d.etcd.Get(ctx, d.nameKey(name))
	if err != nil {
		return AgentRecord{}, false, fmt.Errorf("agent directory: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return AgentRecord{}, false, nil
	}
	return d.get(ctx, string(resp.Kvs[0].Value))
}

// List is every agent in the directory, by name.
func (d *AgentDir) List(ctx context.Context) ([]AgentRecord, error) {
	resp, err := d.etcd.Get(ctx, d.prefix+"id/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("agent directory: %w", err)
	}
	out := make([]AgentRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r AgentRecord
		if json.Unmarshal(kv.Value, &r) == nil && r.Node != "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Sync runs at start: registers the agents this node hosts (local, id to
// name) and removes records naming this node for agents it no longer
// has (deleted while etcd did not answer, or a crash between the local
// delete and the directory's). A local agent whose name another node's
// agent holds is left out of the directory and reported in conflicts: it
// answers on this node only.
func (d *AgentDir) Sync(ctx context.Context, local map[string]string) (conflicts []string, err error) {
	all, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if r.Node != d.node {
			continue
		}
		if name, ok := local[r.ID]; !ok || name != r.Name {
			if err := d.Remove(ctx, r.ID, r.Name); err != nil {
				return nil, err
			}
		}
	}
	ids := make([]string, 0, len(local))
	for id := range local {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		err := d.Register(ctx, id, local[id])
		var taken *AgentNameTaken
		if errors.As(err, &taken) {
			conflicts = append(conflicts, local[id])
			continue
		}
		if err != nil {
			return conflicts, err
		}
	}
	return conflicts, nil
}

// Rename moves agent id's name from old to name: claims name (refused
// with *AgentNameTaken if another agent holds it), then frees old while it
// still names id.
func (d *AgentDir) Rename(ctx context.Context, id, old, name string) error {
	if err := d.Register(ctx, id, name); err != nil {
		return err
	}
	ok := d.nameKey(old)
	if _, err := d.etcd.Txn(ctx).If(clientv3.Compare(clientv3.Value(ok), "=", id)).Then(clientv3.OpDelete(ok)).Commit(); err != nil {
		return fmt.Errorf("agent directory: %w", err)
	}
	return nil
}
