package mcp

import (
	"context"
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

// fangd_mcp_servers{status} and fangd_mcp_server_connected{server} are
// read from the supervisor at scrape time: a server that connects shows
// as connected, one that is removed disappears.
func TestServerConnectionMetrics(t *testing.T) {
	g := newGoServer(t, false, "")
	h := newHarness(t, t.TempDir(), nil)
	gauge := func(name, label, value string) float64 {
		t.Helper()
		mfs, err := h.k.Metrics.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == value {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		return -1 // no such series
	}
	if n := gauge("fangd_mcp_servers", "status", StatusConnected); n != 0 {
		t.Fatalf("connected before any server: %v", n)
	}
	h.add(Spec{Name: "g", Transport: Transport{Type: TransportHTTP, URL: g.url()}})
	h.waitConnected("g")
	if n := gauge("fangd_mcp_servers", "status", StatusConnected); n != 1 {
		t.Fatalf("connected servers %v, want 1", n)
	}
	if n := gauge("fangd_mcp_server_connected", "server", "g"); n != 1 {
		t.Fatalf("g connected %v, want 1", n)
	}
	if err := h.m.Remove(context.Background(), "g"); err != nil {
		t.Fatal(err)
	}
	if n := gauge("fangd_mcp_server_connected", "server", "g"); n != -1 {
		t.Fatalf("removed server still has a series: %v", n)
	}
	if n := gauge("fangd_mcp_servers", "status", StatusConnected); n != 0 {
		t.Fatalf("connected after removal %v, want 0", n)
	}
}
