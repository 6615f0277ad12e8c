package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	nethttp "net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// The MCP gateway scenario (issue 15): tools/call echo to one stdio
// @modelcontextprotocol/server-everything, measured three ways in the same
// run with the same Go client code (the official SDK's ClientSession):
//
//   - stdio: the client talks to its own server-everything over stdio.
//     This is the floor: no gateway at all.
//   - fangd: POST /mcp of a fangd that has server-everything connected as
//     a stdio MCP server (one process, shared by every session, audited).
//   - mcp-proxy: the npm gateway (pinned in bench/npm) in front of its own
//     server-everything (it too keeps one stdio child for all sessions).
//
// Each system gets N clients (1, 16, 64), each client one session opened
// before the clock starts (stdio: N concurrent callers on the one stdio
// session, since a stdio server is a session), and each client calls in a
// loop for -mcp-duration. Rounds alternate stdio, fangd, mcp-proxy so that
// machine noise hits all three alike; the rows give medians over rounds and
// the range of the per-round ratios.

// mcpSystem is one way to reach server-everything's echo.
type mcpSystem struct {
	name string
	// pid is the gateway's own process, whose CPU time per call the rows
	// show (0: none, the floor has no gateway).
	pid int
	// open returns n sessions (stdio: one, used by all n callers).
	open func(ctx context.Context, n int) ([]*sdk.ClientSession, error)
}

// gwRound is one timed run of one system at one concurrency.
type gwRound struct {
	calls   int
	elapsed time.Duration
	lat     []time.Duration // sorted
	cpu     time.Duration   // the gateway process's CPU time over the run
}

func (r gwRound) perSec() float64 { return float64(r.calls) / r.elapsed.Seconds() }

// cpuPerCall is the gateway's CPU time per call: on a machine shared with
// other work, throughput and latency follow the neighbours, while the CPU
// a call costs moves much less.
func (r gwRound) cpuPerCall() time.Duration {
	if r.calls == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.calls)
}

// processCPU is pid's user+system CPU time so far (0 for pid 0 or when
// /proc cannot tell).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15 (clock ticks).
	rest := string(raw)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSec = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSec
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func runMCPGateway(ctx context.Context, env *Env) ([]Row, error) {
	peers, err := mcptest.Install()
	if err != nil {
		return nil, fmt.Errorf("npm test peers: %w", err)
	}
	gw, err := mcptest.InstallFrom(benchNPMDir())
	if err != nil {
		return nil, fmt.Errorf("npm bench peers (mcp-proxy): %w", err)
	}
	everyCmd, everyArgs := peers.Everything("stdio")

	// fangd with server-everything as an stdio MCP server; echo needs no
	// human (the default gate holds tools without a read-only hint).
	home, err := env.tempDir("fangd-mcpgw-")
	if err != nil {
		return nil, err
	}
	extra := fmt.Sprintf(`
[[mcp_servers]]
name = "everything"
transport = "stdio"
command = %q
args = [%q, "stdio"]

[approval]
auto_approve = ["mcp_everything_echo"]
`, everyCmd, everyArgs[0])
	var denv []string
	prof, err := newDaemonProfiler(env, env.Opts.DaemonPprof)
	if err != nil {
		return nil, err
	}
	if prof != nil {
		denv = prof.pprofEnv()
	} else if env.Opts.DaemonPprof != "" {
		denv = append(denv, "FANGD_PPROF_LISTEN="+env.Opts.DaemonPprof)
	}
	d, err := StartDaemonWith(ctx, env.Opts.Fangd, home, extra, denv)
	if d != nil {
		env.onClose(func() {
			if err := d.Stop(); err != nil {
				env.logf("stopping the MCP gateway daemon: %v", err)
			}
		})
	}
	if err != nil {
		return nil, err
	}

	proxyURL, proxyPid, err := startMCPProxy(ctx, env, gw, everyCmd, everyArgs)
	if err != nil {
		return nil, err
	}

	systems := []mcpSystem{
		{name: "stdio", open: func(ctx context.Context, n int) ([]*sdk.ClientSession, error) {
			s, err := newMCPClient().Connect(ctx, &sdk.CommandTransport{Command: exec.Command(everyCmd, everyArgs...)}, nil)
			if err != nil {
				return nil, err
			}
			return []*sdk.ClientSession{s}, nil
		}},
		{name: "fangd", pid: d.cmd.Process.Pid, open: httpSessions(d.URL("/mcp"), "Bearer "+d.APIKey)},
		{name: "mcp-proxy", pid: proxyPid, open: httpSessions(proxyURL, "")},
	}
	// The tool's name differs: fangd prefixes its servers' tools.
	tool := map[string]string{"stdio": "echo", "fangd": "mcp_everything_echo", "mcp-proxy": "echo"}

	var rows []Row
	for _, n := range env.Opts.MCPClients {
		sessions := map[string][]*sdk.ClientSession{}
		closeAll := func() {
			for _, ss := range sessions {
				for _, s := range ss {
					s.Close()
				}
			}
		}
		for _, sys := range systems {
			c, cancel := context.WithTimeout(ctx, 120*time.Second)
			ss, err := sys.open(c, n)
			cancel()
			if ss != nil {
				sessions[sys.name] = ss
			}
			if err != nil {
				closeAll()
				return rows, fmt.Errorf("%s: opening %d session(s): %w", sys.name, n, err)
			}
			// Warm up every session (and the gateways' paths to the server).
			if _, err := gwRun(ctx, ss, n, tool[sys.name], 0, 20); err != nil {
				closeAll()
				return rows, fmt.Errorf("%s: warm-up: %w", sys.name, err)
			}
		}
		res := map[string][]gwRound{}
		for round := range env.Opts.MCPRounds {
			for _, sys := range systems {
				wait := func() {}
				if sys.name == "fangd" {
					wait = prof.start(ctx, fmt.Sprintf("mcpgw-fangd-c%d-r%d", n, round+1), env.Opts.MCPDuration)
				}
				cpu0 := processCPU(sys.pid)
				r, err := gwRun(ctx, sessions[sys.name], n, tool[sys.name], env.Opts.MCPDuration, 0)
				r.cpu = processCPU(sys.pid) - cpu0
				wait()
				if err != nil {
					closeAll()
					return rows, fmt.Errorf("%s, %d clients, round %d: %w", sys.name, n, round+1, err)
				}
				env.logf("mcp gateway %d clients round %d: %s %s calls/s, p50 %s, gateway CPU %s per call", n, round+1, sys.name, thousands(r.perSec()), ms(pct(r.lat, 50)), us(r.cpuPerCall()))
				res[sys.name] = append(res[sys.name], r)
			}
		}
		closeAll()
		rows = append(rows, gwRows(n, res)...)
	}
	return rows, nil
}

