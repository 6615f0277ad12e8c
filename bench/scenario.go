package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// scenarios is the one table of everything `make bench` measures, in the
// order it runs. To add a scenario, write one file with a func(ctx, *Env)
// ([]Row, error) and add a line here. HTTP read scenarios are usually one
// call to loadRows (see health.go).
var scenarios = []Scenario{
	{Name: "startup", About: "start-to-healthy time and idle RSS of bin/fangd serve", Run: runStartup},
	{Name: "health", About: "GET /api/health against the ceiling", Run: runHealth},
	{Name: "audit-recent", About: "authenticated actor-backed GET /api/audit/recent?limit=20", Run: runAuditRecent},
	{Name: "loaded-rss", About: "daemon RSS after all HTTP load", Run: runLoadedRSS},
	{Name: "audit-append", About: "durable audit appends: group commit vs one fsync per append", Run: runAuditAppend},
	{Name: "ledger", About: "usage ledger: in-process reserve+settle rate; usage reads with 1M events stored", Run: runLedger},
	{Name: "a2a", About: "A2A JSON-RPC SendMessage round trips to a local agent (zero-latency fake LLM); heap per finished task kept", Run: runA2A},
	{Name: "comms-bus", About: "event bus: publish rate with 10 subscribers; RSS with 1,000 subscribers", Run: runCommsBus},
	{Name: "webhooks", About: "signed durable webhook deliveries across 50 endpoints", Run: runWebhookDeliveries},
	{Name: "channel-reply", About: "inbound -> agent -> reply overhead at -reply-rate (500) msg/s over 100 Telegram channels", Run: runChannelReply},
	{Name: "approvals", About: "10,000 pending approvals (RSS) and the approve round trip", Run: runApprovals},
	{Name: "channels-idle", About: "1,000 configured idle Telegram channels: start to all connected, RSS", Run: runChannelsIdle},
	{Name: "mcp-builtin", About: "POST /mcp tools/call to a built-in tool, plain JSON-RPC, concurrent clients", Run: runMCPBuiltin},
	{Name: "mcp-gateway", About: "tools/call echo at 1/16/64 clients: stdio floor vs fangd POST /mcp vs npm mcp-proxy, same run", Run: runMCPGateway},
	{Name: "ofp", About: "peer network between two daemons: cross-node comms/send overhead, requests/s over one link, kill -9 and restart seen by the peer (plaintext+HMAC and TLS links)", Run: runOFP},
	{Name: "cluster-failover", About: "cluster mode: kill -9 of a Telegram channel's host among 3 nodes on an embedded etcd, until another node runs it (10 runs)", Run: runClusterFailover},
	{Name: "cluster-budget", About: "cluster mode: one daily limit, 192 chat calls spread over 3 nodes on an embedded etcd: admitted, spend vs limit, overspend, reservation latency", Run: runClusterBudget},
	{Name: "cluster-route", About: "cluster mode: GET /api/channels/{name} and GET /api/agents/{id} on the host vs through another node that forwards it (3 nodes, embedded etcd), p50/p99", Run: runClusterRoute},
	{Name: "mcp-proxy", About: "proxied MCP echo overhead and recovery after kill -9 (server-everything over stdio, in-process)", Run: runMCPProxy},
}

// Scenario is one entry of the table above.
type Scenario struct {
	Name  string
	About string
	Run   func(ctx context.Context, env *Env) ([]Row, error)
}

// Verdict says whether a row met its target.
type Verdict string

const (
	Pass  Verdict = "pass"
	Fail  Verdict = "FAIL"
	Info  Verdict = "-" // no target: context for the other rows
	Error Verdict = "ERROR"
)

// Row is one line of the result table.
type Row struct {
	Metric, Value, Target string
	Verdict               Verdict
}

func infoRow(metric, value string) Row {
	return Row{Metric: metric, Value: value, Target: "-", Verdict: Info}
}

func verdict(ok bool) Verdict {
	if ok {
		return Pass
	}
	return Fail
}

// Options are the harness's flags.
type Options struct {
	Fangd        string        // path to the fangd binary
	Duration     time.Duration // each measured wrk run
	Warmup       time.Duration // discarded wrk run before the first measured one of each URL
	Rounds       int           // route runs per HTTP scenario, each between two ceiling runs
	Connections  int
	AppendFor    time.Duration // each audit-append run
	AppendRounds int           // audit-append: alternating rounds of both modes
	Writers      int
	Starts       int           // fresh starts sampled for start-to-healthy
	TempDir      string        // parent of every temp home and store
	ReplyFor     time.Duration // the measured part of channel-reply
	ReplyRate    int           // channel-reply's messages per second, all channels together
	LLMLatency   time.Duration // the fake LLM's fixed answer time in channel-reply
	MCPDuration  time.Duration // each timed run of the MCP gateway scenario
	MCPRounds    int           // alternating rounds per concurrency in the MCP gateway scenario
	MCPClients   []int         // the MCP gateway scenario's concurrencies (1, 16, 64)
	DaemonPprof  string        // loopback address for the measured daemon's pprof (FANGD_PPROF_LISTEN)
	ProfileDir   string        // where daemon profiles of the measured runs go (-profile; empty: none)
}

// Env is what scenarios share: the options, one running daemon and the
// ceiling server, both started on first use, and a stack of cleanups that
// Close runs even when a scenario failed.
type Env struct {
	Opts Options
	Log  io.Writer

	mu       sync.Mutex
	cleanups []func()
	daemon   *Daemon
	// ceiling is the ceiling server's address once started; lastCeiling is
	// the last wrk run if it was a ceiling run (see ceiling.go).
	ceiling     string
	lastCeiling *WrkResult
	warmed      map[string]bool // URLs that had their warm-up run
	prof        *daemonProfiler // the shared daemon's, with -profile
}

// onClose registers f to run at Close, last registered first.
func (e *Env) onClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, f)
}

// Close stops everything the scenarios started.
func (e *Env) Close() {
	e.mu.Lock()
	fs := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (e *Env) logf(format string, a ...any) { fmt.Fprintf(e.Log, "bench: "+format+"\n", a...) }

// tempDir makes a directory under Opts.TempDir that Close removes.
func (e *Env) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp(e.Opts.TempDir, pattern)
	if err != nil {
		return "", err
	}
	e.onClose(func() { os.RemoveAll(dir) })
	return dir, nil
}

// Daemon returns the shared running fangd, starting it on first use.
func (e *Env) Daemon(ctx context.Context) (*Daemon, error) {
	e.mu.Lock()
	d := e.daemon
	e.mu.Unlock()
	if d != nil {
		return d, nil
	}
	d, err := e.startDaemon(ctx)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.daemon = d
	e.mu.Unlock()
	return d, nil
}

// startDaemon starts a fresh fangd on an empty temp home; Close stops it.
func (e *Env) startDaemon(ctx context.Context) (*Daemon, error) {
	home, err := e.tempDir("fangd-home-")
	if err != nil {
		return nil, err
	}
	prof, err := newDaemonProfiler(e, "")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.prof = prof
	e.mu.Unlock()
	d, err := StartDaemonWith(ctx, e.Opts.Fangd, home, "", prof.pprofEnv())
	if d != nil {
		e.onClose(func() {
			if err := d.Stop(); err != nil {
				e.logf("stopping fangd: %v", err)
			}
		})
	}
	return d, err
}
