package http

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

const testKey = "test-key-0123456789abcdef"

// testServer is a real Server on a loopback port with its own store.
type testServer struct {
	*Server
	url   string
	db    *store.DB
	audit *audit.Log
	log   zerolog.Logger
	home  string
}

// testBase is what every test server stands on: a store in a fresh home,
// a kernel logging into ring, the audit log.
type testBase struct {
	home string
	db   *store.DB
	ring *logs.Ring
	log  zerolog.Logger
	k    *kernel.Kernel
	al   *audit.Log
}

func newTestBase(t testing.TB) *testBase {
	t.Helper()
	b := &testBase{home: t.TempDir(), ring: logs.NewRing(100)}
	db := storetest.Open(t, b.home)
	b.db = db
	b.log = zerolog.New(b.ring).With().Timestamp().Logger()
	b.k = kernel.New(b.log)
	var err error
	if b.al, err = audit.Start(b.k, db, audit.Options{AnchorPath: audit.AnchorPath(b.home)}); err != nil {
		t.Fatal(err)
	}
	return b
}

// testLevel is a test server's own log level (Deps.LogLevel): a test that
// changes it over /api/logs/level leaves zerolog's global level, and so
// the tests running beside it, alone. It starts at zerolog's default
// (debug).
type testLevel struct{ l atomic.Int32 }

func (v *testLevel) Level() zerolog.Level     { return zerolog.Level(v.l.Load()) }
func (v *testLevel) SetLevel(l zerolog.Level) { v.l.Store(int32(l)) }

// testConfig is the default config with the test key.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.APIKey = testKey
	cfg.Version = "test"
	return cfg
}

// serve serves s on loopback and, when the test ends, shuts it down, then
// closes (services the server used), the kernel and the store. It answers
// the base URL.
func (b *testBase) serve(t testing.TB, s *Server, closes ...func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		for _, c := range closes {
			c()
		}
		b.k.Shutdown(ctx)
		b.db.Close()
	})
	return "http://" + ln.Addr().String()
}

func (b *testBase) testServer(s *Server, url string) *testServer {
	return &testServer{Server: s, url: url, db: b.db, audit: b.al, log: b.log, home: b.home}
}

func newTestServer(t *testing.T, mutate func(*Config), extra ...func(*Server)) *testServer {
	t.Helper()
	b := newTestBase(t)
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, Deps{LogLevel: new(testLevel), Kernel: b.k, Audit: b.al, Store: b.db, Logs: b.ring})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range extra {
		f(s)
	}
	return b.testServer(s, b.serve(t, s))
}

type response struct {
	status int
	header nethttp.Header
	body   []byte
}

func (r response) envelope(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" || e.Code == "" || e.RequestID == "" {
		t.Fatalf("status %d: body is not the error envelope: %s", r.status, r.body)
	}
	if e.RequestID != r.header.Get("X-Request-Id") {
		t.Fatalf("request_id %q differs from X-Request-Id %q", e.RequestID, r.header.Get("X-Request-Id"))
	}
	return e
}

// setHeaders sets name/value pairs on req; a Host pair sets req.Host,
// since net/http ignores a Host header.
func setHeaders(req *nethttp.Request, headers []string) {
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
}

func (ts *testServer) do(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := nethttp.NewRequest(method, ts.url+path, rd)
	setHeaders(req, headers)
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, b}
}

// authed sends with the API key as a bearer token.
func (ts *testServer) authed(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	h := append([]string{"Authorization", "Bearer " + testKey}, headers...)
	if body != "" {
		h = append(h, "Content-Type", "application/json")
	}
	return ts.do(t, method, path, body, h...)
}

