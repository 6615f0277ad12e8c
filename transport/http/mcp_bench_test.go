package http

import (
	"io"
	nethttp "net/http"
	"strings"
	"testing"
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
