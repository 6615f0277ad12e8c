package mcp

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every proxied call is counted by server and outcome and timed; a call of
// a tool no server has is an error to the caller and no series.
func TestToolCallMetrics(t *testing.T) {
	g := newGoServer(t, false, "")
	h := newHarness(t, t.TempDir(), nil)
	h.add(Spec{Name: "g", Transport: Transport{Type: TransportHTTP, URL: g.url()}})
	h.waitConnected("g")
	for range 2 {
		if _, err := h.call("mcp_g_echo", map[string]any{"message": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.call("mcp_nobody_echo", map[string]any{}); err == nil {
		t.Fatal("an unknown tool was called")
	}
	if n := testutil.ToFloat64(h.m.env.calls.WithLabelValues("g", "ok")); n != 2 {
		t.Fatalf("ok calls %v, want 2", n)
	}
	if n := testutil.CollectAndCount(h.m.env.calls); n != 1 {
		t.Fatalf("%d call series, want only g/ok", n)
	}
	if n, err := testutil.GatherAndCount(h.k.Metrics, "fangd_mcp_tool_call_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("latency series %d: %v", n, err)
	}
}
