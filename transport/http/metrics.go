package http

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
)

type httpMetrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	rateLimited prometheus.Counter
	hostRefused prometheus.Counter
}

func (m *httpMetrics) register(reg *prometheus.Registry) error {
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fangd_http_requests_total", Help: "HTTP requests by route, method and status."},
		[]string{"route", "method", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "fangd_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}},
		[]string{"route"})
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fangd_http_rate_limited_total", Help: "Requests refused by the rate limiter."})
	m.hostRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fangd_http_host_refused_total", Help: "Requests refused for a Host header that is not allowed (DNS rebinding)."})
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.rateLimited, m.hostRefused} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// routeMetrics caches one route's metric children. WithLabelValues hashes
// its labels, takes a lock and allocates on every call, which showed in the
// per-request profile. Children are still created on first use, exactly as
// WithLabelValues would create them, so /metrics shows the same series.
type routeMetrics struct {
	m       *httpMetrics
	route   string
	latency atomic.Pointer[prometheus.Observer]
	counts  atomic.Pointer[[]methodStatusCount] // copy-on-write
}

type methodStatusCount struct {
	method string
	status int
	c      prometheus.Counter
}

// maxCachedCounts bounds each route's cache: a route sees a handful of
// (method, status) pairs; anything beyond is looked up each time.
const maxCachedCounts = 8

func (m *httpMetrics) route(route string) *routeMetrics { return &routeMetrics{m: m, route: route} }

func (r *routeMetrics) observe(ctx *fasthttp.RequestCtx, start time.Time) {
	r.counter(ctx.Method(), ctx.Response.StatusCode()).Inc()
	lat := r.latency.Load()
	if lat == nil {
		o := r.m.latency.WithLabelValues(r.route)
		lat = &o
		r.latency.Store(lat)
	}
	(*lat).Observe(time.Since(start).Seconds())
}

// methodLabel keeps the method label to the methods fangd serves, so a
// caller inventing methods (BREW /x) cannot create metric series at will.
func methodLabel(method []byte) []byte {
	switch string(method) {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
		return method
	}
	return []byte("OTHER")
}

func (r *routeMetrics) counter(method []byte, status int) prometheus.Counter {
	method = methodLabel(method)
	cur := r.counts.Load()
	if cur != nil {
		for _, x := range *cur {
			if x.status == status && x.method == string(method) {
				return x.c
			}
		}
	}
	c := r.m.requests.WithLabelValues(r.route, string(method), strconv.Itoa(status))
	if cur == nil || len(*cur) < maxCachedCounts {
		var next []methodStatusCount
		if cur != nil {
			next = append(next, *cur...)
		}
		next = append(next, methodStatusCount{method: string(method), status: status, c: c})
		// Losing this race to another request only costs a later miss.
		r.counts.CompareAndSwap(cur, &next)
	}
	return c
}

// prometheus serves GET /metrics in the Prometheus text format.
func (s *Server) prometheus(ctx *fasthttp.RequestCtx) error {
	families, err := s.deps.Kernel.Metrics.Gather()
	if err != nil {
		return err
	}
	ctx.SetContentType(string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	enc := expfmt.NewEncoder(ctx, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}
