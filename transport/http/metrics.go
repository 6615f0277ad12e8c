package http

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
)

type httpMetrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	rateLimited prometheus.Counter
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
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.rateLimited} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *httpMetrics) observe(route string, ctx *fasthttp.RequestCtx, start time.Time) {
	m.requests.WithLabelValues(route, string(ctx.Method()), strconv.Itoa(ctx.Response.StatusCode())).Inc()
	m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
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
