package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// BenchmarkSignedDeliveries50Endpoints delivers b.N events to each of 50
// signed endpoints on one local receiver and reports deliveries per
// second (each one signed, sent, acknowledged and recorded durably).
func BenchmarkSignedDeliveries50Endpoints(b *testing.B) {
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("webhook-signature") == "" {
			w.WriteHeader(400)
			return
		}
		got.Add(1)
		w.WriteHeader(204)
	}))
	defer rcv.Close()
	e := start(b, b.TempDir(), Options{})
	const endpoints = 50
	for range endpoints {
		p := Patch{Name: ptr("bench"), URL: ptr(rcv.URL), Events: &[]string{"hook.wake"}, Secret: ptr("bench-secret-value")}
		kerneltest.WaitFor(b, "condition", func() bool { _, err := e.eng.Create(context.Background(), KindOutbound, p); return err == nil })
	}
	want := int64(b.N * endpoints)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		e.bus.Publish("hook.wake", "system", "", map[string]int{"n": i})
	}
	for got.Load() < want {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/time.Since(start).Seconds(), "deliveries/s")
}
