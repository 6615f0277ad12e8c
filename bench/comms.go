package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/transport/ssrf"
)

// commsEnv is an in-process kernel, store and event bus in a temp dir.
type commsEnv struct {
	*inProc
	bus *comms.Bus
}

func startCommsEnv(env *Env, pattern string, opts comms.BusOptions) (*commsEnv, error) {
	p, err := startInProc(env, pattern)
	if err != nil {
		return nil, err
	}
	bus, err := comms.Start(p.k, p.db, opts)
	if err != nil {
		p.close()
		return nil, err
	}
	return &commsEnv{inProc: p, bus: bus}, nil
}

// runCommsBus measures the event bus in-process on a real store: every
// event is committed (synced) before any subscriber sees it.
//   - 10 live subscribers draining as fast as they can while events are
//     published flat out: events/s until all 10 have the last one, and
//     whether any was cut for falling behind;
//   - 1,000 live subscribers fed 1,000 events/s for 5 s: peak growth of
//     the heap and stacks in use (the subscriptions' buffers, the goroutines
//     draining them, the bus's ring; no HTTP).
func runCommsBus(ctx context.Context, env *Env) ([]Row, error) {
	const events = 300_000
	rate, cut, err := busThroughput(ctx, env, events, 10)
	if err != nil {
		return nil, err
	}
	growth, delivered, err := busFanout(ctx, env, 1000, 1000, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return []Row{
		{Metric: fmt.Sprintf("bus events/s, 10 subscribers (%s events, synced)", thousands(events)), Value: thousands(rate),
			Target: ">= 100,000", Verdict: verdict(rate >= 100_000)},
		{Metric: "bus subscribers cut at that rate", Value: fmt.Sprint(cut), Target: "0", Verdict: verdict(cut == 0)},
		{Metric: "memory growth, 1,000 subscribers at 1,000 events/s (in-process heap+stacks)", Value: fmt.Sprintf("%.1f MiB (%s deliveries)", float64(growth)/(1<<20), thousands(float64(delivered))),
			Target: "< 100 MiB", Verdict: verdict(growth < 100<<20)},
	}, nil
}

func busThroughput(ctx context.Context, env *Env, n, subs int) (float64, int, error) {
	c, err := startCommsEnv(env, "comms-bus-", comms.BusOptions{LogSize: 100_000})
	if err != nil {
		return 0, 0, err
	}
	defer c.close()
	env.logf("comms bus: %d events to %d subscribers", n, subs)
	var wg sync.WaitGroup
	var cut atomic.Int32
	for range subs {
		r, err := c.bus.Subscribe(context.Background(), comms.Subscribe{Key: "bench", Buffer: 1 << 16})
		if err != nil {
			return 0, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range r.Sub.Events() {
				if e.ID >= uint64(n) {
					r.Sub.Close()
					for range r.Sub.Events() {
					}
					return
				}
			}
			cut.Add(1)
		}()
	}
	detail := map[string]any{"agent_id": "bench", "tokens": 42}
	begin := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c.bus.Publish("agent.message", "agent:bench", "system", detail)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		return 0, 0, errors.New("subscribers did not receive every event within 2 minutes")
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	return float64(n) / time.Since(begin).Seconds(), int(cut.Load()), nil
}

func busFanout(ctx context.Context, env *Env, subs, perSec int, d time.Duration) (int64, int64, error) {
	c, err := startCommsEnv(env, "comms-fanout-", comms.BusOptions{MaxStreamsPerKey: subs})
	if err != nil {
		return 0, 0, err
	}
	defer c.close()
	// RSS of this process says little here (the runtime keeps the heap of
	// earlier scenarios), so count what the Go runtime has in use: heap and
	// goroutine stacks, after a GC, at the peak of the run.
	inUse := func() int64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapInuse + m.StackInuse)
	}
	runtime.GC()
	before := inUse()
	env.logf("comms fan-out: %d subscribers, %d events/s for %s", subs, perSec, d)
	var delivered atomic.Int64
	var wg sync.WaitGroup
	var subsList []*comms.Subscription
	for range subs {
		r, err := c.bus.Subscribe(context.Background(), comms.Subscribe{Key: "bench", Buffer: 4096})
		if err != nil {
			return 0, 0, err
		}
		subsList = append(subsList, r.Sub)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range r.Sub.Events() {
				delivered.Add(1)
			}
		}()
	}
	tick := time.NewTicker(time.Second / 100)
	defer tick.Stop()
	stop := time.Now().Add(d)
	var peak, n int64
	detail := map[string]any{"agent_id": "bench"}
	for time.Now().Before(stop) && ctx.Err() == nil {
		<-tick.C
		for range perSec / 100 {
			c.bus.Publish("agent.message", "agent:bench", "system", detail)
		}
		if n%10 == 0 {
			if used := inUse() - before; used > peak {
				peak = used
			}
		}
		n++
	}
	for _, s := range subsList {
		s.Close()
	}
	wg.Wait()
	return peak, delivered.Load(), nil
}

// runWebhookDeliveries measures the webhook engine in-process: 50 signed
// endpoints on one local receiver, events published flat out, every
// delivery signed, sent, acknowledged and its outcome synced before the
// next one to the same endpoint.
func runWebhookDeliveries(ctx context.Context, env *Env) ([]Row, error) {
	const endpoints, events = 50, 200
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("webhook-signature") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	c, err := startCommsEnv(env, "webhooks-", comms.BusOptions{})
	if err != nil {
		return nil, err
	}
	defer c.close()
	vault, err := c.vault()
	if err != nil {
		return nil, err
	}
	guard, err := ssrf.New([]string{"127.0.0.1/32"})
	if err != nil {
		return nil, err
	}
	eng, err := webhook.Start(c.k, c.db, webhook.Options{Bus: c.bus, Vault: vault, Guard: guard})
	if err != nil {
		return nil, err
	}
	name, secret, evs := "bench", "bench-secret-value", []string{"hook.wake"}
	for i := 0; i < endpoints; i++ {
		_, err := eng.Create(ctx, webhook.KindOutbound, webhook.Patch{Name: &name, URL: &rcv.URL, Events: &evs, Secret: &secret})
		if de := kernel.AsError(err); de != nil && de.Kind == kernel.KindUnavailable {
			time.Sleep(10 * time.Millisecond) // the engine is still starting
			i--
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	env.logf("webhooks: %d events to %d endpoints", events, endpoints)
	want := int64(endpoints * events)
	begin := time.Now()
	for i := range events {
		c.bus.Publish("hook.wake", "bench", "", map[string]int{"n": i})
	}
	deadline := time.Now().Add(3 * time.Minute)
	for got.Load() < want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("only %d of %d deliveries arrived", got.Load(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
	rate := float64(want) / time.Since(begin).Seconds()
	return []Row{{Metric: fmt.Sprintf("signed webhook deliveries/s, %d endpoints (%s deliveries)", endpoints, thousands(float64(want))),
		Value: thousands(rate), Target: ">= 2,000", Verdict: verdict(rate >= 2000)}}, nil
}
