// Package cluster makes a fangd node a member of a Proto.Actor cluster
// (protoactor-go's cluster package) whose membership is kept in etcd by
// protoactor-go's etcd provider. It is only started with --cluster or
// [cluster] endpoints; a single node never imports etcd at run time.
//
// What it adds besides membership: each node keeps a small leased record
// in etcd (its fangd node name, HTTP URL and how many entities of each kind
// it hosts), so that any node can answer GET /api/cluster from etcd and the
// cluster's member list alone, and so that a node that left the
// topology but is still alive (upstream's etcd-rejoin trap) shows up as
// "excluded" instead of silently vanishing.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	etcdprovider "github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fangd/fangd/actors/kernel"
)

// Options configure one member.
type Options struct {
	// Endpoints are etcd client endpoints, host:port.
	Endpoints []string
	// Name is the cluster's name; nodes with the same name and etcd form
	// one cluster.
	Name string
	// NodeName names this node in GET /api/cluster.
	NodeName string
	// HTTPURL is this node's API base URL, which other nodes route to.
	HTTPURL string
	// BindHost and BindPort are where the member listens for other
	// members (gRPC, protobuf messages); port 0 picks a free one.
	// AdvertisedHost, if set, is the host others dial instead.
	BindHost       string
	BindPort       int
	AdvertisedHost string
	// Kinds are the grain kinds this member can host.
	Kinds []*pcluster.Kind
	// Hosted reports how many entities of each kind this node hosts now;
	// it is read each time the node record is refreshed.
	Hosted func(ctx context.Context) map[string]int
	// Watchdog acts when this node drops out of its own topology
	// (watchdog.go); zero value: logged only.
	Watchdog Watchdog
	// TLS, if set, is mutual TLS between the members' remoting
	// listeners (tls.go).
	TLS *TLSFiles
	// EtcdTLS, if set, is TLS on the etcd client connections
	// (etcdtls.go); nil: plain.
	EtcdTLS *EtcdTLS
	// EtcdAuth, if set, is etcd username/password authentication
	// (etcdauth.go).
	EtcdAuth *EtcdAuth
	Log      zerolog.Logger
}

// recordTTL is the lease of a node's record: a node killed with -9
// disappears from GET /api/cluster this long after its last refresh.
const recordTTL = 5

// refreshEvery is how often a node rewrites its record (only when what it
// hosts changed) and checks it is still in the topology.
const refreshEvery = 2 * time.Second

// Node is this process's membership.
type Node struct {
	opts    Options
	C       *pcluster.Cluster
	etcd    *clientv3.Client
	lease   clientv3.LeaseID
	memberI string
	// ctx ends when Stop begins: the loop's etcd calls give up at once.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	last      string // last record written
	excluded  bool
	channels  *Channels   // cluster-wide channels, once started
	webhooks  *Webhooks   // cluster-wide webhook endpoints, once started
	approvals *Approvals  // cluster-wide approvals, once started
	a2a       *A2ATasks   // the A2A task directory, once started (a2a.go)
	mcp       *MCPServers // cluster-wide MCP servers, once started
	// lost: remoting addresses whose connection was lost, and when
	// (mcp.go); nil until watched.
	lost    map[string]time.Time
	wd      *watch
	records *watched[Record]      // node records (records.go)
	agents  *watched[AgentRecord] // the agent directory (agents.go)

	// auditcp writes and records audit tips across nodes (auditcp.go),
	// once started.
	auditcp *AuditCheckpoints
}

// Record is a node's entry in etcd.
type Record struct {
	MemberID string         `json:"member_id"`
	NodeName string         `json:"node_name"`
	HTTPURL  string         `json:"http_url"`
	Address  string         `json:"address"`
	Started  time.Time      `json:"started_at"`
	Hosted   map[string]int `json:"hosted"`
}

