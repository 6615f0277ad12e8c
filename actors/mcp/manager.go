package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp/stdio"
	"github.com/fangd/fangd/store"
)

// Sandbox configures the stdio subprocess sandbox.
type Sandbox struct {
	// EnvAllowlist names the daemon variables every server inherits;
	// default stdio.DefaultAllowlist.
	EnvAllowlist []string
	// CPUSeconds and MemoryMB, when positive, are RLIMIT_CPU and RLIMIT_AS.
	CPUSeconds int
	MemoryMB   int
}

// Options configure the MCP client side.
type Options struct {
	// Home is the daemon's home: stdio servers run in Home/mcp/work/<name>.
	Home string
	// CatalogDir holds the catalog entries; default Home/mcp/catalog.
	CatalogDir string
	// Servers are the [[mcp_servers]] of config.toml.
	Servers []Spec
	// LoadServers re-reads config.toml's servers on reload; nil keeps
	// Servers.
	LoadServers func() ([]Spec, error)
	Sandbox     Sandbox
	// QuarantineChanged refuses calls to a tool whose definition changed
	// since it was pinned, until accepted.
	QuarantineChanged bool
	// FailureThreshold is how many consecutive failed calls force a
	// reconnect; default 3.
	FailureThreshold int
	// Backoff paces reconnects; default kernel.DefaultBackoff.
	Backoff kernel.Backoff
	// StopGrace is how long a stdio server gets to exit after its stdin is
	// closed before its process group is signalled; default 2 s.
	StopGrace time.Duration
	Policy    URLPolicy
	Events    EventSink
	Version   string
	// Clustered: the servers added through the API live in the cluster
	// (UseCluster, cluster.go), not in this node's store; config.toml's
	// servers stay this node's.
	Clustered bool
	// Environ looks up the daemon's environment for pass-through env
	// names; default os.LookupEnv.
	Environ func(string) (string, bool)
}

// env is what every MCP actor shares.
type env struct {
	k *kernel.Kernel
	// calls and latency are fangd_mcp_tool_calls_total{server,outcome}
	// and fangd_mcp_tool_call_duration_seconds{server}: every proxied
	// call, an agent's or POST /mcp's.
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// vault holds the servers' secrets: this node's vault, or in cluster
	// mode csec (etcd, sealed with the vault key).
	vault   secretStore
	csec    *clusterSecrets
	servers *store.Collection[Spec]
	pins    *store.Collection[pinState]
	audit   *audit.Log
	opts    Options
	log     zerolog.Logger
}

// Manager is the handle the HTTP layer, the MCP exposer and agents use.
type Manager struct {
	env     *env
	pid     *actor.PID
	catalog atomic.Pointer[Catalog]
	index   atomic.Pointer[toolIndex]

	oauth oauthFlows

	// clu is the joined cluster (cluster.go), nil without one; views
	// writes the states of the connections this node hosts to it.
	clu   atomic.Pointer[clusterHook]
	views viewPublisher

	mu        sync.Mutex
	cfgSpecs  []Spec
	listeners []chan struct{}
}

