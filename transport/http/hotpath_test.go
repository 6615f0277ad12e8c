package http

// Tests that pin the behaviour of the per-request hot path (request ids,
// security headers, /api/health, /api/audit/recent) so that performance
// work on it cannot change what a client sees. Throughput is measured by
// `make bench`, never here.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/store/storetest"
)

// inproc runs one request through the full handler chain in-process, from
// a loopback peer, and returns the raw response (exact bytes and header
// order, which the HTTP client in server_test.go would normalise).
func (ts *testServer) inproc(method, uri string, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	ts.Handler()(&ctx)
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// wantCommonHeaders checks what every response carries.
func wantCommonHeaders(t *testing.T, r *fasthttp.Response) {
	t.Helper()
	for k, v := range map[string]string{
		"X-Api-Version":                "v1",
		"Cache-Control":                "no-store",
		"X-Content-Type-Options":       "nosniff",
		"X-Frame-Options":              "DENY",
		"Referrer-Policy":              "no-referrer",
		"Content-Security-Policy":      "default-src 'none'; frame-ancestors 'none'",
		"Strict-Transport-Security":    "max-age=63072000; includeSubDomains",
		"Cross-Origin-Resource-Policy": "same-origin",
	} {
		if got := string(r.Header.Peek(k)); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if len(r.Header.Peek("X-Request-Id")) == 0 {
		t.Error("no X-Request-Id")
	}
}

func TestHealthIsExactlyStatusAndVersion(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for _, path := range []string{"/api/health", "/api/v1/health"} {
		r := ts.inproc("GET", path)
		if r.StatusCode() != 200 || string(r.Body()) != `{"status":"ok","version":"test"}`+"\n" {
			t.Fatalf("%s: %d %q", path, r.StatusCode(), r.Body())
		}
		if ct := string(r.Header.ContentType()); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
		wantCommonHeaders(t, r)
	}
}

func TestHealthIsDegradedWithoutTheAuditWriter(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts.deps.Kernel.Shutdown(ctx) // stops the audit writer
	r := ts.inproc("GET", "/api/health")
	if r.StatusCode() != 200 || string(r.Body()) != `{"status":"degraded","version":"test"}`+"\n" {
		t.Fatalf("%d %q", r.StatusCode(), r.Body())
	}
}

func TestSecurityHeadersFollowConfig(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.SecurityHeaders = false })
	r := ts.inproc("GET", "/api/health")
	for _, k := range []string{"X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Strict-Transport-Security"} {
		if v := r.Header.Peek(k); v != nil {
			t.Errorf("%s = %q with security headers off", k, v)
		}
	}
	if string(r.Header.Peek("Cache-Control")) != "no-store" || len(r.Header.Peek("X-Request-Id")) == 0 {
		t.Fatalf("headers every response carries are missing:\n%s", r.Header.Header())
	}
}

func TestRequestIDsAreFreshUUIDs(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	seen := map[string]bool{}
	for range 50 {
		id := string(ts.inproc("GET", "/api/health").Header.Peek("X-Request-Id"))
		if !uuidRE.MatchString(id) || seen[id] {
			t.Fatalf("request id %q: not a fresh v4 UUID", id)
		}
		seen[id] = true
	}
}

func TestRequestIDEchoedAndInErrorEnvelope(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	cases := []struct {
		name, sent string
		echoed     bool
	}{
		{"plain id is echoed", "client-req_1.2", true},
		{"id with a space is replaced", "bad id", false},
		{"id with a newline is replaced", "a\nb", false},
		{"overlong id is replaced", strings.Repeat("a", 65), false},
		{"64 chars is fine", strings.Repeat("b", 64), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/api/no-such-route", "/api/audit/recent"} { // 404, then 401
				r := ts.inproc("GET", path, "X-Request-Id", c.sent)
				got := string(r.Header.Peek("X-Request-Id"))
				if c.echoed && got != c.sent || !c.echoed && !uuidRE.MatchString(got) {
					t.Fatalf("%s: sent %q, header %q", path, c.sent, got)
				}
				var env errorBody
				if err := json.Unmarshal(r.Body(), &env); err != nil || env.RequestID != got || env.Code == "" {
					t.Fatalf("%s: envelope %s (%v), want request_id %q", path, r.Body(), err, got)
				}
				wantCommonHeaders(t, r)
			}
		})
	}
}

