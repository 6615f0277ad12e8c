package http

import (
	"bytes"
	"context"
	"fmt"
	"io"
	nethttp "net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Throughput of POST /mcp to a built-in tool, plain JSON-RPC, 16 clients
// on loopback; every call is authenticated, rate-limit-checked, run and
// audited twice (the API request and tool_invoked), durably.
//
//	go test ./transport/http -run '^$' -bench MCPBuiltinCall -benchtime 5000x
func BenchmarkMCPBuiltinCall(b *testing.B) {
	s := newMCPServer(b, mcpSetup{})
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_list","arguments":{"path":"docs"}}}`
	client := &nethttp.Client{Transport: &nethttp.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := nethttp.NewRequest("POST", s.url+"/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testKey)
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || !strings.Contains(string(raw), "hello.txt") {
				b.Fatalf("%d %s", res.StatusCode, raw)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// CPU and allocations of one proxied tools/call through POST /mcp, as the
// Go SDK client sends it in the 2026-07-28 (session-less) protocol, to a
// Go SDK server on loopback: the HTTP chain, the SDK's server side, the
// exposer (audit entry included, durable), the connection to the peer.
// The request is captured once from a real SDK client and replayed over
// plain net/http, so the client's own cost stays small and fixed.
//
//	go test ./transport/http -run '^$' -bench MCPProxiedCall -benchmem -benchtime 3000x
func BenchmarkMCPProxiedCall(b *testing.B) {
	s := newMCPServer(b, mcpSetup{})
	s.addPeer(b, "peer", peer(b))
	benchProxied(b, s, "mcp_peer_shout", `"GO"`)
}

// BenchmarkMCPProxiedCallOverStdio is BenchmarkMCPProxiedCall with the
// mcp-gateway bench's backend, the npm server-everything over stdio: the
// backend's CPU is its own process's, so cpu-µs/op is fangd's side of a
// call plus the replaying client's.
//
//	go test ./transport/http -run '^$' -bench MCPProxiedCallOverStdio -benchmem -benchtime 3000x
func BenchmarkMCPProxiedCallOverStdio(b *testing.B) {
	s := newStdioEverything(b)
	benchProxied(b, s, "mcp_everything_echo", `"Echo: go"`)
}

// benchProxied captures the Go SDK client's call of tool (message "go")
// and replays it at 1 and 16 clients, every answer checked to hold want.
func benchProxied(b *testing.B, s *mcpServer, tool, want string) {
	rec := &captureCall{next: &hostRewriter{key: testKey}}
	cs, err := goClient(b, s.url, rec, "")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: map[string]any{"message": "go"}}); err != nil {
		b.Fatal(err)
	}
	cs.Close()
	if rec.body == nil {
		b.Fatal("no tools/call captured")
	}
	client := &nethttp.Client{Transport: &nethttp.Transport{MaxIdleConnsPerHost: 64}}
	call := func() {
		req, _ := nethttp.NewRequest("POST", s.url+"/mcp", bytes.NewReader(rec.body))
		req.Header = rec.header.Clone()
		req.Header.Set("Authorization", "Bearer "+testKey)
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(raw), want) {
			b.Fatalf("%d %s", res.StatusCode, raw)
		}
	}
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism((clients + 1) / 2) // GOMAXPROCS is 2 here
			c0, cpu0 := auditCommits(b, s.Server), processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
			b.StopTimer()
			// Synced audit commits per call: the fsyncs a call pays for.
			b.ReportMetric((auditCommits(b, s.Server)-c0)/float64(b.N), "commits/op")
			// The process's CPU time (user + system) per call: the whole
			// exchange (client, fangd, an in-process peer), and unlike
			// ns/op hardly moved by other processes on a shared machine.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

// captureCall keeps the headers and body of the first tools/call it sees.
type captureCall struct {
	next   nethttp.RoundTripper
	header nethttp.Header
	body   []byte
}

func (c *captureCall) RoundTrip(r *nethttp.Request) (*nethttp.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if c.body == nil && parsedMethod(body) == "tools/call" {
		c.header, c.body = r.Header.Clone(), body
	}
	return c.next.RoundTrip(r)
}

// parsedMethod is the method of a single JSON-RPC request body.
func parsedMethod(body []byte) string {
	rpc, _ := checkJSONRPC(body)
	return rpc.method
}

// auditCommits reads fangd_audit_commits_total.
func auditCommits(t testing.TB, s *Server) float64 {
	t.Helper()
	families, _ := s.deps.Kernel.Metrics.Gather()
	for _, f := range families {
		if f.GetName() == "fangd_audit_commits_total" {
			return f.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no fangd_audit_commits_total")
	return 0
}

// processCPU is the user + system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
