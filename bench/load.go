package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// httpRead is a read-only route measured under wrk and compared with the
// ceiling. Scenarios for new routes are usually one loadRows call.
type httpRead struct {
	Label    string // as shown in the table, e.g. "GET /api/health"
	Path     string // with query
	Auth     bool   // send the API key
	MinRatio float64
}

// loadRows checks that the route answers 200, then runs wrk against the
// ceiling, the route, and the ceiling again (Opts.Rounds times: C R C R C
// ...), and returns the route's rows: requests/s as a ratio to the mean of
// the ceiling runs on either side (the target; the median over rounds),
// p50/p99, and the ceiling runs themselves. Alternating short runs cancel
// out most of what other processes on a shared machine do to one run.
func loadRows(ctx context.Context, env *Env, r httpRead) ([]Row, error) {
	d, err := env.Daemon(ctx)
	if err != nil {
		return nil, err
	}
	var headers []string
	if r.Auth {
		headers = append(headers, d.AuthHeader())
	}
	if err := expect200(d.URL(r.Path), headers); err != nil {
		return nil, err
	}
	first, err := env.ceilingRun(ctx)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	ceilings := []WrkResult{first}
	var rps, ratios, p50s, p99s []float64
	for i := range max(1, env.Opts.Rounds) {
		res, err := env.load(ctx, d.URL(r.Path), headers, fmt.Sprintf("wrk-%s-r%d", profileSlug(r.Path), i+1))
		if err != nil {
			return nil, err
		}
		after, err := env.ceilingRun(ctx)
		if err != nil {
			return nil, fmt.Errorf("ceiling: %w", err)
		}
		ceilings = append(ceilings, after)
		rps = append(rps, res.RequestsPerSec)
		ratios = append(ratios, res.RequestsPerSec/((ceilings[i].RequestsPerSec+after.RequestsPerSec)/2))
		p50s = append(p50s, float64(res.P50))
		p99s = append(p99s, float64(res.P99))
	}
	ratio := median(ratios)
	value := fmt.Sprintf("%s (%.1f%% of ceiling)", thousands(median(rps)), 100*ratio)
	latency := ms(time.Duration(median(p50s))) + " / " + ms(time.Duration(median(p99s)))
	if len(ratios) > 1 {
		value = fmt.Sprintf("%s (%.1f%% of ceiling; median of %d rounds, %.0f-%.0f%%)",
			thousands(median(rps)), 100*ratio, len(ratios), 100*slices.Min(ratios), 100*slices.Max(ratios))
		latency += " (medians)"
	}
	return []Row{
		{
			Metric:  r.Label + " req/s",
			Value:   value,
			Target:  fmt.Sprintf(">= %.0f%% of ceiling", 100*r.MinRatio),
			Verdict: verdict(ratio >= r.MinRatio),
		},
		infoRow(r.Label+" p50 / p99", latency),
		infoRow("  its ceiling runs, req/s", ceilingSummary(ceilings)),
	}, nil
}

// ceilingSummary lists the ceiling runs in order, with the range of their
// p99, and says when they differ by more than 15%: the machine was busy
// and the ratio is shaky.
func ceilingSummary(runs []WrkResult) string {
	var parts []string
	lo, hi := runs[0].RequestsPerSec, runs[0].RequestsPerSec
	p99lo, p99hi := runs[0].P99, runs[0].P99
	for _, c := range runs {
		parts = append(parts, thousands(c.RequestsPerSec))
		lo, hi = min(lo, c.RequestsPerSec), max(hi, c.RequestsPerSec)
		p99lo, p99hi = min(p99lo, c.P99), max(p99hi, c.P99)
	}
	out := strings.Join(parts, " / ") + " (p99 " + ms(p99lo) + " - " + ms(p99hi) + ")"
	if hi > 1.15*lo {
		out += "; drifted: machine busy?"
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// load runs wrk against url: a discarded warm-up the first time, then the
// measured run, profiled as profName when -profile is set (the shared
// daemon's runs only; "" for the ceiling).
// A run with error responses or socket errors measured the wrong thing and
// is an error.
func (e *Env) load(ctx context.Context, url string, headers []string, profName string) (WrkResult, error) {
	e.mu.Lock()
	e.lastCeiling = nil // whatever runs now, the next route needs a fresh ceiling
	e.mu.Unlock()
	run := func(d time.Duration) (WrkResult, error) {
		return runWrk(ctx, wrkLoad{URL: url, Headers: headers, Connections: e.Opts.Connections, Duration: d})
	}
	e.mu.Lock()
	warm := e.warmed[url]
	if e.warmed == nil {
		e.warmed = map[string]bool{}
	}
	e.warmed[url] = true
	e.mu.Unlock()
	if e.Opts.Warmup > 0 && !warm {
		if _, err := run(e.Opts.Warmup); err != nil {
			return WrkResult{}, err
		}
	}
	e.logf("wrk -t1 -c%d -d%s %s", e.Opts.Connections, e.Opts.Duration, url)
	wait := func() {}
	if profName != "" {
		e.mu.Lock()
		prof := e.prof
		e.mu.Unlock()
		wait = prof.start(ctx, profName, e.Opts.Duration)
	}
	res, err := run(e.Opts.Duration)
	wait()
	if err != nil {
		return res, err
	}
	if res.Non2xx > 0 || res.SocketErrors > 0 {
		return res, fmt.Errorf("%s: %d non-2xx responses and %d socket errors in %d requests", url, res.Non2xx, res.SocketErrors, res.Requests)
	}
	return res, nil
}

// expect200 makes one request and fails unless it answers 200.
func expect200(url string, headers []string) error {
	_, err := fetch(url, headers)
	return err
}

// fetch GETs url (loopback only) and returns the response, which the
// caller must release with fasthttp.ReleaseResponse.
func fetch(url string, headers []string) (*fasthttp.Response, error) {
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		return nil, fmt.Errorf("refusing to fetch %s: the bench only sends traffic to 127.0.0.1", url)
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI(url)
	for _, h := range headers {
		k, v, ok := cutHeader(h)
		if !ok {
			return nil, fmt.Errorf("bad header %q", h)
		}
		req.Header.Set(k, v)
	}
	resp := fasthttp.AcquireResponse()
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		fasthttp.ReleaseResponse(resp)
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		defer fasthttp.ReleaseResponse(resp)
		return nil, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode(), resp.Body())
	}
	return resp, nil
}

func cutHeader(h string) (string, string, bool) {
	for i := 0; i < len(h); i++ {
		if h[i] == ':' {
			v := h[i+1:]
			for len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			return h[:i], v, i > 0
		}
	}
	return "", "", false
}

// thousands formats a rate as an integer with thousands separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
