package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/remote"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/mcp"
)

// MCPServers keeps the MCP servers added through the API cluster-wide
// (docs/cluster.md, "MCP servers across the cluster"): mcp.Cluster on
// etcd, with the lease-fenced ownership rounds of owned.go, so that each
// server's connection (one stdio process, one remote session) runs on
// exactly one node. Keys under /fangd/mcp/<cluster>/:
//
//   - cfg/<name>: the server's spec (secret values never in it);
//     sec/<name>/<key>: its secrets (env/<NAME>, header/<name>, oauth),
//     sealed with the vault key; own/<name>: its owner, bound to the
//     owner's lease;
//   - st/<name>/view: the host's view of the connection (status, tools),
//     written only under the owner key's lease and read by every node's
//     round, so that every node lists every server with its tools.
//
// The servers of config.toml are a second set of the same kind, conf
// (mcpconf.go): placed among the nodes that list them.
type MCPServers struct {
	*ownedSet
	conf *ownedSet
	node *Node // for NodeAddress; nil in tests
}

var _ mcp.Cluster = (*MCPServers)(nil)

// MCPRuntime is the MCP manager's side (mcp.Manager).
type MCPRuntime interface {
	UseCluster(mcp.Cluster, string) error
	ApplyCluster([]mcp.ClusterServer)
	ApplyConfigCluster([]mcp.ConfigServer)
}

// StartMCP hands the MCP manager this store and starts the ownership
// rounds, whose results go to rt.ApplyCluster.
func (n *Node) StartMCP(rt MCPRuntime) (*MCPServers, error) {
	m := newMCPServers(n.etcd, n.opts.Name, n.memberI, n.opts.NodeName, n.opts.Log, n.topology, rt.ApplyCluster, rt.ApplyConfigCluster)
	m.node = n
	m.excluded = n.Excluded
	m.conf.excluded = n.Excluded
	n.watchEndpoints()
	if err := rt.UseCluster(m, n.opts.NodeName); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.mcp = m
	n.mu.Unlock()
	go m.loop(m.round)
	go m.conf.loop(m.conf.round)
	return m, nil
}

// Kick runs a round of both sets now.
func (m *MCPServers) Kick() {
	m.ownedSet.Kick()
	m.conf.Kick()
}

// stop ends both sets' rounds and revokes their owner leases.
func (m *MCPServers) stop() {
	m.ownedSet.stop()
	m.conf.stop()
}

// cancel ends both sets' rounds without revoking (tests: a node dying).
func (m *MCPServers) cancel() {
	m.ownedSet.cancel()
	m.conf.cancel()
}

// Hosted is how many MCP connections this node hosts, of both sets.
func (m *MCPServers) Hosted() int { return m.ownedSet.Hosted() + m.conf.Hosted() }

func newMCPServers(cli *clientv3.Client, cluster, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]mcp.ClusterServer), applyConf func([]mcp.ConfigServer)) *MCPServers {
	s := newOwnedSet(cli, "/fangd/mcp/"+cluster+"/", "st/", "mcp_server", memberID, nodeName, log, members,
		applyAs(apply, func(e ownedEntity) mcp.ClusterServer {
			return mcp.ClusterServer{Name: e.Name, Record: e.Record, Sealed: e.Sealed, View: e.State["view"], Node: e.Node, Mine: e.Mine}
		}))
	s.withState = true
	if applyConf == nil {
		applyConf = func([]mcp.ConfigServer) {}
	}
	return &MCPServers{ownedSet: s, conf: newMCPConf(cli, cluster, memberID, nodeName, log, members, applyConf)}
}

// MCPHost is where one MCP server's connection runs, for GET /api/cluster.
type MCPHost struct {
	Name string `json:"name"`
	// Node is the hosting node's name; "" while no node holds it.
	Node string `json:"node"`
	// Source is "api" (added through the API) or "config" (listed in the
	// config.toml of some nodes, run by one of them).
	Source string `json:"source"`
}

// MCPHosts is where each MCP server runs, from the last rounds.
func (n *Node) MCPHosts() []MCPHost {
	_, _, api, conf := n.ownedSets()
	from := func(source string) func(name, node string) MCPHost {
		return func(name, node string) MCPHost { return MCPHost{Name: name, Node: node, Source: source} }
	}
	return append(hostsAs(api, from("api")), hostsAs(conf, from("config"))...)
}

