package approval

import (
	"encoding/json"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

func TestMemProbe(t *testing.T) {
	if os.Getenv("MEMPROBE") == "" {
		t.Skip()
	}
	h := newHarness(t, policy(func(p *Policy) { p.MaxPendingPerAgent = 100000; p.TimeoutSecs = 3600 }), nil)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	for i := 0; i < 10000; i++ {
		if _, err := h.a.Create(Request{AgentID: "a1", AgentName: "bench", Action: "shell_exec", Description: "bench request", Payload: json.RawMessage(`{"cmd":"echo 1"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	h.stop()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before = ms.HeapInuse
	h.start()
	if p, _ := h.a.List(StatusPending, 0, 1); p.Total != 10000 {
		t.Fatal(p.Total)
	}
	time.Sleep(time.Second)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := ms.HeapInuse
	f, _ := os.Create("/tmp/approvals.heap")
	pprof.WriteHeapProfile(f)
	f.Close()
	h.stop()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("10k pending held: %.1f MiB of heap (%.0f B per pending)", float64(held-ms.HeapInuse)/(1<<20), float64(held-ms.HeapInuse)/10000)
	_ = before
}
