package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/adapters"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/peer"
	metering "github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// shutdownDeadline bounds a graceful stop: in-flight requests, then actors.
const shutdownDeadline = 10 * time.Second

type serveCommand struct {
	listen, home, config string
	// cluster mode flags (config_cluster.go); they override [cluster].
	cluster, clusterName, nodeName string
}

func (c *serveCommand) Run(ctx context.Context) error {
	// SIGHUP reloads the config; caught from the start so that one sent
	// while the daemon starts is applied once it serves, not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var clusterEtcd []string
	var clusterEtcdTLS bool
	if c.cluster != "" {
		eps, secure, err := parseClusterURL(c.cluster)
		if err != nil {
			return &usageError{err.Error()}
		}
		clusterEtcd, clusterEtcdTLS = eps, secure
	}
	home, err := resolveHome(c.home)
	if err != nil {
		return err
	}
	cfgPath, explicit := c.config, c.config != ""
	if !explicit {
		cfgPath = filepath.Join(home, "config.toml")
	}
	load := func() (Config, error) {
		cfg, err := loadConfig(cfgPath, explicit)
		if err != nil {
			return cfg, err
		}
		cfg.applyEnv()
		if c.listen != "" {
			cfg.APIListen = c.listen
		}
		if clusterEtcd != nil {
			cfg.Cluster.Etcd = clusterEtcd
			cfg.Cluster.EtcdTLS = cfg.Cluster.EtcdTLS || clusterEtcdTLS
			cfg.Cluster.etcdPlainFlag = !clusterEtcdTLS
		}
		if c.clusterName != "" {
			cfg.Cluster.Name = c.clusterName
		}
		if c.nodeName != "" {
			cfg.Cluster.NodeName = c.nodeName
		}
		return cfg, cfg.validate()
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if err := startPprof(); err != nil {
		return err
	}
	d, err := startDaemon(home, cfg, os.Stderr)
	if err != nil {
		return err
	}
	d.reloads.load = load
	return d.wait(ctx, hup)
}

// daemon is one running fangd: its subsystems in start order.
type daemon struct {
	log      zerolog.Logger
	lock     *homeLock
	db       *store.DB
	kernel   *kernel.Kernel
	audit    *audit.Log
	bus      *comms.Bus
	channels *channel.Service
	vault    *store.Vault
	mcp      *mcp.Manager
	expose   *mcp.Exposer
	network  *peer.Network  // nil unless network_enabled
	cluster  *fcluster.Node // nil unless cluster mode
	// clusterCh is the cluster-wide channel store (read by the node
	// record's refresh goroutine, set once the node joined).
	clusterCh atomic.Pointer[fcluster.Channels]
	// clusterWh is the cluster-wide webhook store, the same way.
	clusterWh atomic.Pointer[fcluster.Webhooks]
	// clusterMCP is the cluster-wide MCP server store, the same way.
	clusterMCP atomic.Pointer[fcluster.MCPServers]
	webhooks   *webhook.Engine
	// clusterBudget is the cluster-wide budget ledger (cluster mode).
	clusterBudget *fcluster.Budget
	http          *fhttp.Server
	ln            net.Listener
	served        chan error
	// watchdogExit asks wait to stop the daemon: the cluster watchdog
	// found this node excluded for longer than its grace.
	watchdogExit chan struct{}
	// stop is closed by close, for the daemon's own goroutines.
	stop    chan struct{}
	reloads *reloadParts

	// auditLog is audit for spaceChanged, which the store may call from
	// any goroutine.
	auditLog atomic.Pointer[audit.Log]
}

func newLogger(cfg LogConfig, ring *logs.Ring, console *consoleSink) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.Level)
	zerolog.SetGlobalLevel(level)
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(zerolog.MultiLevelWriter(console, ring)).With().Timestamp().Logger()
}