func (ts *testServer) recent(t *testing.T, n int) []audit.Entry {
	t.Helper()
	r := ts.authed(t, "GET", fmt.Sprintf("/api/audit/recent?limit=%d", n), "")
	var out struct {
		Entries []audit.Entry `json:"entries"`
		Total   int           `json:"total"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("recent: %v: %s", err, r.body)
	}
	return out.Entries
}

func TestHealthIsPublicAndRedacted(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	r := ts.do(t, "GET", "/api/health", "")
	var body map[string]any
	json.Unmarshal(r.body, &body)
	if r.status != 200 || body["status"] != "ok" || body["version"] != "test" || len(body) != 2 {
		t.Fatalf("health = %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/api/v1/health", ""); r.status != 200 {
		t.Fatalf("/api/v1/health = %d", r.status)
	}
	r = ts.authed(t, "GET", "/api/health/detail", "")
	var d healthDetail
	json.Unmarshal(r.body, &d)
	if r.status != 200 || d.Actors["audit"] != 1 || d.Goroutines == 0 || d.StoreBytes <= 0 {
		t.Fatalf("detail = %d %s", r.status, r.body)
	}
}

func TestAuthSchemesAndFailuresAreAudited(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	cases := []struct {
		name    string
		headers []string
		want    int
	}{
		{"bearer", []string{"Authorization", "Bearer " + testKey}, 200},
		{"x-api-key", []string{"X-API-Key", testKey}, 200},
		{"missing", nil, 401},
		{"wrong key", []string{"Authorization", "Bearer wrong-key-0123456789abcdef"}, 401},
		{"key prefix", []string{"X-API-Key", testKey[:10]}, 401},
		{"basic scheme", []string{"Authorization", "Basic " + testKey}, 401},
	}
	for _, c := range cases {
		r := ts.do(t, "GET", "/api/health/detail", "", c.headers...)
		if r.status != c.want {
			t.Errorf("%s: status %d, want %d", c.name, r.status, c.want)
		}
		if c.want == 401 {
			if e := r.envelope(t); e.Code != "unauthorized" {
				t.Errorf("%s: code %q", c.name, e.Code)
			}
			if strings.Contains(string(r.body), testKey) {
				t.Errorf("%s: response leaks the key", c.name)
			}
		}
	}
	// Failed authentications are audited in aggregate (authFailures):
	// write out the counts instead of waiting for the timer.
	ts.authFailures.flush()
	failures := 0
	for _, e := range ts.recent(t, 50) {
		if e.EventType == "auth_failed" {
			failures += failureCount(t, e)
			if e.Outcome != "denied" || e.SourceIP != "127.0.0.1" || strings.Contains(e.Details, testKey[:10]) {
				t.Errorf("auth_failed entry = %+v", e)
			}
		}
	}
	if failures != 4 {
		t.Fatalf("audited %d failed authentications, want 4", failures)
	}
}

func TestNoKeyMeansLoopbackOnlyAndNoProxies(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.APIKey = "" })
	if r := ts.do(t, "GET", "/api/health/detail", ""); r.status != 200 {
		t.Fatalf("direct loopback caller refused: %d", r.status)
	}
	for _, h := range []string{"X-Forwarded-For", "X-Real-IP", "Forwarded"} {
		r := ts.do(t, "GET", "/api/health/detail", "", h, "203.0.113.9")
		if r.status != 401 {
			t.Fatalf("loopback request relayed with %s admitted: %d", h, r.status)
		}
		r.envelope(t)
	}
}

func TestEveryResponseHasRequestIDAndSecurityHeaders(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.MaxBodyBytes = 64 })
	responses := map[string]response{
		"200": ts.do(t, "GET", "/api/health", ""),
		"401": ts.do(t, "GET", "/api/security", ""),
		"404": ts.authed(t, "GET", "/api/nope", ""),
		"405": ts.authed(t, "DELETE", "/api/health", ""),
		"413": ts.authed(t, "PUT", "/api/logs/level", `{"level":"`+strings.Repeat("x", 200)+`"}`),
	}
	for name, r := range responses {
		if name != "200" && fmt.Sprint(r.status) != name {
			t.Errorf("%s: got status %d", name, r.status)
		}
		if r.header.Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id", name)
		}
		for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy", "Cache-Control"} {
			if r.header.Get(h) == "" {
				t.Errorf("%s: missing %s", name, h)
			}
		}
		if name != "200" {
			r.envelope(t)
		}
	}
	r := ts.do(t, "GET", "/api/health", "", "X-Request-Id", "trace-abc.123")
	if r.header.Get("X-Request-Id") != "trace-abc.123" {
		t.Errorf("caller's request id not echoed: %q", r.header.Get("X-Request-Id"))
	}
	r = ts.do(t, "GET", "/api/health", "", "X-Request-Id", "bad id\twith spaces")
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("unsafe request id echoed: %q", got)
	}
}

func TestSecurityHeadersCanBeSwitchedOffAndStatusFollows(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.SecurityHeaders = false; c.RateLimitPerMinute = 0 })
	r := ts.authed(t, "GET", "/api/security", "")
	if r.header.Get("X-Frame-Options") != "" {
		t.Fatal("security headers sent although switched off")
	}
	var st securityStatus
	json.Unmarshal(r.body, &st)
	want := map[string]kernel.State{
		"security_headers": kernel.StateInactive, "gcra_rate_limiter": kernel.StateInactive,
		"merkle_audit_trail": kernel.StateActive, "health_redaction": kernel.StateActive,
		"ssrf_protection": kernel.StateUnavailable,
	}
	for k, v := range want {
		if st.Systems[k] != v {
			t.Errorf("%s = %q, want %q", k, st.Systems[k], v)
		}
	}
	if len(st.Systems) != 16 || st.Total != 16 || st.AllActive {
		t.Errorf("status = %+v", st)
	}
}

func TestRateLimitAnswers429WithRetryAfter(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 5 })
	for i := range 5 {
		if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	r := ts.do(t, "GET", "/api/health", "")
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("6th request: %d Retry-After=%q", r.status, r.header.Get("Retry-After"))
	}
	if e := r.envelope(t); e.Code != "rate_limited" {
		t.Fatalf("code %q", e.Code)
	}
	// An expensive route is refused sooner than a cheap one would be.
	ts2 := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 6 })
	if r := ts2.authed(t, "GET", "/api/audit/recent", ""); r.status != 200 {
		t.Fatalf("first audit read: %d", r.status)
	}
	if r := ts2.authed(t, "GET", "/api/audit/recent", ""); r.status != 429 {
		t.Fatalf("second audit read (cost 5 of 6): %d", r.status)
	}
}

// SetRateLimits (config reload) changes the quota of the running server and
// can turn the limiter on and off.
func TestSetRateLimitSwapsTheQuota(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 0 })
	for i := range 10 {
		if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
			t.Fatalf("unlimited request %d: %d", i, r.status)
		}
	}
	ts.SetRateLimits(RateLimits{PerMinute: 2})
	ts.do(t, "GET", "/api/health", "")
	ts.do(t, "GET", "/api/health", "")
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 429 {
		t.Fatalf("3rd request under a quota of 2: %d", r.status)
	}
	if st := ts.limiterState(t); st != kernel.StateActive {
		t.Fatalf("gcra_rate_limiter = %s after SetRateLimit(2)", st)
	}
	ts.SetRateLimits(RateLimits{})
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
		t.Fatalf("after the limiter was turned off: %d", r.status)
	}
	if st := ts.limiterState(t); st != kernel.StateInactive {
		t.Fatalf("gcra_rate_limiter = %s after SetRateLimit(0)", st)
	}
}

// limiterState is the rate limiter's entry in the security systems.
func (ts *testServer) limiterState(t *testing.T) kernel.State {
	t.Helper()
	return ts.deps.Kernel.Security.Status()["gcra_rate_limiter"]
}

func TestRateLimitLoopbackExemption(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 2; c.RateLimitExemptLoopback = true })
	for range 5 {
		if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
			t.Fatalf("exempt loopback limited: %d", r.status)
		}
	}
	if r := ts.do(t, "GET", "/api/health", "", "X-Forwarded-For", "198.51.100.1"); r.status != 200 {
		t.Fatalf("first proxied request: %d", r.status)
	}
	ts.do(t, "GET", "/api/health", "", "X-Forwarded-For", "198.51.100.1")
	if r := ts.do(t, "GET", "/api/health", "", "X-Forwarded-For", "198.51.100.1"); r.status != 429 {
		t.Fatalf("proxied requests are not exempt: %d", r.status)
	}
}

func TestBadBodiesAreRejectedAndChangeNothing(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	before := ts.deps.LogLevel.Level()
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	cases := []struct {
		name, body, contentType string
		status                  int
		code                    string
	}{
		{"malformed", `{"level":`, "application/json", 400, "invalid_json"},
		{"not an object", `["debug"]`, "application/json", 400, "invalid_json"},
		{"wrong type", `{"level":7}`, "application/json", 400, "invalid_json"},
		{"unknown field", `{"level":"debug","extra":1}`, "application/json", 400, "unknown_field"},
		{"trailing data", `{"level":"debug"} {}`, "application/json", 400, "invalid_json"},
		{"empty", ``, "application/json", 400, "invalid_json"},
		{"too deep", deep, "application/json", 400, "json_too_deep"},
		{"wrong content type", `{"level":"debug"}`, "text/plain", 415, "unsupported_media_type"},
		{"no content type", `{"level":"debug"}`, "", 415, "unsupported_media_type"},
		{"bad value", `{"level":"loud"}`, "application/json", 400, "invalid_level"},
		{"oversized", `{"level":"` + strings.Repeat("d", 5000) + `"}`, "application/json", 413, "body_too_large"},
	}
	for _, c := range cases {
		h := []string{"Authorization", "Bearer " + testKey}
		if c.contentType != "" {
			h = append(h, "Content-Type", c.contentType)
		}
		r := ts.do(t, "PUT", "/api/logs/level", c.body, h...)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, r.status, c.status, r.body)
			continue
		}
		if e := r.envelope(t); e.Code != c.code {
			t.Errorf("%s: code %q, want %q", c.name, e.Code, c.code)
		}
		if ts.deps.LogLevel.Level() != before {
			t.Fatalf("%s changed the log level", c.name)
		}
	}
	if r := ts.authed(t, "PUT", "/api/logs/level", `{"level":"warn"}`); r.status != 200 || ts.deps.LogLevel.Level() != zerolog.WarnLevel {
		t.Fatalf("valid body: %d %s", r.status, r.body)
	}
}

// The daemon's server has no LogLevel of its own: /api/logs/level reads and
// changes zerolog's global level. Sequential: it changes the process.
func TestLogLevelIsTheGlobalLevelByDefault(t *testing.T) {
	ts := newTestServer(t, nil, func(s *Server) { s.deps.LogLevel = nil })
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.InfoLevel)
	if got := ts.logLevel(t); got != "info" {
		t.Fatalf("GET /api/logs/level = %q with the global level at info", got)
	}
	if r := ts.authed(t, "PUT", "/api/logs/level", `{"level":"warn"}`); r.status != 200 || zerolog.GlobalLevel() != zerolog.WarnLevel {
		t.Fatalf("PUT warn: %d %s, global level %s", r.status, r.body, zerolog.GlobalLevel())
	}
}

func TestBadQueryValues(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for _, q := range []string{"limit=-1", "limit=abc", "limit=100000", "limit=0", "n=501", "limit=1.5"} {
		r := ts.authed(t, "GET", "/api/audit/recent?"+q, "")
		if r.status != 400 {
			t.Errorf("%s: status %d", q, r.status)
			continue
		}
		if e := r.envelope(t); e.Code != "invalid_query" {
			t.Errorf("%s: code %q", q, e.Code)
		}
	}
	if r := ts.authed(t, "GET", "/api/audit/recent?n=2", ""); r.status != 200 {
		t.Errorf("n=2: %d", r.status)
	}
}

func TestMutatingCallsAreAuditedReadsAreNot(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.authed(t, "GET", "/api/security", "")
	ts.authed(t, "PUT", "/api/logs/level", `{"level":"debug"}`)
	ts.authed(t, "PUT", "/api/logs/level", `{"level":"nope"}`)
	entries := ts.recent(t, 10)
	if len(entries) != 2 {
		t.Fatalf("audit has %d entries, want 2: %+v", len(entries), entries)
	}
	rejected, ok := entries[0], entries[1]
	if ok.EventType != "api_request" || ok.Outcome != "ok" || ok.Actor != "api_key" ||
		!strings.Contains(ok.Details, "PUT /api/logs/level -> 200") || !strings.Contains(ok.Details, "-> debug") {
		t.Errorf("accepted change entry = %+v", ok)
	}
	if rejected.Outcome != "rejected" || !strings.Contains(rejected.Details, "-> 400") {
		t.Errorf("rejected change entry = %+v", rejected)
	}
}

func TestAuditRecentAndVerify(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for i := range 7 {
		ts.audit.Append(context.Background(), audit.Event{EventType: "test", Details: fmt.Sprint(i)})
	}
	r := ts.authed(t, "GET", "/api/audit/recent?limit=3", "")
	var rec struct {
		Entries []audit.Entry `json:"entries"`
		Total   int           `json:"total"`
	}
	json.Unmarshal(r.body, &rec)
	if rec.Total != 7 || len(rec.Entries) != 3 || rec.Entries[0].ID != 7 || rec.Entries[2].ID != 5 {
		t.Fatalf("recent = %s", r.body)
	}
	if rec.Entries[0].PrevHash != rec.Entries[1].Hash {
		t.Fatal("newest entry does not chain to the previous one")
	}
	r = ts.authed(t, "GET", "/api/audit/verify", "")
	var rep audit.Report
	json.Unmarshal(r.body, &rep)
	if r.status != 200 || rep.Status != "valid" || rep.ChainLength != 7 || rep.FirstEntry == nil || rep.LastEntry == nil {
		t.Fatalf("verify = %d %s", r.status, r.body)
	}
	// Alter entry 3 on disk through the store.
	al := ts.db.AuditLog()
	var raw []byte
	al.Scan(3, false, func(r store.AuditRecord) (bool, error) { raw = r.Raw; return false, nil })
	al.Overwrite(store.AuditRecord{ID: 3, Raw: []byte(strings.Replace(string(raw), `"details":"2"`, `"details":"two"`, 1))})
	r = ts.authed(t, "GET", "/api/audit/verify", "")
	var broken map[string]any
	json.Unmarshal(r.body, &broken)
	if r.status != 200 || broken["status"] != "broken" || broken["broken_at"] != float64(3) || broken["error"] == "" {
		t.Fatalf("verify after tampering = %d %s", r.status, r.body)
	}
}

func TestMetricsNeedAuthAndCountRequests(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.do(t, "GET", "/api/health", "")
	if r := ts.do(t, "GET", "/metrics", ""); r.status != 401 {
		t.Fatalf("unauthenticated /metrics: %d", r.status)
	}
	r := ts.authed(t, "GET", "/metrics", "")
	body := string(r.body)
	for _, want := range []string{
		`fangd_http_requests_total{method="GET",route="/api/health",status="200"} 1`,
		"fangd_http_request_duration_seconds_bucket",
		"fangd_actor_restarts_total", "fangd_dead_letters_total", "fangd_audit_appends_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHandlerPanicIs500WithoutInternals(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil, func(s *Server) {
		s.api("GET", "/test/panic", func(*fasthttp.RequestCtx) error { panic("secret internal detail") })
	})
	r := ts.authed(t, "GET", "/api/test/panic", "")
	if r.status != 500 || strings.Contains(string(r.body), "secret internal detail") {
		t.Fatalf("panic answered %d %s", r.status, r.body)
	}
	if e := r.envelope(t); e.Code != "internal_error" {
		t.Fatalf("code %q", e.Code)
	}
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
		t.Fatal("server died after a handler panic")
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	id, event, data string
	comment         string
}

func readEvents(t *testing.T, br *bufio.Reader, want int, until func(sseEvent) bool) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	for len(out) < want {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %d events: %v", len(out), err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if cur != (sseEvent{}) && (until == nil || until(cur)) {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, ": "):
			cur.comment = line[2:]
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	return out
}

func (ts *testServer) openStream(t *testing.T, path string, headers ...string) (*bufio.Reader, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := nethttp.NewRequestWithContext(ctx, "GET", ts.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	setHeaders(req, headers)
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return bufio.NewReader(res.Body), func() { cancel(); res.Body.Close() }
}

func isLog(e sseEvent) bool { return e.event == "log" }

func TestLogStreamDeliversAndResumes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	br, stop := ts.openStream(t, "/api/logs/stream?tail=0")
	go func() {
		time.Sleep(50 * time.Millisecond)
		for i := range 3 {
			ts.log.Info().Int("n", i).Msg("hello")
		}
	}()
	got := readEvents(t, br, 3, isLog)
	stop()
	var line map[string]any
	if err := json.Unmarshal([]byte(got[0].data), &line); err != nil || line["message"] != "hello" || line["level"] != "info" {
		t.Fatalf("event data = %q", got[0].data)
	}
	ts.log.Warn().Msg("while away")
	// Resume after the second event: the third and the one logged while
	// disconnected arrive, nothing earlier.
	br, stop = ts.openStream(t, "/api/logs/stream", "Last-Event-ID", got[1].id)
	defer stop()
	resumed := readEvents(t, br, 2, isLog)
	if resumed[0].id != got[2].id || !strings.Contains(resumed[1].data, "while away") {
		t.Fatalf("resumed = %+v (after %s)", resumed, got[1].id)
	}
}

func TestLogStreamLevelFilterAndBadParams(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.log.Debug().Msg("quiet")
	ts.log.Error().Msg("loud")
	br, stop := ts.openStream(t, "/api/logs/stream?level=warn&tail=10")
	defer stop()
	got := readEvents(t, br, 1, isLog)
	if !strings.Contains(got[0].data, "loud") {
		t.Fatalf("first event at level=warn: %q", got[0].data)
	}
	for _, q := range []string{"level=loud", "tail=-1", "last_event_id=x"} {
		if r := ts.authed(t, "GET", "/api/logs/stream?"+q, ""); r.status != 400 {
			t.Errorf("%s: status %d", q, r.status)
		}
	}
}

func TestLogStreamOutlivesWriteTimeoutWithHeartbeats(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) {
		c.WriteTimeout = 300 * time.Millisecond
		c.SSEHeartbeat = 100 * time.Millisecond
	})
	br, stop := ts.openStream(t, "/api/logs/stream")
	defer stop()
	start := time.Now()
	pings := readEvents(t, br, 8, func(e sseEvent) bool { return e.comment == "ping" })
	if len(pings) != 8 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("got %d pings in %v", len(pings), time.Since(start))
	}
	ts.log.Info().Msg("still here")
	readEvents(t, br, 1, func(e sseEvent) bool { return strings.Contains(e.data, "still here") })
}

func TestShutdownEndsOpenStreams(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	br, stop := ts.openStream(t, "/api/logs/stream")
	defer stop()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	if err := <-done; err != nil {
		t.Fatalf("shutdown with an open stream: %v", err)
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
}

func TestHeadOnGetRoutesAndPanicMetrics(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil, func(s *Server) {
		s.api("GET", "/test/boom", func(*fasthttp.RequestCtx) error { panic("boom") })
	})
	r := ts.do(t, "HEAD", "/api/health", "")
	if r.status != 200 || len(r.body) != 0 || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("HEAD /api/health = %d body %q", r.status, r.body)
	}
	if r := ts.do(t, "HEAD", "/api/security", ""); r.status != 401 {
		t.Fatalf("HEAD on an authenticated route without a key = %d", r.status)
	}
	ts.authed(t, "GET", "/api/test/boom", "")
	ts.authed(t, "BREW", "/api/nope", "")
	body := string(ts.authed(t, "GET", "/metrics", "").body)
	if !strings.Contains(body, `route="/api/test/boom",status="500"`) {
		t.Errorf("panicked request not counted as 500:\n%s", grepLines(body, "boom"))
	}
	if strings.Contains(body, `method="BREW"`) || !strings.Contains(body, `method="OTHER"`) {
		t.Errorf("invented method not folded into OTHER:\n%s", grepLines(body, "unmatched"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestHeadOnLogStreamDoesNotHang(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	done := make(chan response, 1)
	go func() { done <- ts.authed(t, "HEAD", "/api/logs/stream", "") }()
	select {
	case r := <-done:
		if r.status != 200 {
			t.Fatalf("HEAD stream = %d", r.status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("HEAD on the SSE stream hung")
	}
}
