package mcp

// Cluster mode (docs/cluster.md, "MCP servers across the cluster"): the
// servers added through the API are kept in etcd (actors/cluster
// MCPServers) instead of this node's store, their secrets sealed with the
// vault key; each runs on the one node holding its lease-fenced owner key,
// which publishes the connection's state (status, tools) to etcd; every
// other node lists it from there and sends calls of its tools to the host
// over the cluster's remoting. config.toml's servers run the same way on
// one of the nodes whose file lists them (clusterconf.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Cluster is the cluster-wide store of API-defined servers (actors/cluster
// MCPServers on etcd).
type Cluster interface {
	// PutServer stores a record and its sealed secrets (keys relative to
	// mcp/<name>/, e.g. env/TOKEN) and deletes the secrets in drop, in one
	// Txn; with create, only if no server of that name exists
	// (ErrServerExists otherwise).
	PutServer(ctx context.Context, name string, rec []byte, sealed map[string][]byte, drop []string, create bool) error
	// DeleteServer removes a server's record, secrets, state and owner.
	DeleteServer(ctx context.Context, name string) error
	// PutSecret writes one sealed secret (nil: deletes it) while the
	// server's record exists.
	PutSecret(ctx context.Context, name, key string, sealed []byte) error
	// PublishState writes the host's view of the connection, fenced by its
	// owner lease.
	PublishState(ctx context.Context, name string, state []byte) error
	// NodeAddress is the remoting address of the live node named node.
	NodeAddress(ctx context.Context, node string) (string, error)
	// ConnectionLost reports that the remoting connection to addr was
	// lost and not made again since.
	ConnectionLost(addr string) bool
	// Kick runs an ownership round now.
	Kick()
	// AdvertiseConfig sets the config.toml servers this node lists (name
	// -> advert); the servers' rounds go to ApplyConfigCluster.
	AdvertiseConfig(ads map[string]ConfigAd)
	// PublishConfigState is PublishState for a config.toml server.
	PublishConfigState(ctx context.Context, name string, state []byte) error
}

// ErrServerExists is a PutServer with create for a name already taken
// somewhere in the cluster.
var ErrServerExists = errors.New("an MCP server of that name exists in the cluster")

// ClusterServer is one API-defined server as an ownership round saw it.
type ClusterServer struct {
	Name   string
	Record []byte
	Sealed map[string][]byte
	// View is the host's published state (JSON of serverState), nil
	// before the host published one.
	View []byte
	// Node hosts the connection ("" while nobody does); Mine when it is
	// this node.
	Node string
	Mine bool
}

// HostedElsewhere is a request that needs the connection actor of a server
// another node hosts (a reconnect, accepting tools): transport/http
// forwards it there.
type HostedElsewhere struct {
	Server string
	Node   string
}

func (h *HostedElsewhere) Error() string {
	return "MCP server " + h.Server + " is hosted on cluster node " + h.Node
}

// Host names the server and its node, for request routing.
func (h *HostedElsewhere) Host() (what, node string) { return "MCP server " + h.Server, h.Node }

// clusterHook is the joined cluster.
type clusterHook struct {
	c    Cluster
	self string
}

// UseCluster hands the manager the cluster store once the node joined
// (Options.Clustered must have been set at Start) and serves calls other
// nodes send for the servers this node hosts.
func (m *Manager) UseCluster(c Cluster, self string) error {
	m.clu.Store(&clusterHook{c: c, self: self})
	_, err := m.env.k.SpawnRoot(remoteActor, func() actor.Actor { return &remoteCalls{m: m} })
	m.advertiseConfig()
	return err
}

// ApplyCluster hands the supervisor an ownership round's result.
func (m *Manager) ApplyCluster(servers []ClusterServer) {
	m.env.k.Root.Send(m.pid, &clusterView{servers: servers})
}

// cluster is the joined cluster, nil before UseCluster or without one.
func (m *Manager) cluster() *clusterHook { return m.clu.Load() }

type clusterView struct{ servers []ClusterServer }

