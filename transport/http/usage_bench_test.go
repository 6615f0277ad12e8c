package http

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
)

// BenchmarkUsageEndpointsMillionEvents measures GET /api/usage?period=month
// and GET /api/usage/daily?days=366 through the whole HTTP stack (auth,
// middleware, the ask to the ledger, JSON) with 1 million usage events
// stored over the last 366 days. Target: p99 under 5 ms.
//
//	go test ./transport/http -run '^$' -bench UsageEndpoints -benchtime 5000x
func BenchmarkUsageEndpointsMillionEvents(b *testing.B) {
	db, err := store.Open(store.DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	const n = 1_000_000
	span := 366 * 24 * time.Hour
	for done := 0; done < n; done += 100_000 {
		evs := make([]usage.Event, 0, 100_000)
		for i := done; i < done+100_000; i++ {
			evs = append(evs, usage.Event{Time: now.Add(-span + time.Duration(int64(span)/n*int64(i))),
				AgentID: fmt.Sprintf("agent-%03d", i%100), AgentName: fmt.Sprintf("agent %d", i%100),
				Provider: "groq", Model: fmt.Sprintf("model-%d", i%8), InputTokens: 1000, CachedInputTokens: 100,
				OutputTokens: 200, CostNanos: 750_000, LatencyMS: 420, Outcome: "ok"})
		}
		if err := usage.Seed(db, evs); err != nil {
			b.Fatal(err)
		}
	}
	k := kernel.New(zerolog.Nop())
	defer k.Shutdown(context.Background())
	meter, err := usage.Start(k, db, nil, usage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.APIKey, cfg.RateLimitPerMinute = "bench-key-0123456789", 0
	srv, err := New(cfg, Deps{Kernel: k, Store: db, Meter: meter})
	if err != nil {
		b.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	get := func(path string) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://fangd" + path)
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("%s: %v %d %s", path, err, resp.StatusCode(), resp.Body())
		}
	}
	get("/api/usage?period=month") // waits for the ledger's load
	// Let Badger finish compacting the bulk load, so the numbers are the
	// steady state's rather than the seeding's.
	time.Sleep(3 * time.Second)
	for _, path := range []string{"/api/usage?period=month", "/api/usage/daily?days=366"} {
		b.Run(path, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				get(path)
				lat = append(lat, time.Since(t0))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
		})
	}
}