// spaceChanged logs and audits the store going below its free-space
// reserve and back, once per change. It runs while a write is being
// admitted, so the audit append (which the reserve lets through) goes
// on its own goroutine.
func (d *daemon) spaceChanged(st store.SpaceState) {
	ev := audit.Event{EventType: "storage_low", Outcome: "denied",
		Details: fmt.Sprintf("free=%d reserve=%d: writes answer 507 insufficient_storage until space is freed", st.Free, st.Reserve)}
	if st.Low {
		d.log.Error().Uint64("free_bytes", st.Free).Uint64("reserve_bytes", st.Reserve).
			Msg("disk below the free-space reserve (min_free_disk_bytes): writes are refused with 507 until space is freed")
	} else {
		ev = audit.Event{EventType: "storage_recovered", Outcome: "ok", Details: fmt.Sprintf("free=%d reserve=%d: writes resumed", st.Free, st.Reserve)}
		d.log.Warn().Uint64("free_bytes", st.Free).Uint64("reserve_bytes", st.Reserve).Msg("free space is back above the reserve: writes resumed")
	}
	if a := d.auditLog.Load(); a != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := a.Append(ctx, ev); err != nil {
				d.log.Error().Err(err).Str("event", ev.EventType).Msg("storage condition not audited")
			}
		}()
	}
}