// Start joins the cluster: checks etcd answers (a clear error instead of
// upstream's panic), starts remoting and the member, writes the node record.
func Start(k *kernel.Kernel, opts Options) (*Node, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoints")
	}
	if opts.BindHost == "" {
		opts.BindHost = "127.0.0.1"
	}
	cfg := clientv3.Config{Endpoints: opts.Endpoints, DialTimeout: 5 * time.Second, Logger: zapNop()}
	if opts.EtcdTLS != nil {
		fresh, dial, err := opts.EtcdTLS.configs(opts.Log)
		if err != nil {
			return nil, err
		}
		if err := checkEtcdTLS(opts.Endpoints, fresh()); err != nil {
			return nil, err
		}
		// Config.TLS says "TLS"; dial makes the configuration per
		// connection (a reloaded etcd_ca), for the provider's client too.
		cfg.TLS, cfg.DialOptions = fresh(), dial
	}
	if opts.EtcdAuth != nil {
		// The client authenticates in New (and again when its token
		// expires), for every connection the provider opens too.
		cfg.Username, cfg.Password = opts.EtcdAuth.Username, opts.EtcdAuth.Password
	}
	cli, err := clientv3.New(cfg)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err = cli.Status(ctx, opts.Endpoints[0]); err == nil {
			err = checkEtcdAccess(ctx, cli, opts.EtcdAuth, opts.Endpoints)
			if err != nil {
				cancel()
				cli.Close()
				return nil, err
			}
		}
		cancel()
		if err != nil {
			cli.Close()
		}
	}
	if err != nil {
		if aerr := explainAuth(opts.EtcdAuth, opts.Endpoints, err); aerr != nil {
			return nil, aerr
		}
		if opts.EtcdTLS == nil {
			return nil, explainPlain(opts.Endpoints, err)
		}
		return nil, fmt.Errorf("cluster: etcd at %v does not answer: %w", opts.Endpoints, err)
	}
	provider, err := etcdprovider.NewWithConfig("/fangd/members", cfg)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster: etcd provider: %w", err)
	}
	// An unknown or undecodable message must not take the receiver
	// down: upstream remote panics on one (DESIGN.md "Cluster mode").
	sopts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(recoverUnary(opts.Log)), grpc.ChainStreamInterceptor(recoverStream(opts.Log))}
	var ropts []remote.ConfigOption
	if opts.TLS != nil {
		srv, dial, client, err := tlsOptions(*opts.TLS, opts.Log)
		if err != nil {
			cli.Close()
			return nil, err
		}
		if err := checkPeersTLS(context.Background(), peerAddrs(cli, opts.Name), client); err != nil {
			cli.Close()
			return nil, err
		}
		sopts = append(sopts, srv...)
		// Replaces upstream's default, an insecure dial.
		ropts = append(ropts, remote.WithDialOptions(dial...))
	}
	ropts = append(ropts, remote.WithServerOptions(sopts...))
	if opts.AdvertisedHost != "" {
		ropts = append(ropts, remote.WithAdvertisedHost(net.JoinHostPort(opts.AdvertisedHost, strconv.Itoa(opts.BindPort))))
	}
	rc := remote.Configure(opts.BindHost, opts.BindPort, ropts...)
	cc := pcluster.Configure(opts.Name, provider, disthash.New(), rc,
		pcluster.WithKinds(opts.Kinds...), pcluster.WithRequestTimeout(5*time.Second))
	c := pcluster.New(k.System, cc)
	if err := startMember(c); err != nil {
		cli.Close()
		return nil, err
	}
	// The etcd provider names members "<cluster>@<actor system id>".
	n := &Node{opts: opts, C: c, etcd: cli, memberI: opts.Name + "@" + k.System.ID, done: make(chan struct{}),
		wd: &watch{w: opts.Watchdog}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if testHookJoined != nil {
		testHookJoined()
	}
	if err := n.register(); err != nil {
		// etcd went away between the join and the record (a cluster
		// started and stopped at once, an etcd restart): leave bounded,
		// or the start hangs for good and no signal ends it.
		leave(c, opts.Log)
		cli.Close()
		return nil, err
	}
	go n.loop()
	n.records = newRecordCache(n.opts.Name)
	n.agents = newAgentCache(n.opts.Name)
	go n.records.run(n.ctx, n.etcd)
	go n.agents.run(n.ctx, n.etcd)
	return n, nil
}

// peerAddrs are the member addresses in the node records of the cluster's
// live nodes (empty if etcd does not say).
func peerAddrs(cli *clientv3.Client, cluster string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/fangd/nodes/"+cluster+"/", clientv3.WithPrefix())
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && r.Address != "" {
			out = append(out, r.Address)
		}
	}
	return out
}

// startMember runs upstream's StartMember, which panics on a provider
// error, turning the panic into an error.
func startMember(c *pcluster.Cluster) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cluster: joining failed: %v", r)
		}
	}()
	c.StartMember()
	return nil
}

// MemberID is this node's member id (new on every start: upstream blocks a
// member that left by its id).
func (n *Node) MemberID() string { return n.memberI }

// Address is this node's member address (host:port of its gRPC listener).
func (n *Node) Address() string { return n.C.ActorSystem.Address() }

func (n *Node) recordKey(member string) string {
	return "/fangd/nodes/" + n.opts.Name + "/" + member
}