// gwRows turns one concurrency's rounds into rows: each system's median
// calls/s and p50/p99, then fangd's ratios to the others with ranges.
func gwRows(n int, res map[string][]gwRound) []Row {
	med := func(name string, f func(gwRound) float64) float64 {
		var v []float64
		for _, r := range res[name] {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rate := func(r gwRound) float64 { return r.perSec() }
	p50 := func(r gwRound) float64 { return float64(pct(r.lat, 50)) }
	p99 := func(r gwRound) float64 { return float64(pct(r.lat, 99)) }
	ratio := func(a, b string, f func(gwRound) float64) (float64, float64, float64) {
		var v []float64
		for i := range res[a] {
			v = append(v, f(res[a][i])/f(res[b][i]))
		}
		slices.Sort(v)
		return v[len(v)/2], v[0], v[len(v)-1]
	}
	var rows []Row
	for _, sys := range []string{"stdio", "fangd", "mcp-proxy"} {
		rows = append(rows, infoRow(fmt.Sprintf("MCP echo, %d client(s): %s calls/s (p50 / p99)", n, sys),
			fmt.Sprintf("%s (%s / %s)", thousands(med(sys, rate)), ms(time.Duration(med(sys, p50))), ms(time.Duration(med(sys, p99))))))
	}
	cpu := func(r gwRound) float64 { return float64(r.cpuPerCall()) }
	for _, sys := range []string{"fangd", "mcp-proxy"} {
		rows = append(rows, infoRow(fmt.Sprintf("  %s process CPU per call, %d client(s)", sys, n), us(time.Duration(med(sys, cpu)))))
	}
	fp, fl, fh := ratio("fangd", "mcp-proxy", rate)
	rounds := len(res["fangd"])
	switch n {
	case 1:
		rows = append(rows, Row{Metric: "  fangd / mcp-proxy calls/s, 1 client", Value: fmt.Sprintf("%.2fx (median of %d rounds, %.2f-%.2fx)", fp, rounds, fl, fh),
			Target: ">= 1.5x", Verdict: verdict(fp >= 1.5)})
		// The added latency: each round's fangd p50 minus the same round's floor p50.
		var add []time.Duration
		for i := range res["fangd"] {
			add = append(add, pct(res["fangd"][i].lat, 50)-pct(res["stdio"][i].lat, 50))
		}
		slices.Sort(add)
		rows = append(rows, Row{Metric: "  fangd p50 added over the stdio floor, 1 client", Value: fmt.Sprintf("%s (%s - %s)", ms(add[len(add)/2]), ms(add[0]), ms(add[len(add)-1])),
			Target: "<= 0.30 ms", Verdict: verdict(add[len(add)/2] <= 300*time.Microsecond)})
	case 64:
		rows = append(rows, Row{Metric: "  fangd / mcp-proxy calls/s, 64 clients", Value: fmt.Sprintf("%.2fx (median of %d rounds, %.2f-%.2fx)", fp, rounds, fl, fh),
			Target: ">= 2x", Verdict: verdict(fp >= 2)})
		sp, sl, sh := ratio("fangd", "stdio", rate)
		rows = append(rows, Row{Metric: "  fangd / stdio floor calls/s, 64 clients", Value: fmt.Sprintf("%.2fx (%.2f-%.2fx)", sp, sl, sh),
			Target: ">= 0.3x", Verdict: verdict(sp >= 0.3)})
	default:
		rows = append(rows, infoRow(fmt.Sprintf("  fangd / mcp-proxy calls/s, %d clients", n), fmt.Sprintf("%.2fx (median of %d rounds, %.2f-%.2fx)", fp, rounds, fl, fh)))
	}
	pp, pl, ph := ratio("fangd", "mcp-proxy", p50)
	rows = append(rows, infoRow(fmt.Sprintf("  fangd / mcp-proxy p50, %d client(s)", n), fmt.Sprintf("%.2fx (%.2f-%.2fx)", pp, pl, ph)))
	return rows
}

// gwRun makes n callers call tool in a loop, caller i on session
// i % len(ss), for d (or, when d is 0, count calls each). Every answer must
// be the echo of the message sent.
func gwRun(ctx context.Context, ss []*sdk.ClientSession, n int, tool string, d time.Duration, count int) (gwRound, error) {
	stop := time.Now().Add(d)
	more := func(k int) bool { return d > 0 && time.Now().Before(stop) || d == 0 && k < count }
	lat, elapsed, err := callLoops(ctx, n, more, func(i int) func() (time.Duration, error) {
		s := ss[i%len(ss)]
		msg := "bench " + strconv.Itoa(i)
		args := map[string]any{"message": msg}
		return func() (time.Duration, error) {
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			r, err := s.CallTool(c, &sdk.CallToolParams{Name: tool, Arguments: args})
			l := time.Since(start)
			if err == nil && (r.IsError || len(r.Content) == 0) {
				err = fmt.Errorf("tool error: %+v", r.Content)
			}
			if err == nil {
				if t, ok := r.Content[0].(*sdk.TextContent); !ok || !strings.Contains(t.Text, msg) {
					err = fmt.Errorf("echo answered %+v", r.Content[0])
				}
			}
			return l, err
		}
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return gwRound{}, err
	}
	return gwRound{calls: len(lat), elapsed: elapsed, lat: lat}, nil
}

func newMCPClient() *sdk.Client {
	return sdk.NewClient(&sdk.Implementation{Name: "fangd-bench", Version: "1"}, nil)
}

// httpSessions opens n streamable HTTP sessions to url, each with its own
// keep-alive connection (as n separate clients would have) and no
// standalone GET stream (only request/response is measured; the same for
// both gateways). auth, when set, is sent as Authorization.
func httpSessions(url, auth string) func(ctx context.Context, n int) ([]*sdk.ClientSession, error) {
	return func(ctx context.Context, n int) ([]*sdk.ClientSession, error) {
		var out []*sdk.ClientSession
		for range n {
			hc := &nethttp.Client{Transport: &authTransport{auth: auth, next: &nethttp.Transport{
				// Loopback only: no proxy from the environment.
				Proxy: nil, MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			}}}
			s, err := newMCPClient().Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
			if err != nil {
				for _, s := range out {
					s.Close()
				}
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
}

type authTransport struct {
	auth string
	next nethttp.RoundTripper
}

func (t *authTransport) RoundTrip(r *nethttp.Request) (*nethttp.Response, error) {
	if !isLoopbackHost(r.URL.Hostname()) {
		return nil, fmt.Errorf("bench: refusing non-loopback URL %s", r.URL)
	}
	if t.auth != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", t.auth)
	}
	return t.next.RoundTrip(r)
}

func isLoopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// benchNPMDir is bench/npm next to this file (package.json and its lock).
func benchNPMDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "npm")
}

// startMCPProxy starts the npm mcp-proxy on a free loopback port in front
// of server-everything over stdio, streamable HTTP only, and returns its
// /mcp URL once it answers.
func startMCPProxy(ctx context.Context, env *Env, gw mcptest.Peers, cmd string, args []string) (string, int, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return "", 0, err
	}
	host, port, _ := net.SplitHostPort(addr)
	bin := filepath.Join(gw.Modules, "mcp-proxy", "dist", "bin", "mcp-proxy.mjs")
	pargs := append([]string{bin, "--host", host, "--port", port, "--server", "stream", "--", cmd}, args...)
	p := exec.Command(gw.Node, pargs...)
	p.Env = cleanEnv()
	logs := &tailBuffer{max: 16 << 10}
	p.Stdout, p.Stderr = logs, logs
	p.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.Start(); err != nil {
		return "", 0, fmt.Errorf("start mcp-proxy: %w", err)
	}
	env.onClose(func() {
		// Its whole group: node and the server-everything it spawned.
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		_ = p.Wait()
	})
	url := "http://" + addr + "/mcp"
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			// Up: one session proves it reaches the server.
			cc, cancel := context.WithTimeout(ctx, 30*time.Second)
			ss, err := httpSessions(url, "")(cc, 1)
			cancel()
			if err == nil {
				ss[0].Close()
				return url, p.Process.Pid, nil
			}
			if time.Now().After(deadline) {
				return "", 0, fmt.Errorf("mcp-proxy: %w; its output: %s", err, logs.String())
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", 0, errors.Join(ctx.Err(), fmt.Errorf("mcp-proxy did not listen within 60 s: %s", logs.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
