package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// runMCPBuiltin drives POST /mcp on the running daemon with plain
// JSON-RPC tools/call requests to a built-in tool (file_list) from
// Opts.Connections concurrent clients for Opts.Duration. Every call is
// authenticated, dispatched through the SDK and audited twice, durably.
func runMCPBuiltin(ctx context.Context, env *Env) ([]Row, error) {
	d, err := env.Daemon(ctx)
	if err != nil {
		return nil, err
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_list","arguments":{}}}`)
	client := &fasthttp.Client{MaxConnsPerHost: env.Opts.Connections * 2}
	call := func() (time.Duration, error) {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.SetRequestURI(d.URL("/mcp"))
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+d.APIKey)
		req.SetBody(body)
		start := time.Now()
		if err := client.DoTimeout(req, res, 30*time.Second); err != nil {
			return 0, err
		}
		if res.StatusCode() != 200 || !json.Valid(res.Body()) || string(res.Body()[:min(8, len(res.Body()))]) != `{"jsonrp` {
			return 0, fmt.Errorf("POST /mcp answered %d: %.200s", res.StatusCode(), res.Body())
		}
		return time.Since(start), nil
	}
	if _, err := call(); err != nil {
		return nil, err
	}
	env.logf("POST /mcp tools/call file_list, %d clients, %s", env.Opts.Connections, env.Opts.Duration)
	deadline := time.Now().Add(env.Opts.Duration)
	more := func(int) bool { return time.Now().Before(deadline) }
	lat, elapsed, err := callLoops(ctx, env.Opts.Connections, more, func(int) func() (time.Duration, error) { return call })
	if err != nil {
		return nil, err
	}
	perSec := float64(len(lat)) / elapsed.Seconds()
	return []Row{
		{Metric: "POST /mcp tools/call (built-in) calls/s", Value: thousands(perSec), Target: ">= 2,000/s", Verdict: verdict(perSec >= 2000)},
		infoRow("POST /mcp tools/call p50 / p99", ms(pct(lat, 50))+" / "+ms(pct(lat, 99))),
	}, nil
}

// callLoops runs n clients at once: client i makes calls with mk(i) while
// more(k) holds before its k-th call and ctx lasts. It returns every
// latency, sorted, the wall time, and the first error, which stops all
// clients.
func callLoops(ctx context.Context, n int, more func(k int) bool, mk func(i int) func() (time.Duration, error)) ([]time.Duration, time.Duration, error) {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		fail atomic.Value
		wg   sync.WaitGroup
	)
	begin := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := mk(i)
			mine := make([]time.Duration, 0, 1024)
			for k := 0; more(k) && ctx.Err() == nil && fail.Load() == nil; k++ {
				l, err := call()
				if err != nil {
					fail.Store(err)
					break
				}
				mine = append(mine, l)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if err, _ := fail.Load().(error); err != nil {
		return nil, elapsed, err
	}
	slices.Sort(lat)
	return lat, elapsed, nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// runMCPProxy measures, in-process with the real MCP actors on a real
// store, against @modelcontextprotocol/server-everything over stdio
// (installed from npm on first use): the overhead fangd adds to a proxied
// echo (its p50 against an SDK client talking to its own copy of the
// server), and the time from kill -9 of the server until a call succeeds
// again, over 20 kills.
func runMCPProxy(ctx context.Context, env *Env) ([]Row, error) {
	peers, err := mcptest.Install()
	if err != nil {
		return nil, fmt.Errorf("npm peers: %w", err)
	}
	node, err := startInProc(env, "mcp-")
	if err != nil {
		return nil, err
	}
	defer node.close()
	vault, err := node.vault()
	if err != nil {
		return nil, err
	}
	al, err := node.audit(audit.Options{})
	if err != nil {
		return nil, err
	}
	m, err := mcp.Start(node.k, node.db, vault, al, mcp.Options{Home: node.home, Version: "bench"})
	if err != nil {
		return nil, err
	}
	cmd, args := peers.Everything("stdio")
	if _, err := m.Add(context.Background(), mcp.AddRequest{Spec: mcp.Spec{Name: "everything", Transport: mcp.Transport{Type: mcp.TransportStdio, Command: cmd, Args: args}}}); err != nil {
		return nil, err
	}
	raw := json.RawMessage(`{"message":"bench"}`)
	viaFangd := func() error {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := m.CallTool(c, mcp.Caller{Via: "bench"}, "mcp_everything_echo", raw)
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for viaFangd() != nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server-everything never became callable through fangd")
		}
		time.Sleep(20 * time.Millisecond)
	}
	direct, err := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "1"}, nil).
		Connect(ctx, &sdk.CommandTransport{Command: exec.Command(cmd, args...)}, nil)
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	viaSDK := func() error {
		_, err := direct.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "bench"}})
		return err
	}
	const n = 2000
	measure := func(f func() error) ([]time.Duration, error) {
		out := make([]time.Duration, 0, n)
		for range n {
			start := time.Now()
			if err := f(); err != nil {
				return nil, err
			}
			out = append(out, time.Since(start))
		}
		slices.Sort(out)
		return out, nil
	}
	env.logf("proxied echo: %d calls through fangd, %d straight through the SDK", n, n)
	// Interleave two halves so machine noise hits both alike.
	var f1, s1, f2, s2 []time.Duration
	if f1, err = measure(viaFangd); err == nil {
		if s1, err = measure(viaSDK); err == nil {
			if f2, err = measure(viaFangd); err == nil {
				s2, err = measure(viaSDK)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	fangdLat, sdkLat := slices.Sorted(slices.Values(append(f1, f2...))), slices.Sorted(slices.Values(append(s1, s2...)))
	overhead := pct(fangdLat, 50) - pct(sdkLat, 50)

	env.logf("recovery: 20 x kill -9 of the stdio server")
	var rec []time.Duration
	for range 20 {
		v, err := m.Server(context.Background(), "everything")
		if err != nil || v.Pid == 0 {
			return nil, fmt.Errorf("no server process: %+v %v", v, err)
		}
		start := time.Now()
		if err := syscall.Kill(v.Pid, syscall.SIGKILL); err != nil {
			return nil, err
		}
		for {
			cur, _ := m.Server(context.Background(), "everything")
			if cur.Pid != v.Pid {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for viaFangd() != nil {
			if time.Since(start) > 60*time.Second {
				return nil, fmt.Errorf("server-everything did not come back within 60 s")
			}
			time.Sleep(time.Millisecond)
		}
		rec = append(rec, time.Since(start))
	}
	slices.Sort(rec)
	return []Row{
		{Metric: "proxied echo overhead, p50 (fangd - direct SDK)", Value: ms(overhead),
			Target: "< 1 ms", Verdict: verdict(overhead < time.Millisecond)},
		infoRow("  proxied echo p50 through fangd / direct", ms(pct(fangdLat, 50))+" / "+ms(pct(sdkLat, 50))+" (fangd's includes one durable audit append)"),
		{Metric: "recovery after kill -9, p99 of 20", Value: ms(pct(rec, 99)) + " (p50 " + ms(pct(rec, 50)) + ")",
			Target: "<= 2 s", Verdict: verdict(pct(rec, 99) <= 2*time.Second)},
	}, nil
}
