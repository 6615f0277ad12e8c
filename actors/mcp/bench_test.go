package mcp

import (
	"context"
	"encoding/json"
	"os/exec"
	"sort"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// Proxied call overhead: the same echo through fangd (actor hop, routing,
// audit entry) and straight through an SDK client to its own process.
// The difference of the two ns/op is what fangd adds.
//
//	go test ./actors/mcp -run '^$' -bench ProxiedEcho -benchtime 3000x
func BenchmarkProxiedEchoThroughFangd(b *testing.B) {
	h := everythingHarness(b)
	raw := json.RawMessage(`{"message":"bench"}`)
	benchP50(b, func(ctx context.Context) error {
		_, err := h.m.CallTool(ctx, Caller{Via: "bench"}, "mcp_everything_echo", raw)
		return err
	})
}

// everythingHarness is a manager with server-everything (from npm) added
// over stdio, once its echo tool is listed (or 30 s have passed).
func everythingHarness(b *testing.B) *harness {
	peers := mcptest.NPM(b)
	h := newHarness(b, b.TempDir(), nil)
	cmd, args := peers.Everything("stdio")
	if _, err := h.m.Add(context.Background(), AddRequest{Spec: Spec{Name: "everything", Transport: Transport{Type: TransportStdio, Command: cmd, Args: args}}}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !h.m.HasTool("mcp_everything_echo") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return h
}

// benchP50 times call b.N times and reports the median.
func benchP50(b *testing.B, call func(context.Context) error) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportP50(b, lat)
}

func BenchmarkProxiedEchoDirectSDK(b *testing.B) {
	peers := mcptest.NPM(b)
	cmd, args := peers.Everything("stdio")
	c := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "1"}, nil)
	s, err := c.Connect(context.Background(), &sdk.CommandTransport{Command: exec.Command(cmd, args...)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchP50(b, func(ctx context.Context) error {
		_, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "bench"}})
		return err
	})
}

// Recovery: kill the stdio server, time until a call succeeds again.
//
//	go test ./actors/mcp -run '^$' -bench Recovery -benchtime 20x
func BenchmarkRecoveryAfterKill(b *testing.B) {
	h := everythingHarness(b)
	raw := json.RawMessage(`{"message":"x"}`)
	ctx := context.Background()
	call := func() bool {
		_, err := h.m.CallTool(ctx, Caller{Via: "bench"}, "mcp_everything_echo", raw)
		return err == nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for !call() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		v, err := h.m.Server(context.Background(), "everything")
		if err != nil || v.Pid == 0 {
			b.Fatalf("no process: %+v %v", v, err)
		}
		start := time.Now()
		syscall.Kill(v.Pid, syscall.SIGKILL)
		// Wait until fangd has seen the death, then until a call works.
		for {
			if cur, _ := h.m.Server(context.Background(), "everything"); cur.Pid != v.Pid {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for !call() {
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
}

// The same call without its audit entry, to show what the durable audit
// append costs.
func BenchmarkProxiedEchoThroughFangdUnaudited(b *testing.B) {
	h := everythingHarness(b)
	raw := json.RawMessage(`{"message":"bench"}`)
	benchP50(b, func(ctx context.Context) error {
		_, _, _, err := h.m.callProxied(ctx, "mcp_everything_echo", raw)
		return err
	})
}