func TestAuditRecentServesStoredEntriesNewestFirst(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for i := range 30 {
		if _, err := ts.audit.Append(context.Background(), audit.Event{EventType: "test", Details: fmt.Sprintf("n%d <&>", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		uri  string
		want int
	}{{"/api/audit/recent?limit=20", 20}, {"/api/v1/audit/recent?n=3", 3}, {"/api/audit/recent", 30}, {"/api/audit/recent?limit=500", 30}} {
		r := ts.inproc("GET", c.uri, "Authorization", "Bearer "+testKey)
		if r.StatusCode() != 200 || string(r.Header.ContentType()) != "application/json" {
			t.Fatalf("%s: %d %s", c.uri, r.StatusCode(), r.Body())
		}
		wantCommonHeaders(t, r)
		body := r.Body()
		if !strings.HasSuffix(string(body), "}\n") {
			t.Fatalf("%s: body does not end with one newline: %q", c.uri, body)
		}
		var got struct {
			Entries []json.RawMessage `json:"entries"`
			Total   int               `json:"total"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %v in %s", c.uri, err, body)
		}
		if got.Total != 30 || len(got.Entries) != c.want {
			t.Fatalf("%s: total %d, %d entries; want 30, %d", c.uri, got.Total, len(got.Entries), c.want)
		}
		for i, raw := range got.Entries {
			var e audit.Entry
			if err := json.Unmarshal(raw, &e); err != nil || e.ID != uint64(30-i) || e.Details != fmt.Sprintf("n%d <&>", 29-i) {
				t.Fatalf("%s: entry %d = %s (%v)", c.uri, i, raw, err)
			}
			if e.Hash != audit.Hash(&e) {
				t.Fatalf("%s: entry %d is not the stored entry: hash mismatch", c.uri, i)
			}
		}
	}
	// The stored bytes are served as they are: no HTML escaping.
	if r := ts.inproc("GET", "/api/audit/recent?limit=1", "X-API-Key", testKey); !strings.Contains(string(r.Body()), `"details":"n29 <&>"`) {
		t.Fatalf("entry re-encoded: %s", r.Body())
	}
}

func TestAuditRecentRejectsBadLimits(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for _, q := range []string{"limit=-1", "limit=0", "limit=abc", "limit=100000", "n=501"} {
		r := ts.inproc("GET", "/api/audit/recent?"+q, "Authorization", "Bearer "+testKey)
		var env errorBody
		if r.StatusCode() != 400 || json.Unmarshal(r.Body(), &env) != nil || env.Code != "invalid_query" {
			t.Fatalf("%s: %d %s", q, r.StatusCode(), r.Body())
		}
	}
}

func TestRequestMetricsByRouteMethodAndStatus(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for range 3 {
		ts.inproc("GET", "/api/health")
	}
	ts.inproc("HEAD", "/api/health")
	ts.inproc("GET", "/api/v1/health")
	ts.inproc("GET", "/api/audit/recent") // 401: no key
	ts.inproc("GET", "/api/audit/recent", "X-API-Key", testKey)
	ts.inproc("GET", "/api/nope", "X-API-Key", testKey)
	ts.inproc("BREW", "/api/nope", "X-API-Key", testKey)
	ts.inproc("GET", "/api/nope") // unknown routes need the key too: 401

	families, err := ts.deps.Kernel.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	latency := map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetName() {
			case "fangd_http_requests_total":
				counts[labels["route"]+" "+labels["method"]+" "+labels["status"]] = m.GetCounter().GetValue()
			case "fangd_http_request_duration_seconds":
				latency[labels["route"]] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	wantCounts := map[string]float64{
		"/api/health GET 200":  3,
		"/api/health HEAD 200": 1, // GET routes answer HEAD

		"/api/v1/health GET 200":    1,
		"/api/audit/recent GET 401": 1,
		"/api/audit/recent GET 200": 1,
		"unmatched GET 404":         1,
		"unmatched OTHER 404":       1, // invented methods do not make new series
		"unmatched GET 401":         1,
	}
	if fmt.Sprint(counts) != fmt.Sprint(wantCounts) {
		t.Fatalf("request counts\n got %v\nwant %v", counts, wantCounts)
	}
	wantLatency := map[string]uint64{"/api/health": 4, "/api/v1/health": 1, "/api/audit/recent": 2, "unmatched": 3}
	if fmt.Sprint(latency) != fmt.Sprint(wantLatency) {
		t.Fatalf("latency sample counts\n got %v\nwant %v", latency, wantLatency)
	}
}

// The benchmarks run one request through the full chain in-process, for
// profiling the hot path (go test -bench Hot -benchmem -cpuprofile ...).
// Throughput targets are `make bench`'s job.

func benchRequest(b *testing.B, uri string, headers ...string) {
	home := b.TempDir()
	db := storetest.Open(b, home)
	k := kernel.New(zerolog.Nop())
	al, err := audit.Start(k, db, audit.Options{AnchorPath: audit.AnchorPath(home)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		kerneltest.Stop(k, db)
	})
	cfg := DefaultConfig()
	cfg.APIKey, cfg.RateLimitPerMinute = testKey, 0
	s, err := New(cfg, Deps{LogLevel: new(testLevel), Kernel: k, Audit: al, Store: db, Logs: logs.NewRing(16)})
	if err != nil {
		b.Fatal(err)
	}
	for range 20 {
		if _, err := al.Append(context.Background(), audit.Event{EventType: "bench", Details: "PUT /api/logs/level -> 200"}); err != nil {
			b.Fatal(err)
		}
	}
	var req fasthttp.Request
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	h := s.Handler()
	b.ReportAllocs()
	for b.Loop() {
		ctx.Init(&req, addr, nil)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

func BenchmarkHotHealth(b *testing.B) { benchRequest(b, "/api/health") }

func BenchmarkHotAuditRecent(b *testing.B) {
	benchRequest(b, "/api/audit/recent?limit=20", "Authorization", "Bearer "+testKey)
}

// The kept page (auditRecent serves the last page built while the chain's
// length and tip are unchanged) answers exactly what encoding the writer's
// Recent reply answers, byte for byte, after every append and whichever
// limit was asked for before: a stale or mixed-up page would differ.
func TestAuditRecentPageEqualsTheEncodedReply(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	want := func(limit int) []byte {
		t.Helper()
		rep, err := ts.audit.Recent(context.Background(), limit)
		if err != nil {
			t.Fatal(err)
		}
		page := struct {
			Entries []json.RawMessage `json:"entries"`
			Items   []json.RawMessage `json:"items"`
			Total   uint64            `json:"total"`
			Offset  int               `json:"offset"`
			Limit   int               `json:"limit"`
			Tip     string            `json:"tip_hash"`
		}{Entries: []json.RawMessage{}, Items: []json.RawMessage{}, Total: rep.Total, Limit: limit, Tip: rep.Tip}
		// fangd's entries carry LibreFang's three names too: both lists
		// are the items, as the route has always served them.
		for _, item := range rep.Items {
			page.Entries = append(page.Entries, item)
			page.Items = append(page.Items, item)
		}
		if len(rep.Entries) == 0 {
			page.Tip = ""
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(page); err != nil {
			t.Fatal(err)
		}
		return []byte(b.String())
	}
	check := func(limit int) {
		t.Helper()
		for range 2 { // built, then kept
			r := ts.inproc("GET", fmt.Sprintf("/api/audit/recent?limit=%d", limit), "Authorization", "Bearer "+testKey)
			if r.StatusCode() != 200 || string(r.Header.ContentType()) != "application/json" {
				t.Fatalf("limit %d: %d %s", limit, r.StatusCode(), r.Body())
			}
			if w := want(limit); string(r.Body()) != string(w) {
				t.Fatalf("limit %d:\n got %s\nwant %s", limit, r.Body(), w)
			}
		}
	}
	check(20)
	for round := range 4 {
		for i := range 3 {
			if _, err := ts.audit.Append(context.Background(), audit.Event{EventType: "test", Details: fmt.Sprintf("r%d n%d <&>", round, i)}); err != nil {
				t.Fatal(err)
			}
		}
		check(20)
		check(3)
		check(20)
	}
}

// Readers racing appends each get one consistent page: its total is its
// newest entry's id and its tip that entry's hash. A kept page is shared
// by every response serving it; under -race a write to it would show.
func TestAuditRecentPagesStayConsistentUnderAppends(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 60 {
			if _, err := ts.audit.Append(context.Background(), audit.Event{EventType: "test", Details: fmt.Sprintf("n%d", i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				r := ts.inproc("GET", "/api/audit/recent?limit=5", "Authorization", "Bearer "+testKey)
				var page struct {
					Entries []audit.Entry `json:"entries"`
					Total   uint64        `json:"total"`
					Tip     string        `json:"tip_hash"`
				}
				if err := json.Unmarshal(r.Body(), &page); err != nil {
					errs <- fmt.Errorf("%v in %s", err, r.Body())
					return
				}
				if len(page.Entries) > 0 && (page.Entries[0].ID != page.Total || page.Entries[0].Hash != page.Tip) {
					errs <- fmt.Errorf("inconsistent page: total %d tip %s, newest entry %d %s", page.Total, page.Tip, page.Entries[0].ID, page.Entries[0].Hash)
					return
				}
			}
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