// Start seeds and loads the catalog, then spawns the root actor "mcp",
// which connects every configured server in the background.
func Start(k *kernel.Kernel, db *store.DB, vault *store.Vault, auditLog *audit.Log, opts Options) (*Manager, error) {
	if opts.CatalogDir == "" {
		opts.CatalogDir = filepath.Join(opts.Home, "mcp", "catalog")
	}
	if opts.Sandbox.EnvAllowlist == nil {
		opts.Sandbox.EnvAllowlist = stdio.DefaultAllowlist
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = 3
	}
	if opts.Backoff.MaxRetries == 0 {
		opts.Backoff = kernel.DefaultBackoff
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 2 * time.Second
	}
	seen := map[string]bool{}
	for i := range opts.Servers {
		if err := opts.Servers[i].Validate(); err != nil {
			return nil, fmt.Errorf("mcp_servers[%d]: %v", i, err)
		}
		if seen[opts.Servers[i].Name] {
			return nil, fmt.Errorf("mcp_servers: %s is defined twice", opts.Servers[i].Name)
		}
		seen[opts.Servers[i].Name] = true
	}
	if err := SeedCatalog(opts.CatalogDir); err != nil {
		return nil, fmt.Errorf("mcp catalog: %w", err)
	}
	cat, err := LoadCatalog(opts.CatalogDir)
	if err != nil {
		return nil, fmt.Errorf("mcp catalog %s: %w", opts.CatalogDir, err)
	}
	e := &env{k: k, audit: auditLog, opts: opts,
		servers: store.NewCollection[Spec](db, "mcp_servers"),
		pins:    store.NewCollection[pinState](db, "mcp_pins"),
		log:     k.Log.With().Str("component", "mcp").Logger()}
	e.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fangd_mcp_tool_calls_total",
		Help: "Calls of MCP servers' tools, by server and outcome (ok, tool_error, error, denied)."}, []string{"server", "outcome"})
	e.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fangd_mcp_tool_call_duration_seconds",
		Help:    "MCP tool call latency, by server.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"server"})
	if e.calls, err = kernel.RegisterMetric(k.Metrics, e.calls); err != nil {
		return nil, err
	}
	if e.latency, err = kernel.RegisterMetric(k.Metrics, e.latency); err != nil {
		return nil, err
	}
	if vault != nil {
		e.vault = vault
	}
	m := &Manager{env: e, cfgSpecs: opts.Servers}
	if opts.Clustered {
		e.csec = &clusterSecrets{vault: vault, m: m}
		e.vault = e.csec
	}
	m.catalog.Store(cat)
	m.index.Store(&toolIndex{byName: map[string]indexedTool{}})
	pid, err := k.SpawnRoot("mcp", func() actor.Actor { return &supervisor{env: e, m: m} })
	if err != nil {
		return nil, err
	}
	m.pid = pid
	// A manager restarted on the same kernel replaces the previous one's
	// collector (same descriptions), so scrapes read the live supervisor.
	k.Metrics.Unregister(serverCollector{m: m})
	if err := k.Metrics.Register(serverCollector{m: m}); err != nil {
		return nil, err
	}
	// Every stdio server runs with a cleared environment, in its own
	// process group and working directory; there is no switch to turn
	// that off, so the system is active while the supervisor runs.
	k.Security.Register("subprocess_sandbox", func() kernel.State {
		if _, ok := k.System.ProcessRegistry.Get(pid); ok {
			return kernel.StateActive
		}
		return kernel.StateInactive
	})
	return m, nil
}

func (m *Manager) configSpecs() []Spec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfgSpecs
}

func (m *Manager) setConfigSpecs(s []Spec) {
	m.mu.Lock()
	m.cfgSpecs = s
	m.mu.Unlock()
}

// Servers lists every configured server.
func (m *Manager) Servers(ctx context.Context) ([]ServerView, error) {
	return kernel.Ask[[]ServerView](ctx, m.env.k, m.pid, &listServers{})
}

// Server returns one server.
func (m *Manager) Server(ctx context.Context, name string) (ServerView, error) {
	return kernel.Ask[ServerView](ctx, m.env.k, m.pid, &getServer{name: name})
}

// Add installs from the catalog or adds a raw spec; the connection starts
// in the background.
func (m *Manager) Add(ctx context.Context, req AddRequest) (ServerView, error) {
	return kernel.Ask[ServerView](ctx, m.env.k, m.pid, &addServer{req: req})
}

// Update replaces a server's definition and reconnects it.
func (m *Manager) Update(ctx context.Context, name string, spec Spec) (ServerView, error) {
	return kernel.Ask[ServerView](ctx, m.env.k, m.pid, &updateServer{name: name, spec: spec})
}

// Remove stops a server and deletes its definition, pins and credentials.
func (m *Manager) Remove(ctx context.Context, name string) error {
	_, err := kernel.Ask[*removed](ctx, m.env.k, m.pid, &removeServer{name: name})
	return err
}

// Reload re-reads the catalog directory and config.toml.
func (m *Manager) Reload(ctx context.Context) (*ReloadReply, error) {
	return kernel.Ask[*ReloadReply](ctx, m.env.k, m.pid, &reload{})
}

// ReloadServers is Reload with config.toml's servers already read and
// checked by the caller (the daemon's SIGHUP reload, which validates the
// whole file first): added servers connect, removed ones stop, changed
// ones reconnect.
func (m *Manager) ReloadServers(ctx context.Context, servers []Spec) (*ReloadReply, error) {
	return kernel.Ask[*ReloadReply](ctx, m.env.k, m.pid, &reload{servers: servers, given: true})
}

func (m *Manager) child(ctx context.Context, name string) (*actor.PID, error) {
	return kernel.Ask[*actor.PID](ctx, m.env.k, m.pid, &childOf{name: name})
}