// applyCluster reconciles the supervisor with an ownership round: a server
// this node now holds gets its connection actor (or the new definition),
// one another node holds loses it here and shows the host's published
// state instead, a server gone from etcd is forgotten.
func (s *supervisor) applyCluster(c actor.Context, v *clusterView) {
	seen := map[string]bool{}
	for _, cs := range v.servers {
		var spec Spec
		if err := json.Unmarshal(cs.Record, &spec); err != nil || spec.Name != cs.Name {
			s.env.log.Error().Str("mcp_server", cs.Name).Msg("unreadable MCP server record in etcd; skipped")
			continue
		}
		seen[cs.Name] = true
		if d, ok := s.defs[cs.Name]; ok && d.source == sourceConfig {
			// The API server holds the name cluster-wide: this node's
			// config.toml entry was not advertised (clusterconf.go).
			s.stopChild(c, cs.Name)
			delete(s.defs, cs.Name)
			delete(s.states, cs.Name)
		}
		prev, had := s.defs[cs.Name]
		changed := s.env.csec.update(cs.Name, cs.Sealed)
		s.defs[cs.Name] = definition{spec: spec, source: sourceAPI, clustered: true, node: cs.Node, mine: cs.Mine}
		_, running := s.children[cs.Name]
		switch {
		case cs.Mine && !running && s.crashed[cs.Name] && !changed && equalDefinition(prev.spec, spec):
			// Stopped by supervision: down until its definition changes.
		case cs.Mine && !running:
			if !had || !prev.mine {
				s.states[cs.Name] = serverState{}
			}
			s.spawn(c, cs.Name)
		case cs.Mine && (changed || !equalDefinition(prev.spec, spec) || prev.spec.Disabled != spec.Disabled || prev.spec.TimeoutSecs != spec.TimeoutSecs):
			s.reapply(c, cs.Name)
		case !cs.Mine:
			delete(s.crashed, cs.Name) // a new attempt if it comes back
			if running {
				s.stopChild(c, cs.Name)
			}
			s.states[cs.Name] = remoteState(cs.View, cs.Node)
		}
	}
	for name, d := range s.defs {
		if d.clustered && d.source == sourceAPI && !seen[name] {
			s.env.csec.forget(name)
			s.forget(c, name)
			// A config.toml entry it shadowed here comes back.
			s.restoreConfig(name)
		}
	}
	s.publishIndex()
}

// publishView writes the state of a connection this node hosts to etcd
// for the other nodes (latest value wins; one writer goroutine, so writes
// keep their order).
func (s *supervisor) publishView(name string, st serverState) {
	h := s.m.cluster()
	if h == nil {
		return
	}
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	s.m.views.set(h.c, viewKey{name: name, config: s.defs[name].source == sourceConfig}, b)
}

// viewKey names a published view: config servers have their own set.
type viewKey struct {
	name   string
	config bool
}

// viewPublisher is the one goroutine writing hosted connections' states.
type viewPublisher struct {
	mu      sync.Mutex
	pending map[viewKey][]byte
	running bool
}

func (p *viewPublisher) set(c Cluster, k viewKey, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[viewKey][]byte{}
	}
	p.pending[k] = b
	if p.running {
		return
	}
	p.running = true
	go p.run(c)
}

func (p *viewPublisher) run(c Cluster) {
	for {
		p.mu.Lock()
		if len(p.pending) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		batch := p.pending
		p.pending = nil
		p.mu.Unlock()
		for k, b := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			// Fenced: a node that lost the server cannot overwrite the
			// new host's view; the error is the expected outcome then.
			if k.config {
				_ = c.PublishConfigState(ctx, k.name, b)
			} else {
				_ = c.PublishState(ctx, k.name, b)
			}
			cancel()
		}
	}
}

// persistCluster stores an API-defined server in etcd: the record and its
// secrets sealed with the vault key, in one Txn.
func (s *supervisor) persistCluster(spec Spec, secrets map[string]string, drop []string, create bool) error {
	h := s.m.cluster()
	if h == nil {
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "this node has not joined the cluster yet; try again")
	}
	sealed, err := s.env.csec.seal(spec.Name, secrets)
	if err != nil {
		return err
	}
	var dropKeys []string
	for _, k := range drop {
		if _, sub, ok := splitSecretKey(k); ok {
			dropKeys = append(dropKeys, sub)
		}
	}
	rec, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.c.PutServer(ctx, spec.Name, rec, sealed, dropKeys, create); err != nil {
		if errors.Is(err, ErrServerExists) {
			return kernel.Conflict("MCP server '%s' already exists", spec.Name)
		}
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "storing the MCP server in etcd failed: %s", err.Error())
	}
	s.env.csec.remember(spec.Name, sealed, dropKeys)
	h.c.Kick()
	return nil
}