func (n *Node) record() Record {
	hosted := map[string]int{}
	if n.opts.Hosted != nil {
		ctx, cancel := context.WithTimeout(n.ctx, refreshEvery)
		hosted = n.opts.Hosted(ctx)
		cancel()
	}
	if a := n.A2A(); a != nil {
		hosted[KindA2ATask] = a.hosted()
	}
	return Record{MemberID: n.memberI, NodeName: n.opts.NodeName, HTTPURL: n.opts.HTTPURL,
		Address: n.Address(), Hosted: hosted}
}

func (n *Node) register() error {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	lease, err := n.etcd.Grant(ctx, recordTTL)
	if err != nil {
		return fmt.Errorf("cluster: etcd lease: %w", err)
	}
	n.lease = lease.ID
	r := n.record()
	r.Started = time.Now().UTC()
	b, _ := json.Marshal(r)
	if _, err := n.etcd.Put(ctx, n.recordKey(n.memberI), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("cluster: etcd put: %w", err)
	}
	n.mu.Lock()
	n.last = string(b)
	n.mu.Unlock()
	return nil
}

// loop keeps the record's lease alive, rewrites the record when what the
// node hosts changed, and notices when the node is no longer in its own
// topology (excluded after an etcd blip, upstream issue #1133).
func (n *Node) loop() {
	defer close(n.done)
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	started := time.Now()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, refreshEvery)
		if _, err := n.etcd.KeepAliveOnce(ctx, n.lease); err != nil {
			// The lease expired (etcd unreachable longer than its TTL):
			// a new one and a fresh record.
			n.opts.Log.Warn().Err(err).Msg("cluster node record lease lost; registering again")
			cancel()
			if err := n.register(); err != nil {
				n.opts.Log.Error().Err(err).Msg("cluster node record not written")
			}
			continue
		}
		n.mu.Lock()
		last := n.last
		n.mu.Unlock()
		r := n.record()
		var prev Record
		_ = json.Unmarshal([]byte(last), &prev)
		r.Started = prev.Started
		b, _ := json.Marshal(r)
		if string(b) != last {
			if _, err := n.etcd.Put(ctx, n.recordKey(n.memberI), string(b), clientv3.WithLease(n.lease)); err == nil {
				n.mu.Lock()
				n.last = string(b)
				n.mu.Unlock()
			}
		}
		cancel()
		in := n.C.MemberList.Members().ContainsID(n.memberI)
		n.mu.Lock()
		was := n.excluded
		n.excluded = !in && time.Since(started) > 2*refreshEvery
		now := n.excluded
		n.mu.Unlock()
		if now && !was {
			n.opts.Log.Error().Str("member_id", n.memberI).Msg("this node is no longer in the cluster topology (etcd blip?); its channels and webhook outboxes stop here; only a restart rejoins")
			// Its channels and outboxes go to the members that still
			// see each other.
			ch, wh, api, conf := n.ownedSets()
			for _, s := range []*ownedSet{ch, wh, api, conf} {
				if s != nil {
					s.Kick()
				}
			}
		}
		n.wd.observe(n.memberI, now, time.Now())
	}
}

// Member is one node as GET /api/cluster shows it.
type Member struct {
	NodeName string         `json:"node_name"`
	MemberID string         `json:"member_id"`
	Address  string         `json:"address"`
	HTTPURL  string         `json:"http_url,omitempty"`
	State    string         `json:"state"`
	Self     bool           `json:"self"`
	Kinds    []string       `json:"kinds"` // hostedKinds(Hosted)
	Hosted   map[string]int `json:"hosted"`
	Started  *time.Time     `json:"started_at,omitempty"`
	// AuditCheckpoint, on this node's own entry only: its chain compared
	// with the tip etcd recorded for it, at start (auditcp.go).
	AuditCheckpoint *AuditCheckpoint `json:"audit_checkpoint,omitempty"`
}