// Reconnect drops a server's session and connects again, waiting for the
// outcome (at most the server's timeout plus a margin).
func (m *Manager) Reconnect(ctx context.Context, name string) (*ReconnectReply, error) {
	v, err := m.Server(ctx, name)
	if err != nil {
		return nil, err
	}
	pid, err := m.child(ctx, name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := kernel.WithDefaultTimeout(ctx, time.Duration(v.TimeoutSecs)*time.Second+5*time.Second)
	defer cancel()
	return kernel.Ask[*ReconnectReply](ctx, m.env.k, pid, &reconnectNow{})
}

// AcceptTools re-pins changed tools (all when tools is empty).
func (m *Manager) AcceptTools(ctx context.Context, name string, tools []string) (*AcceptReply, error) {
	pid, err := m.child(ctx, name)
	if err != nil {
		return nil, err
	}
	return kernel.Ask[*AcceptReply](ctx, m.env.k, pid, &acceptTools{tools: tools})
}

// Catalog lists the catalog entries with their installed flag.
func (m *Manager) Catalog(ctx context.Context) ([]CatalogEntry, error) {
	r, err := kernel.Ask[*catalogReply](ctx, m.env.k, m.pid, &getCatalog{})
	if err != nil {
		return nil, err
	}
	out := r.catalog.All()
	for i := range out {
		out[i].Installed = r.installed[out[i].ID]
	}
	return out, nil
}

// CatalogEntry returns one entry.
func (m *Manager) CatalogEntry(ctx context.Context, id string) (CatalogEntry, error) {
	r, err := kernel.Ask[*catalogReply](ctx, m.env.k, m.pid, &getCatalog{})
	if err != nil {
		return CatalogEntry{}, err
	}
	e, ok := r.catalog.Get(id)
	if !ok {
		return CatalogEntry{}, kernel.Errorf(kernel.KindNotFound, "not_found", "MCP catalog entry '%s' not found", id)
	}
	e.Installed = r.installed[id]
	return e, nil
}

// Health reports every server's health and the aggregate.
func (m *Manager) Health(ctx context.Context) (*HealthReply, error) {
	r, err := kernel.Ask[[]HealthEntry](ctx, m.env.k, m.pid, &healthQuery{})
	if err != nil {
		return nil, err
	}
	return &HealthReply{Status: aggregate(r), Health: r, Count: len(r)}, nil
}

// ---- proxied tools ----

type indexedTool struct {
	Server string
	PID    *actor.PID
	// remote: the server runs on cluster node node ("" while none holds
	// it); calls go there (cluster.go). timeout is its timeout_secs.
	remote  bool
	node    string
	timeout int
	line    *callLine // the connection's published state, for calls without a hop
	Info    ToolInfo
}

// toolIndex is an immutable snapshot of the callable proxied tools, built
// by the supervisor whenever a connection reports, and read without a hop.
type toolIndex struct {
	byName map[string]indexedTool
	list   []indexedTool
}

func (m *Manager) setIndex(idx *toolIndex) {
	m.index.Store(idx)
	m.mu.Lock()
	for _, ch := range m.listeners {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	m.mu.Unlock()
}

// Tools returns the callable proxied tools of every connected server.
func (m *Manager) Tools() []ToolInfo {
	idx := m.index.Load()
	out := make([]ToolInfo, len(idx.list))
	for i, t := range idx.list {
		out[i] = t.Info
	}
	return out
}

// ToolHints reports the server of a proxied tool (routable: connected,
// or known from a server that is down) and its readOnlyHint.
func (m *Manager) ToolHints(name string) (server string, readOnlyHint, ok bool) {
	it, ok := m.index.Load().byName[name]
	return it.Server, it.Info.ReadOnlyHint, ok
}

// HasTool reports whether name is a callable proxied tool.
func (m *Manager) HasTool(name string) bool {
	_, ok := m.index.Load().byName[name]
	return ok
}

// ToolsChanged returns a channel that receives a signal (coalesced)
// whenever the proxied tool set may have changed.
func (m *Manager) ToolsChanged() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.listeners = append(m.listeners, ch)
	m.mu.Unlock()
	return ch
}

// Caller says who calls a tool, for the audit log.
type Caller struct {
	Via      string // "mcp_http" (POST /mcp), "agent"
	AgentID  string
	Actor    string // "api_key", "loopback", ...
	SourceIP string
}

// CallTool calls a proxied tool by its namespaced name and audits the
// call (tool_invoked; the arguments only as a hash). Agents call tools
// through it.
func (m *Manager) CallTool(ctx context.Context, caller Caller, name string, args json.RawMessage) (*sdk.CallToolResult, error) {
	start := time.Now()
	res, server, tool, err := m.callProxied(ctx, name, args)
	if aerr := AuditToolCall(ctx, m.env.audit, caller, server, tool, args, Outcome(res, err), time.Since(start)); aerr != nil && err == nil {
		// A call that cannot be recorded is not reported as done.
		return nil, aerr
	}
	return res, err
}

// callProxied routes a call to the server's actor and waits for the
// answer, without auditing.
func (m *Manager) callProxied(ctx context.Context, name string, args json.RawMessage) (res *sdk.CallToolResult, server, tool string, err error) {
	return m.callIndexed(ctx, name, args, true)
}

// callLocal is callProxied for a call another node sent: a tool this node
// does not host itself is refused, never sent on (two nodes with
// different views of the host cannot bounce a call between them).
func (m *Manager) callLocal(ctx context.Context, name string, args json.RawMessage) (*sdk.CallToolResult, string, string, error) {
	return m.callIndexed(ctx, name, args, false)
}

func (m *Manager) callIndexed(ctx context.Context, name string, args json.RawMessage, mayForward bool) (res *sdk.CallToolResult, server, tool string, err error) {
	it, ok := m.index.Load().byName[name]
	if !ok {
		return nil, "", name, kernel.Errorf(kernel.KindNotFound, "unknown_tool", "unknown tool %q", name)
	}
	if it.remote && !mayForward {
		return nil, it.Server, it.Info.OriginalName, kernel.Errorf(kernel.KindUnavailable, "host_unreachable",
			"MCP server %s is not hosted on this cluster node (it moved); try again", it.Server)
	}
	start := time.Now()
	defer func() {
		m.env.latency.WithLabelValues(it.Server).Observe(time.Since(start).Seconds())
		m.env.calls.WithLabelValues(it.Server, Outcome(res, err)).Inc()
	}()
	if it.remote {
		res, err := m.callRemote(ctx, it, args)
		return res, it.Server, it.Info.OriginalName, err
	}
	if t := it.line.load(); t != nil {
		res, err := it.line.call(ctx, t, it.Info.OriginalName, args)
		return res, it.Server, it.Info.OriginalName, err
	}
	// No session: the actor answers at once why.
	reply := make(chan callResult, 1)
	m.env.k.Root.Send(it.PID, &callTool{ctx: ctx, tool: it.Info.OriginalName, args: args, reply: reply})
	select {
	case r := <-reply:
		return r.res, it.Server, it.Info.OriginalName, r.err
	case <-ctx.Done():
		return nil, it.Server, it.Info.OriginalName, kernel.Unavailable("the caller gave up waiting for %s", name)
	}
}

// Outcome names how a tool call ended, for the audit log.
func Outcome(res *sdk.CallToolResult, err error) string {
	switch {
	case err != nil:
		if de := kernel.AsError(err); de != nil && (de.Kind == kernel.KindForbidden || de.Kind == kernel.KindNotFound) {
			return "denied"
		}
		return "error"
	case res != nil && res.IsError:
		return "tool_error"
	}
	return "ok"
}

// AuditToolCall records one tool call durably: who, which server and
// tool, the outcome and duration, and the SHA-256 of the arguments (never
// the arguments: they may hold anything).
func AuditToolCall(ctx context.Context, log *audit.Log, caller Caller, server, tool string, args json.RawMessage, outcome string, d time.Duration) error {
	if log == nil {
		return nil
	}
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), audit.AppendTimeout)
	defer cancel()
	_, err := log.Append(c, ToolCallEvent(caller, server, tool, args, outcome, d))
	return err
}

// ToolCallEvent is the tool_invoked entry AuditToolCall records.
func ToolCallEvent(caller Caller, server, tool string, args json.RawMessage, outcome string, d time.Duration) audit.Event {
	sum := sha256.Sum256(args)
	if server == "" {
		server = "-"
	}
	details := fmt.Sprintf("server=%s tool=%s outcome=%s duration_ms=%.3f args_sha256=%s via=%s",
		server, tool, outcome, float64(d.Microseconds())/1000, hex.EncodeToString(sum[:]), caller.Via)
	actorName := caller.Actor
	if actorName == "" {
		actorName = caller.Via
	}
	return audit.Event{EventType: "tool_invoked", AgentID: caller.AgentID, Details: details,
		Outcome: outcome, Actor: actorName, SourceIP: caller.SourceIP}
}

func schemaJSON(v any) json.RawMessage {
	if v == nil {
		return nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return raw
}