// removeCluster deletes an API-defined server from etcd.
func (s *supervisor) removeCluster(name string) error {
	h := s.m.cluster()
	if h == nil {
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "this node has not joined the cluster yet; try again")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.c.DeleteServer(ctx, name); err != nil {
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "deleting the MCP server in etcd failed: %s", err.Error())
	}
	s.env.csec.forget(name)
	h.c.Kick()
	return nil
}

// ---- secrets in etcd ----

// secretStore is where a server's secrets are: this node's vault, or in
// cluster mode clusterSecrets. *store.Vault is one.
type secretStore interface {
	With(name string, fn func(secret []byte) error) error
	Put(name string, plaintext []byte) error
	Has(name string) (bool, error)
	Delete(name string) error
}

// clusterSecrets keeps the sealed secrets of the API-defined servers as
// the last round read them from etcd, opened with this node's vault key
// (the same VAULT key on every node); a write (a refreshed OAuth token, a
// finished sign-in) goes to etcd at once, so a failover keeps it.
type clusterSecrets struct {
	vault *store.Vault
	m     *Manager

	mu     sync.Mutex
	sealed map[string]map[string][]byte // server -> key below mcp/<server>/ -> sealed
}

// splitSecretKey cuts a vault key mcp/<server>/<sub> into server and sub.
func splitSecretKey(key string) (server, sub string, ok bool) {
	rest, ok := strings.CutPrefix(key, "mcp/")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// local reports a server of this node's config.toml (and not an API
// server of the same name, which holds the name cluster-wide): its
// secrets are in this node's own vault (its spec and secrets never go to
// etcd), so that it resolves them as on one node and keeps an OAuth
// sign-in there.
func (cs *clusterSecrets) local(server string) bool {
	if cs.vault == nil || !slices.ContainsFunc(cs.m.configSpecs(), func(sp Spec) bool { return sp.Name == server }) {
		return false
	}
	cs.mu.Lock()
	_, api := cs.sealed[server]
	cs.mu.Unlock()
	return !api
}

func (cs *clusterSecrets) With(name string, fn func([]byte) error) error {
	server, sub, ok := splitSecretKey(name)
	if !ok || cs.vault == nil {
		return store.ErrNotFound
	}
	if cs.local(server) {
		return cs.vault.With(name, fn)
	}
	cs.mu.Lock()
	b, found := cs.sealed[server][sub]
	cs.mu.Unlock()
	if !found {
		return store.ErrNotFound
	}
	if err := cs.vault.Open(name, b, fn); err != nil {
		return fmt.Errorf("%w (every node needs the same %s in cluster mode)", err, store.VaultKeyEnv)
	}
	return nil
}

func (cs *clusterSecrets) Has(name string) (bool, error) {
	server, sub, ok := splitSecretKey(name)
	if !ok {
		return false, nil
	}
	if cs.local(server) {
		return cs.vault.Has(name)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, found := cs.sealed[server][sub]
	return found, nil
}

func (cs *clusterSecrets) Put(name string, plaintext []byte) error {
	return cs.write(name, plaintext, false)
}

func (cs *clusterSecrets) Delete(name string) error { return cs.write(name, nil, true) }

func (cs *clusterSecrets) write(name string, plaintext []byte, del bool) error {
	server, sub, ok := splitSecretKey(name)
	if ok && cs.local(server) {
		if del {
			return cs.vault.Delete(name)
		}
		return cs.vault.Put(name, plaintext)
	}
	h := cs.m.cluster()
	if !ok || h == nil || cs.vault == nil {
		return kernel.Unavailable("the cluster's secret store is not available")
	}
	var sealed []byte
	if !del {
		var err error
		if sealed, err = cs.vault.Seal(name, plaintext); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.c.PutSecret(ctx, server, sub, sealed); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if del {
		cs.remember(server, nil, []string{sub})
	} else {
		cs.remember(server, map[string][]byte{sub: sealed}, nil)
	}
	return nil
}

// seal seals secrets (vault key -> value) for PutServer.
func (cs *clusterSecrets) seal(server string, secrets map[string]string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(secrets))
	for k, v := range secrets {
		if cs.vault == nil {
			return nil, kernel.Unavailable("the vault is not available to store credentials")
		}
		_, sub, ok := splitSecretKey(k)
		if !ok {
			continue
		}
		b, err := cs.vault.Seal(k, []byte(v))
		if err != nil {
			return nil, err
		}
		out[sub] = b
	}
	return out, nil
}

// remember records what this node wrote, so that the next round does not
// take its own write for a change made elsewhere.
func (cs *clusterSecrets) remember(server string, put map[string][]byte, drop []string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.sealed == nil {
		cs.sealed = map[string]map[string][]byte{}
	}
	if cs.sealed[server] == nil {
		cs.sealed[server] = map[string][]byte{}
	}
	for k, v := range put {
		cs.sealed[server][k] = v
	}
	for _, k := range drop {
		delete(cs.sealed[server], k)
	}
}

// update replaces a server's sealed secrets with a round's; changed when
// they differ from what this node knew (another node wrote them: a
// sign-in finished there, a PUT with new values).
func (cs *clusterSecrets) update(server string, sealed map[string][]byte) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.sealed == nil {
		cs.sealed = map[string]map[string][]byte{}
	}
	old := cs.sealed[server]
	changed := len(old) != len(sealed)
	for k, v := range sealed {
		if string(old[k]) != string(v) {
			changed = true
		}
	}
	cs.sealed[server] = sealed
	return changed
}

func (cs *clusterSecrets) forget(server string) {
	cs.mu.Lock()
	delete(cs.sealed, server)
	cs.mu.Unlock()
}

// ---- calls across nodes ----

// remoteActor is the root actor on every node that runs the calls other
// nodes send for the servers it hosts.
const remoteActor = "mcp-remote"

// remoteCall and remoteReply travel as JSON inside a protobuf BytesValue
// (the cluster's remoting carries only protobuf messages).
type remoteCall struct {
	Tool string          `json:"tool"` // the namespaced name, mcp_<server>_<tool>
	Args json.RawMessage `json:"args,omitempty"`
	// TimeoutMS is how long the caller waits.
	TimeoutMS int64 `json:"timeout_ms"`
}

type remoteReply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Failed bool            `json:"failed,omitempty"`
	Kind   kernel.Kind     `json:"kind,omitempty"`
	Code   string          `json:"code,omitempty"`
	Msg    string          `json:"msg,omitempty"`
}

