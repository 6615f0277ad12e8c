package usage

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// BenchmarkReserveSettle measures the ledger's hot path: one reservation
// and its settlement (with the synced write of the usage event and its
// roll-ups) per operation, from 64 concurrent callers. Target: >= 50k/s.
func BenchmarkReserveSettle(b *testing.B) {
	k, m := benchMeter(b)
	agents := make([]string, 16)
	for i := range agents {
		agents[i] = fmt.Sprintf("agent-%d", i)
	}
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			agent := agents[i%16]
			res, err := m.Reserve(context.Background(), Reserve{AgentID: agent, Provider: "p", Model: "m", CostNanos: 3000, Tokens: 100})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := m.Settle(context.Background(), res.ID, Event{AgentID: agent, Provider: "p", Model: "m", InputTokens: 50, OutputTokens: 20, CostNanos: 1500, Outcome: "ok"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRates(b, start, cpu0)
	if fams, err := k.Metrics.Gather(); err == nil {
		for _, f := range fams {
			if f.GetName() == "fangd_usage_commits_total" {
				b.ReportMetric(float64(b.N)/f.GetMetric()[0].GetCounter().GetValue(), "events/commit")
			}
		}
	}
}

// BenchmarkReserveRelease is the ledger's admission alone (no event to
// write): what a refused or failed call costs.
func BenchmarkReserveRelease(b *testing.B) {
	_, m := benchMeter(b)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Reserve(context.Background(), Reserve{AgentID: "a", CostNanos: 3000, Tokens: 100}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRates(b, start, cpu0)
}

// benchMeter is a meter on a fresh store with a daily limit no benchmark
// reaches; both are stopped when b ends.
func benchMeter(b *testing.B) (*kernel.Kernel, *Meter) {
	db, err := store.Open(store.DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	k := kernel.New(zerolog.Nop())
	b.Cleanup(func() { k.Shutdown(context.Background()) })
	m, err := Start(k, db, nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	daily := 1e6
	m.SetBudget(context.Background(), SetBudget{DailyLimitUSD: &daily})
	return k, m
}

// cpuTime is the CPU this process has used (user + system). On a shared
// machine the wall-clock rate depends on the neighbours; CPU per operation
// does not, and bounds the rate an idle machine would reach.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRates(b *testing.B, start time.Time, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu_us/op")
}

// BenchmarkQueriesOverMillionEvents measures the ledger's answers to the
// month usage and the 366-day daily report with 1 million events stored.
// Target: p99 under 5 ms (through HTTP; see transport/http's benchmark).
func BenchmarkQueriesOverMillionEvents(b *testing.B) {
	db, err := store.Open(store.DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	if err := SeedBench(db, 1_000_000, now); err != nil {
		b.Fatal(err)
	}
	k := kernel.New(zerolog.Nop())
	defer k.Shutdown(context.Background())
	begin := time.Now()
	m, err := Start(k, db, nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Usage(context.Background(), "day"); err != nil { // waits for the load
		b.Fatal(err)
	}
	b.Logf("ledger loaded 1M events' roll-ups in %s", time.Since(begin))
	for _, q := range []struct {
		name string
		fn   func() error
	}{
		{"usage_month", func() error { _, err := m.Usage(context.Background(), "month"); return err }},
		{"daily_366", func() error { _, err := m.Daily(context.Background(), 366); return err }},
	} {
		b.Run(q.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := q.fn(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
		})
	}
}
