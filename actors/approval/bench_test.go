package approval

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkPendingHeap measures the heap that pending requests hold once
// loaded, as after a daemon restart (passive: an index entry and a heap
// slot each): it creates b.N of them, stops the actors, and compares the
// heap after a GC before and after the supervisor's load of them (the same
// store, so only what the load keeps is counted, including the Badger
// blocks it read into the block cache).
// Run: go test ./actors/approval -run '^$' -bench PendingHeap -benchtime 10000x
func BenchmarkPendingHeap(b *testing.B) {
	h := newHarness(b, policy(func(p *Policy) { p.MaxPendingPerAgent = 1_000_000; p.TimeoutSecs = 3600 }), nil)
	defer h.stop()
	for i := 0; i < b.N; i++ {
		if _, err := h.a.Create(context.Background(), Request{AgentID: "a1", AgentName: "bench", Action: "shell_exec", Description: "bench request",
			Payload: json.RawMessage(`{"cmd":"echo 1"}`)}); err != nil {
			b.Fatal(err)
		}
	}
	env := h.a.env
	h.stop()
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	s := &supervisor{env: env}
	if err := s.load(nil); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if len(s.expiry) != b.N {
		b.Fatalf("%d loaded, want %d", len(s.expiry), b.N)
	}
	runtime.KeepAlive(s)
	b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before))/float64(b.N), "heap-B/pending")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkApproveRoundTrip times a decision until the caller waiting on
// approval.Gate (what an agent's gated tool call waits on) has it: the
// store write, the audit entry and the hop back, on a real store.
func BenchmarkApproveRoundTrip(b *testing.B) {
	h := newHarness(b, policy(func(p *Policy) { p.MaxPendingPerAgent = 1_000_000 }), nil)
	defer h.stop()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rec, err := h.a.Create(context.Background(), Request{AgentID: "a1", Action: "shell_exec"})
		if err != nil {
			b.Fatal(err)
		}
		f := h.k.Root.RequestFuture(h.a.PID(), &Gate{Req: Request{ID: rec.ID, AgentID: "a1", Action: "shell_exec"}}, 30*time.Second)
		if _, err := h.a.Get(context.Background(), rec.ID); err != nil { // the Gate is in place once this answers
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := h.a.Decide(context.Background(), Decide{ID: rec.ID, Approve: true, By: api("bench")}); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Result(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