// hostedKinds are the kinds of h with at least one entity, sorted: a
// member's kinds, named as in the kinds table. Not Proto.Actor's member
// kinds (its own "prototopic"), which read as a fangd kind there.
func hostedKinds(h map[string]int) []string {
	out := []string{}
	for k, n := range h {
		if n > 0 {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Members merges this node's view of the topology (the cluster's member
// list) with the node records in etcd. State: "up" (in the topology with a
// live record), "joining" (in the topology, no record yet), "excluded"
// (alive with a record but not in this node's topology), "blocked" (left
// and blocked by id, upstream never lets that id back).
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	resp, err := n.etcd.Get(ctx, "/fangd/nodes/"+n.opts.Name+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd: %w", err)
	}
	recs := map[string]Record{}
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && r.MemberID != "" {
			recs[r.MemberID] = r
		}
	}
	blocked := n.C.GetBlockedMembers()
	out := []Member{}
	seen := map[string]bool{}
	for _, m := range n.C.MemberList.Members().Members() {
		seen[m.Id] = true
		mm := Member{MemberID: m.Id, Address: m.Address(), State: "joining", Self: m.Id == n.memberI,
			Kinds: []string{}, Hosted: map[string]int{}}
		if r, ok := recs[m.Id]; ok {
			mm.State, mm.NodeName, mm.HTTPURL, mm.Hosted, mm.Kinds = "up", r.NodeName, r.HTTPURL, r.Hosted, hostedKinds(r.Hosted)
			st := r.Started
			mm.Started = &st
		}
		out = append(out, mm)
	}
	for id, r := range recs {
		if seen[id] {
			continue
		}
		state := "excluded"
		if blocked.Contains(id) {
			state = "blocked"
		}
		st := r.Started
		out = append(out, Member{MemberID: id, NodeName: r.NodeName, Address: r.Address, HTTPURL: r.HTTPURL,
			State: state, Self: id == n.memberI, Kinds: hostedKinds(r.Hosted), Hosted: r.Hosted, Started: &st})
	}
	n.mu.Lock()
	acp := n.auditcp
	n.mu.Unlock()
	for i := range out {
		if out[i].Self && acp != nil {
			st := acp.State()
			out[i].AuditCheckpoint = &st
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeName != out[j].NodeName {
			return out[i].NodeName < out[j].NodeName
		}
		return out[i].MemberID < out[j].MemberID
	})
	return out, nil
}

// Excluded reports whether this node has dropped out of its own topology.
func (n *Node) Excluded() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.excluded
}

// Name is the cluster's name.
func (n *Node) Name() string { return n.opts.Name }

// NodeName is this node's name.
func (n *Node) NodeName() string { return n.opts.NodeName }

// Endpoints are the etcd endpoints.
func (n *Node) Endpoints() []string { return append([]string{}, n.opts.Endpoints...) }

// Stop leaves the cluster gracefully (upstream sleeps 2 s for ownership to
// move) and removes the node record. Upstream's Shutdown also shuts the
// actor system down, so it runs after fangd's root actors have stopped.
func (n *Node) Stop() {
	n.mu.Lock()
	ch, wh, ap, mc := n.channels, n.webhooks, n.approvals, n.mcp
	n.mu.Unlock()
	if ch != nil {
		ch.stop()
	}
	if mc != nil {
		mc.stop()
	}
	if wh != nil {
		wh.stop()
	}
	if ap != nil {
		ap.stop()
	}
	if a := n.A2A(); a != nil {
		a.stop()
	}
	n.mu.Lock()
	acp := n.auditcp
	n.mu.Unlock()
	if acp != nil {
		acp.stop()
	}
	n.cancel()
	<-n.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, _ = n.etcd.Revoke(ctx, n.lease)
	cancel()
	leave(n.C, n.opts.Log)
	n.etcd.Close()
}

// leaveDeadline bounds a graceful leave (upstream sleeps 2 s of it).
const leaveDeadline = 5 * time.Second

// testHookJoined, set by a test, runs between joining the cluster and
// writing the node record.
var testHookJoined func()

// leave runs upstream's graceful Shutdown, bounded. Upstream deregisters
// with no deadline: with etcd gone it would hang the daemon's stop (or
// a failed start) forever. The member's etcd key then expires with its
// lease (3 s).
func leave(c *pcluster.Cluster, log zerolog.Logger) {
	left := make(chan struct{})
	go func() {
		c.Shutdown(true)
		close(left)
	}()
	select {
	case <-left:
	case <-time.After(leaveDeadline):
		log.Warn().Dur("after", leaveDeadline).Msg("leaving the cluster did not finish (etcd unreachable?); stopping anyway")
	}
}

func recoverUnary(log zerolog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error().Str("method", info.FullMethod).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("cluster message handler panicked; call refused")
				err = status.Error(codes.Internal, "message refused")
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log zerolog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error().Str("method", info.FullMethod).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("cluster stream handler panicked; stream closed")
				err = status.Error(codes.Internal, "message refused")
			}
		}()
		return h(srv, ss)
	}
}

// NodeURL is the HTTP API base URL of the live member named nodeName, read
// from the node records in etcd, for routing a request to the node that
// hosts an entity. An error if no such member is up.
func (n *Node) NodeURL(ctx context.Context, nodeName string) (string, error) {
	if url, found, ok := n.cachedNodeURL(nodeName); ok {
		if !found {
			return "", fmt.Errorf("cluster: node %s is not up", nodeName)
		}
		return url, nil
	}
	ms, err := n.Members(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.NodeName == nodeName && m.State == "up" && m.HTTPURL != "" {
			return m.HTTPURL, nil
		}
	}
	return "", fmt.Errorf("cluster: node %s is not up", nodeName)
}