// PutServer stores a record, its new sealed secrets and drops the secrets
// in drop, in one Txn; with create only while the name is free.
func (m *MCPServers) PutServer(ctx context.Context, name string, rec []byte, sealed map[string][]byte, drop []string, create bool) error {
	ops := []clientv3.Op{clientv3.OpPut(m.cfgKey(name), string(rec))}
	for _, k := range drop {
		if _, given := sealed[k]; !given {
			ops = append(ops, clientv3.OpDelete(m.secKey(name)+k))
		}
	}
	for k, v := range sealed {
		ops = append(ops, clientv3.OpPut(m.secKey(name)+k, string(v)))
	}
	var conds []clientv3.Cmp
	if create {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(m.cfgKey(name)), "=", 0),
			// No node's config.toml lists the name (mcpconf.go).
			clientv3.Compare(clientv3.CreateRevision(m.confAdvertPrefix(name)), "=", 0).WithPrefix())
	} else {
		// An update never recreates a server deleted meanwhile.
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(m.cfgKey(name)), ">", 0))
	}
	r, err := m.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !r.Succeeded {
		if create {
			return mcp.ErrServerExists
		}
		return fmt.Errorf("MCP server %s was deleted meanwhile", name)
	}
	return nil
}

// DeleteServer removes a server's record, secrets, state and owner in one
// Txn; its host stops the connection on its next round.
func (m *MCPServers) DeleteServer(ctx context.Context, name string) error {
	return m.deleteAll(ctx, name)
}

// PutSecret writes (or, with sealed nil, deletes) one sealed secret while
// the server's record exists. Any node may: a sign-in finishes on the
// node whose callback URL the browser reached, and the host saves each
// refreshed OAuth token, so that the node taking over keeps it.
func (m *MCPServers) PutSecret(ctx context.Context, name, key string, sealed []byte) error {
	op := clientv3.OpPut(m.secKey(name)+key, string(sealed))
	if sealed == nil {
		op = clientv3.OpDelete(m.secKey(name) + key)
	}
	r, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(m.cfgKey(name)), ">", 0)).Then(op).Commit()
	if err != nil {
		return err
	}
	if !r.Succeeded {
		return fmt.Errorf("MCP server %s was deleted", name)
	}
	return nil
}

// PublishState writes the host's view of a connection under its owner
// lease (fenced: a node that lost the server cannot overwrite it).
func (m *MCPServers) PublishState(ctx context.Context, name string, state []byte) error {
	return m.commit(ctx, name, m.stKey(name), []stateOp{{key: "view", value: state}})
}

// NodeAddress is the remoting address of the live node named nodeName,
// refused while the remoting connection to it is lost (lostFor).
func (m *MCPServers) NodeAddress(ctx context.Context, nodeName string) (string, error) {
	if m.node == nil {
		return "", fmt.Errorf("cluster: no node")
	}
	addr, err := m.node.NodeAddress(ctx, nodeName)
	if err != nil {
		return "", err
	}
	if m.node.endpointLost(addr) {
		return "", fmt.Errorf("cluster: the connection to node %s was lost", nodeName)
	}
	return addr, nil
}

// ConnectionLost reports that the remoting connection to addr was lost
// (within lostFor) and not made again since: a call waiting for that
// node's answer gives up (mcp awaitRemote).
func (m *MCPServers) ConnectionLost(addr string) bool {
	return m.node != nil && m.node.endpointLost(addr)
}

// lostFor is how long a remoting connection reported lost makes messages
// to that address fail at once. Why: upstream's endpoint writer retries a
// connection 5 times 2 s apart before it gives a message up, so a call to
// a node killed with -9 would wait 10 s for its error; the lost connection
// is reported at once (EndpointTerminatedEvent). A host that is really
// dead loses its lease within 4 s and its entities move; a node whose
// connection only blinked is tried again after lostFor, or as soon as a
// connection to it is made.
const lostFor = 10 * time.Second

// watchEndpoints records lost and re-made remoting connections, once.
func (n *Node) watchEndpoints() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lost != nil {
		return
	}
	n.lost = map[string]time.Time{}
	n.C.ActorSystem.EventStream.Subscribe(func(evt any) {
		switch e := evt.(type) {
		case *remote.EndpointTerminatedEvent:
			n.mu.Lock()
			n.lost[e.Address] = time.Now()
			n.mu.Unlock()
		case *remote.EndpointConnectedEvent:
			n.mu.Lock()
			delete(n.lost, e.Address)
			n.mu.Unlock()
		}
	})
}

func (n *Node) endpointLost(addr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.lost[addr]
	return ok && time.Since(at) < lostFor
}