func startDaemon(home string, cfg Config, console io.Writer) (_ *daemon, err error) {
	begin := time.Now()
	ring := logs.NewRing(cfg.Log.RingSize)
	sink := newConsoleSink(console, cfg.Log.Format)
	d := &daemon{log: newLogger(cfg.Log, ring, sink), served: make(chan error, 1), watchdogExit: make(chan struct{}, 1), stop: make(chan struct{})}
	d.reloads = &reloadParts{cfg: cfg, console: sink, load: func() (Config, error) { return cfg, nil }}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.lock, err = lockHome(home); err != nil {
		return nil, err
	}
	opts := store.DefaultOptions(store.DataDir(home))
	opts.Logger = d.log.With().Str("component", "badger").Logger()
	opts.MinFreeBytes = uint64(cfg.MinFreeDiskBytes)
	opts.OnSpaceChange = d.spaceChanged
	if d.db, err = store.Open(opts); err != nil {
		return nil, err
	}
	vault, err := store.OpenVault(d.db, home)
	if err != nil {
		return nil, err
	}
	d.kernel = kernel.New(d.log)
	d.kernel.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreProbes(d.kernel)
	if err := registerBuildInfo(d.kernel.Metrics, readBuildInfo()); err != nil {
		return nil, err
	}
	anchor := cfg.Audit.AnchorPath
	if anchor == "" {
		anchor = audit.AnchorPath(home)
	}
	if d.audit, err = audit.Start(d.kernel, d.db, audit.Options{AnchorPath: anchor, OnMismatch: cfg.Audit.OnAnchorMismatch,
		RetainEntries: uint64(cfg.Audit.RetainEntries), RetainAge: time.Duration(cfg.Audit.RetainDays) * 24 * time.Hour, ArchiveDir: filepath.Join(home, "audit-archive")}); err != nil {
		var m *audit.Mismatch
		if errors.As(err, &m) {
			return nil, refuseMismatch(m, home)
		}
		return nil, err
	}
	// Records that do not decode are moved aside as supervisors load
	// them (store.EachOrQuarantine): logged and audited here.
	d.db.OnQuarantine(d.audit.ReportQuarantined)
	d.auditLog.Store(d.audit)
	cs, err := cfg.commsSettings()
	if err != nil {
		return nil, err
	}
	// The bus starts before the agent runtime and the ledger, so it is
	// stopped after them and hears their last events.
	bus, err := startBus(d.kernel, d.db, cfg)
	if err != nil {
		return nil, err
	}
	d.bus = bus
	// The daemon's one outbound network policy ([network_policy]
	// allow_hosts, reloaded on SIGHUP): webhooks, MCP, A2A, channel URLs
	// and untrusted LLM base URLs all dial through it.
	guard, err := ssrf.New(cfg.NetworkPolicy.AllowHosts)
	if err != nil {
		return nil, err
	}
	lopts := cfg.llmOptions()
	lopts.Metrics, lopts.Guard = d.kernel.Metrics, guard
	reg, err := llm.NewRegistry(lopts)
	if err != nil {
		return nil, err
	}
	meter, err := metering.Start(d.kernel, d.db, d.audit, metering.Options{Retention: time.Duration(cfg.Usage.RetentionDays) * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	// Approvals start before agents: an agent resuming a turn that waits
	// for a decision asks the approvals supervisor as it starts.
	approvals, err := approval.Start(d.kernel, d.db, vault, d.audit, approval.Options{Policy: cfg.Approval, Events: bus})
	if err != nil {
		return nil, err
	}
	tools := &agentToolbox{}
	catalog := &toolCatalog{box: tools}
	approvals.SetTools(catalog)
	agents, err := agent.Start(d.kernel, d.db, d.audit, reg, meter, agent.Options{Gate: approvals, Tools: tools, Directory: catalog, MaxAgents: cfg.Agents.MaxAgents,
		DefaultModel: cfg.DefaultModel.route()})
	if err != nil {
		return nil, err
	}
	d.reloads.approvals = approvals
	if d.channels, err = startChannels(d, cfg, vault, guard, agent.ChatAgents{Agents: agents}, approvalCommands{approvals}); err != nil {
		return nil, err
	}
	approvals.SetNotifier(approvalNotifier{d.channels})
	c, err := startComms(d.kernel, d.db, vault, d.audit, bus, agents, d.channels, guard, cfg, cs)
	if err != nil {
		return nil, err
	}
	d.vault = vault
	d.reloads.guard = c.guard
	if err := d.startNetwork(cfg, vault, agents, c.router, tools, cs.turnTimeout); err != nil {
		return nil, err
	}
	if err = d.startMCP(home, cfg, agents, bus, c, approvals); err != nil {
		return nil, err
	}
	// Agents call MCP tools; MCP starts after agents (its server side
	// needs them), so the toolbox is handed over now.
	tools.set(d.mcp)
	catalog.expose.Store(d.expose)
	go watchApprovalPatterns(approvals, d.mcp.ToolsChanged(), d.stop)
	hc := cfg.httpConfig()
	hc.TurnTimeout = cs.turnTimeout
	var a2aSvc *a2a.Service
	if cfg.A2A.a2aEnabled() {
		if a2aSvc, hc.A2APeers, err = startA2A(d.kernel, d.db, vault, cfg, c.guard, agents, c.webhooks, bus); err != nil {
			return nil, err
		}
		c.router.AddNodeSource(a2aNodes{a2aSvc})
		tools.setA2A(a2aSvc)
	}
	pairing, err := d.startPairing(cfg, vault, c.webhooks)
	if err != nil {
		return nil, err
	}
	authSvc, err := d.startAuth(cfg, c.guard)
	if err != nil {
		return nil, err
	}
	d.http, err = fhttp.New(hc, fhttp.Deps{Pairing: pairing, Auth: authSvc, Kernel: d.kernel, Audit: d.audit, Store: d.db, Logs: ring,
		Agents: agents, LLM: reg, Meter: meter, Channels: d.channels, Approvals: approvals,
		Bus: bus, Router: c.router, Webhooks: c.webhooks,
		Hooks: fhttp.HooksConfig{Token: cs.hookToken, Secret: cs.hookSecret, MaxPayload: cfg.WebhookTriggers.MaxPayloadBytes},
		MCP:   d.mcp, MCPServer: d.expose, A2A: a2aSvc, Network: d.network})
	if err != nil {
		return nil, err
	}
	if d.ln, err = net.Listen("tcp", cfg.APIListen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.APIListen, err)
	}
	if a2aSvc != nil && cfg.A2A.PublicURL == "" {
		a2aSvc.SetBaseURL(a2aBaseURL(d.ln))
	}
	// Cluster mode joins once the API address is known: the node record
	// in etcd carries the URL other nodes route requests to.
	if cfg.Cluster.enabled() {
		d.webhooks = c.webhooks
		if err := d.startCluster(home, cfg, agents, meter); err != nil {
			return nil, err
		}
		d.startClusterA2A(a2aSvc)
		d.http.SetCluster(d.cluster)
	}
	// Recorded and published before the first request is served, so that
	// daemon.started precedes every event a request can cause.
	d.record("daemon_started", "fangd "+version+" listening on "+d.ln.Addr().String())
	d.bus.Publish("daemon.started", "system", "", map[string]string{"version": version, "listen": d.ln.Addr().String()})
	go func() { d.served <- d.http.Serve(d.ln) }()
	d.log.Info().Str("listen", d.ln.Addr().String()).Str("home", home).Str("version", version).
		Dur("startup", time.Since(begin)).Bool("auth", cfg.APIKey != "").Msg("fangd is serving")
	return d, nil
}

// startMCP starts the MCP client side (one connection actor per server)
// and, unless switched off, fangd's own MCP server for POST /mcp.
func (d *daemon) startMCP(home string, cfg Config, agents *agent.Agents, bus *comms.Bus, c *commsParts, approvals *approval.Approvals) error {
	specs, err := cfg.mcpSpecs()
	if err != nil {
		return err
	}
	cfgPath := cfg.path
	d.mcp, err = mcp.Start(d.kernel, d.db, d.vault, d.audit, mcp.Options{
		Home:       home,
		CatalogDir: cfg.MCP.CatalogDir,
		Servers:    specs,
		LoadServers: func() ([]mcp.Spec, error) {
			if cfgPath == "" {
				return nil, nil
			}
			fresh, err := loadConfig(cfgPath, false)
			if err != nil {
				return nil, err
			}
			return fresh.mcpSpecs()
		},
		Sandbox: mcp.Sandbox{EnvAllowlist: cfg.MCP.Sandbox.EnvAllowlist,
			CPUSeconds: cfg.MCP.Sandbox.CPUSeconds, MemoryMB: cfg.MCP.Sandbox.MemoryMB},
		QuarantineChanged: cfg.MCP.QuarantineChangedTools,
		FailureThreshold:  cfg.MCP.FailureThreshold,
		// The same SSRF guard as webhooks: [network_policy] allow_hosts.
		Policy:  c.guard,
		Events:  bus,
		Version: version,
		// Servers added through the API live in etcd, each connection on
		// one node (startCluster hands the manager the store).
		Clustered: cfg.Cluster.enabled(),
	})
	if err != nil {
		return err
	}
	if !cfg.mcpServerEnabled() {
		return nil
	}
	workspace := cfg.MCPServer.WorkspaceDir
	if workspace == "" {
		workspace = filepath.Join(home, "workspace")
	}
	if err := os.MkdirAll(workspace, 0o700); err != nil {
		return fmt.Errorf("mcp_server.workspace_dir: %w", err)
	}
	ct := commsTools{router: c.router, bus: bus}
	d.expose = mcp.NewExposer(mcp.ExposerOptions{Workspace: workspace, Audit: d.audit, Manager: d.mcp,
		Agents: agentTools{agents}, Messenger: ct, Channels: ct, Events: ct, Approvals: approvals,
		Version: version, Log: d.log.With().Str("component", "mcp-server").Logger()})
	return nil
}

// startChannels starts the channel supervisor (which restarts the channels
// stored by earlier runs) and applies config.toml's [channels.*] tables. A
// table that does not validate is logged and skipped, like on reload, so
// one bad channel does not keep the daemon down.
func startChannels(d *daemon, cfg Config, vault *store.Vault, guard *ssrf.Guard, agents channel.Agents, commands channel.Commands) (*channel.Service, error) {
	path := cfg.path
	load := func() (map[string]map[string]any, error) {
		c, err := loadConfig(path, false)
		if err != nil {
			return nil, err
		}
		return c.Channels, nil
	}
	// Channel API URLs, gateways and homeservers go through the same
	// network policy as webhooks, MCP and A2A: [network_policy] allow_hosts.
	whatsapp.UseNetwork(guard)
	svc, err := channel.Start(channel.Options{Kernel: d.kernel, DB: d.db, Vault: vault,
		Builders: adapters.Builders(), LoadConfig: load, Agents: agents, Bus: channelBus{d.bus}, Commands: commands,
		Network: guard, MaxChannels: cfg.ChannelLimits.MaxChannels, Clustered: cfg.Cluster.enabled()})
	if err != nil {
		return nil, err
	}
	if len(cfg.Channels) > 0 && cfg.Cluster.enabled() {
		d.log.Warn().Int("tables", len(cfg.Channels)).Msg("config.toml channels are not applied in cluster mode; configure channels through the API (stored in etcd)")
	} else if len(cfg.Channels) > 0 {
		res, err := svc.Apply(context.Background(), cfg.Channels)
		if err != nil {
			return nil, err
		}
		for _, e := range res.Errors {
			d.log.Error().Str("problem", e).Msg("config.toml channel skipped")
		}
	}
	return svc, nil
}

// refuseMismatch is the start-up error for an audit anchor that does not
// match the stored chain: what differs, and what the operator can do.
func refuseMismatch(m *audit.Mismatch, home string) error {
	return fmt.Errorf(`%w
fangd refuses to start: the audit log does not match its anchor, so audit entries were removed or rewritten,
or the store lost acknowledged writes (a damaged, truncated or deleted file). Starting would hide it.
What you can do:
  - see what is wrong:     fangd audit verify --home %[2]s
  - restore the home from a backup taken before the damage (docs/architecture.md, "Damage and recovery")
  - accept the loss, recorded as an entry in the audit log, then start again:
                           fangd audit accept --home %[2]s --reason "why"
  - start anyway, with the audit trail reported broken until accepted:
                           [audit] on_anchor_mismatch = "degraded" in config.toml`, m, home)
}

// registerStoreProbes reports the security systems the store layer owns:
// both are built in and cannot be switched off.
func registerStoreProbes(k *kernel.Kernel) {
	active := func() kernel.State { return kernel.StateActive }
	// The vault wipes every plaintext buffer it is handed or hands out.
	k.Security.Register("secret_zeroization", active)
	// Every file path taken from a request goes through store/safepath.
	k.Security.Register("path_traversal_prevention", active)
}

func (d *daemon) record(eventType, details string) { d.recordOutcome(eventType, "", details) }

// wait serves until ctx ends (SIGINT/SIGTERM) or the listener fails,
// reloading the config on each signal from reloads (SIGHUP), then shuts
// down: stop accepting and finish in-flight requests, stop actors in
// reverse dependency order, close the store.
func (d *daemon) wait(ctx context.Context, reloads <-chan os.Signal) error {
	var serveErr error
	var exit error
serve:
	for {
		select {
		case <-ctx.Done():
			d.log.Info().Msg("shutting down")
			break serve
		case <-d.watchdogExit:
			d.log.Error().Int("exit_status", exitClusterExcluded).Msg("excluded from the cluster: shutting down for the supervisor to restart this node")
			exit = exitError(exitClusterExcluded)
			break serve
		case serveErr = <-d.served:
			d.log.Error().Err(serveErr).Msg("listener failed")
			break serve
		case <-reloads:
			d.log.Info().Str("config", d.reloads.cfg.path).Msg("SIGHUP: reloading the config")
			d.reload()
		}
	}
	deadline, cancel := context.WithTimeout(context.Background(), shutdownDeadline)
	defer cancel()
	if err := d.http.Shutdown(deadline); err != nil {
		d.log.Warn().Err(err).Msg("in-flight requests did not finish in time")
	}
	if d.expose != nil {
		d.expose.Close()
	}
	d.audit.Stop()
	d.record("daemon_stopped", "graceful shutdown")
	if d.bus != nil {
		pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = d.bus.PublishSync(pctx, "daemon.stopping", "system", "", nil)
		pcancel()
	}
	if late := d.kernel.Shutdown(deadline); len(late) > 0 {
		d.log.Warn().Strs("actors", late).Msg("actors did not stop in time")
	}
	d.kernel = nil
	d.stopCluster()
	d.close()
	d.log.Info().Msg("stopped")
	if serveErr != nil && !errors.Is(serveErr, net.ErrClosed) {
		return serveErr
	}
	return exit
}

// close releases whatever was started, in reverse order.
func (d *daemon) close() {
	if d.stop != nil {
		select {
		case <-d.stop:
		default:
			close(d.stop)
		}
	}
	if d.ln != nil {
		d.ln.Close()
	}
	if d.expose != nil {
		d.expose.Close()
	}
	if d.audit != nil {
		d.audit.Stop()
	}
	if d.kernel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownDeadline)
		d.kernel.Shutdown(ctx)
		cancel()
	}
	d.stopCluster()
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			d.log.Error().Err(err).Msg("closing the store")
		}
	}
	if d.lock != nil {
		d.lock.release()
	}
}
