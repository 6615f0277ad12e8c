package audit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGroupAppend is the bench's audit-append group run in a test
// binary: 64 writers append b.N entries through the real writer on a real
// (synced) store. cpu_us/op is the process's CPU per append, the figure
// that holds still on a shared machine; per_commit is how many appends
// shared a synced commit.
func BenchmarkGroupAppend(b *testing.B) {
	h, err := startWith(b, b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	const writers = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := Event{EventType: "bench", Details: "writer " + strconv.Itoa(w), Actor: "bench", SourceIP: "127.0.0.1"}
			for next.Add(1) <= int64(b.N) {
				if _, err := h.log.Append(context.Background(), ev); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu_us/op")
	b.ReportMetric(float64(b.N)/commits(b, h), "per_commit")
}

// commits reads fangd_audit_commits_total.
func commits(b *testing.B, h *harness) float64 {
	families, err := h.k.Metrics.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "fangd_audit_commits_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	b.Fatal("no fangd_audit_commits_total")
	return 0
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