// remoteCalls runs each call in its own goroutine: the actor never waits
// for a server.
type remoteCalls struct{ m *Manager }

func (r *remoteCalls) Receive(c actor.Context) {
	msg, ok := c.Message().(*wrapperspb.BytesValue)
	if !ok || c.Sender() == nil {
		return
	}
	sender := c.Sender()
	root := r.m.env.k.Root
	go func() {
		var call remoteCall
		var rep remoteReply
		if err := json.Unmarshal(msg.Value, &call); err != nil {
			rep = remoteReply{Failed: true, Kind: kernel.KindInvalid, Code: "bad_request", Msg: "unreadable cross-node MCP call"}
		} else {
			timeout := time.Duration(call.TimeoutMS) * time.Millisecond
			if timeout <= 0 || timeout > 10*time.Minute {
				timeout = time.Minute
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			res, _, _, err := r.m.callLocal(ctx, call.Tool, call.Args)
			cancel()
			rep = replyOf(res, err)
		}
		b, _ := json.Marshal(rep)
		root.Send(sender, wrapperspb.Bytes(b))
	}()
}

func replyOf(res *sdk.CallToolResult, err error) remoteReply {
	if err != nil {
		if de := kernel.AsError(err); de != nil {
			return remoteReply{Failed: true, Kind: de.Kind, Code: de.Code, Msg: de.Msg}
		}
		return remoteReply{Failed: true, Kind: kernel.KindUnavailable, Code: "mcp_error", Msg: err.Error()}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return remoteReply{Failed: true, Kind: kernel.KindUnavailable, Code: "mcp_error", Msg: err.Error()}
	}
	return remoteReply{Result: b}
}

// callRemote sends a call of a tool of a server hosted on node to that
// node and waits for its answer. Nothing hosting it, or a host that does
// not answer: 503 host_unreachable.
func (m *Manager) callRemote(ctx context.Context, it indexedTool, args json.RawMessage) (*sdk.CallToolResult, error) {
	h := m.cluster()
	if h == nil || it.node == "" {
		return nil, kernel.Errorf(kernel.KindUnavailable, "host_unreachable",
			"MCP server %s runs on no cluster node right now (its host stopped; another node takes it over within seconds); try again", it.Server)
	}
	addr, err := h.c.NodeAddress(ctx, it.node)
	if err != nil {
		return nil, kernel.Errorf(kernel.KindUnavailable, "host_unreachable",
			"MCP server %s is hosted on cluster node %s, which is not reachable now; try again", it.Server, it.node)
	}
	timeout := time.Duration(it.timeout)*time.Second + 5*time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	b, _ := json.Marshal(remoteCall{Tool: it.Info.Name, Args: args, TimeoutMS: timeout.Milliseconds()})
	ans, err := awaitRemote(h.c, addr, m.env.k.Root.RequestFuture(actor.NewPID(addr, remoteActor), wrapperspb.Bytes(b), timeout))
	if err != nil {
		return nil, kernel.Errorf(kernel.KindUnavailable, "host_unreachable",
			"MCP server %s is hosted on cluster node %s, which did not answer (%v); the call may have reached it", it.Server, it.node, err)
	}
	bv, ok := ans.(*wrapperspb.BytesValue)
	if !ok {
		return nil, kernel.Errorf(kernel.KindUnavailable, "host_unreachable", "cluster node %s answered the call of %s with %T", it.node, it.Info.Name, ans)
	}
	var rep remoteReply
	if err := json.Unmarshal(bv.Value, &rep); err != nil {
		return nil, kernel.Unavailable("cluster node %s answered the call of %s unreadably", it.node, it.Info.Name)
	}
	if rep.Failed {
		return nil, kernel.Errorf(rep.Kind, rep.Code, "%s", rep.Msg)
	}
	var res sdk.CallToolResult
	if err := json.Unmarshal(rep.Result, &res); err != nil {
		return nil, kernel.Unavailable("cluster node %s answered the call of %s unreadably: %v", it.node, it.Info.Name, err)
	}
	return &res, nil
}

// lostCheckEvery is how often a call waiting for another node's answer
// checks that the connection to that node is still there.
const lostCheckEvery = 100 * time.Millisecond

// awaitRemote waits for a cross-node call's answer, or gives up as soon
// as the remoting connection to addr is reported lost. Why: a call sent
// in the moment the host died (before the loss was reported) is dropped
// by upstream's endpoint writer without an answer, and would otherwise
// wait for its whole timeout (the server's timeout_secs plus 5 s).
func awaitRemote(c Cluster, addr string, fut *actor.Future) (any, error) {
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fut.Result()
		done <- result{v, err}
	}()
	t := time.NewTicker(lostCheckEvery)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			return r.v, r.err
		case <-t.C:
			if c.ConnectionLost(addr) {
				return nil, errors.New("the connection to it was lost")
			}
		}
	}
}

// indexRemote adds the tools of a server another node hosts, as its host
// published them: listed while connected there, routed to the host.
func (s *supervisor) indexRemote(idx *toolIndex, name string, d definition, st serverState) {
	if st.Status == StatusDisabled {
		return
	}
	for _, t := range st.Tools {
		if _, clash := idx.byName[t.Name]; clash {
			continue
		}
		it := indexedTool{Server: name, remote: true, node: d.node, timeout: int(d.spec.Timeout() / time.Second), Info: t}
		idx.byName[t.Name] = it
		if st.Status == StatusConnected && d.node != "" && !t.Quarantined {
			idx.list = append(idx.list, it)
		}
	}
}
