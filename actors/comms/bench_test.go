package comms

import (
	"context"
	"sync"
	"testing"
	"time"
)

// BenchmarkPublishWith10Subscribers publishes b.N events while 10 live
// subscribers drain them, and stops the clock when every subscriber has
// the last one. Each event is committed (synced) before anyone sees it.
func BenchmarkPublishWith10Subscribers(b *testing.B) {
	h := startBus(b, b.TempDir(), BusOptions{LogSize: 100_000})
	var wg sync.WaitGroup
	var cut int
	var mu sync.Mutex
	target := uint64(b.N)
	for range 10 {
		r, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "bench", Buffer: 1 << 16})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range r.Sub.Events() {
				if e.ID >= target {
					r.Sub.Close()
					for range r.Sub.Events() {
					}
					return
				}
			}
			mu.Lock()
			cut++
			mu.Unlock()
		}()
	}
	detail := map[string]any{"agent": "bench", "n": 1}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		h.bus.Publish("agent.message", "agent:bench", "system", detail)
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	if cut > 0 {
		b.Fatalf("%d subscribers were cut", cut)
	}
}
