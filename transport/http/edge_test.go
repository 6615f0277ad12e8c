package http

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

var countRE = regexp.MustCompile(`^count=(\d+) `)

// failureCount is the count an aggregated auth_failed entry records.
func failureCount(t *testing.T, e audit.Entry) int {
	t.Helper()
	m := countRE.FindStringSubmatch(e.Details)
	if m == nil {
		t.Fatalf("auth_failed entry without a count: %+v", e)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// frozenLimiter stops the rate limiter's clock (a newTestServer option),
// so that no bucket refills while a slow, shared machine runs the test.
func frozenLimiter(s *Server) {
	at := time.Now()
	s.limits.Load().g.now = func() time.Time { return at }
}

func (ts *testServer) logLevel(t *testing.T) string {
	t.Helper()
	var b levelBody
	if err := json.Unmarshal(ts.authed(t, "GET", "/api/logs/level", "").body, &b); err != nil {
		t.Fatal(err)
	}
	return b.Level
}

// With no API key, a request whose Host is not a loopback name (a web page
// rebound to 127.0.0.1) is refused with 403 before it can read or change
// anything, and spends no rate-limit cells.
func TestForeignHostIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.APIKey = ""; c.RateLimitPerMinute = 40 }, frozenLimiter)
	ts.deps.LogLevel.SetLevel(zerolog.InfoLevel)
	entries := len(ts.recent(t, 100))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ts.url, "http://"))
	for _, host := range []string{"evil.example.com", "evil.example.com:" + port, "127.0.0.1.evil.example",
		"localhost.evil.example", "10.0.0.1", "[2001:db8::1]:" + port, "0.0.0.0"} {
		for range 3 {
			r := ts.do(t, "PUT", "/api/logs/level", `{"level":"trace"}`, "Host", host, "Content-Type", "application/json")
			if r.status != 403 || r.envelope(t).Code != "host_not_allowed" {
				t.Fatalf("Host %q: PUT /api/logs/level = %d %s", host, r.status, r.body)
			}
			if r := ts.do(t, "GET", "/api/audit/recent", "", "Host", host); r.status != 403 || r.envelope(t).Code != "host_not_allowed" {
				t.Fatalf("Host %q: GET /api/audit/recent = %d %s", host, r.status, r.body)
			}
			// Public routes and unknown paths are behind the same check.
			if r := ts.do(t, "GET", "/api/health", "", "Host", host); r.status != 403 {
				t.Fatalf("Host %q: GET /api/health = %d", host, r.status)
			}
			if r := ts.do(t, "GET", "/api/nope", "", "Host", host); r.status != 403 {
				t.Fatalf("Host %q: GET /api/nope = %d", host, r.status)
			}
		}
	}
	if got := ts.logLevel(t); got != "info" {
		t.Fatalf("log level changed to %q by refused requests", got)
	}
	// 84 refused requests and not one cell spent (the quota is 40; they would cost 336), and
	// nothing audited.
	if got := ts.recent(t, 100); len(got) != entries {
		t.Fatalf("refused requests were audited: %d entries, had %d: %+v", len(got), entries, got[0])
	}
	for _, host := range []string{"localhost", "localhost:" + port, "LocalHost.", "app.localhost:" + port,
		"127.0.0.1", "127.0.0.1:" + port, "127.9.8.7:" + port, "[::1]:" + port, "[::1]"} {
		if r := ts.do(t, "GET", "/api/health/detail", "", "Host", host); r.status != 200 {
			t.Fatalf("loopback Host %q refused: %d %s", host, r.status, r.body)
		}
	}
	if r := ts.do(t, "PUT", "/api/logs/level", `{"level":"warn"}`, "Content-Type", "application/json"); r.status != 200 || ts.logLevel(t) != "warn" {
		t.Fatalf("loopback PUT = %d %s", r.status, r.body)
	}
}

// allowed_hosts admits a name; with an API key the check applies only when
// allowed_hosts is set.
func TestAllowedHosts(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.APIKey = ""; c.AllowedHosts = []string{"Fangd.LAN"} })
	for host, want := range map[string]int{"fangd.lan": 200, "fangd.lan:4545": 200, "FANGD.lan.": 200,
		"other.lan": 403, "x.fangd.lan": 403, "localhost": 200} {
		if r := ts.do(t, "GET", "/api/health/detail", "", "Host", host); r.status != want {
			t.Errorf("no key, Host %q: %d, want %d", host, r.status, want)
		}
	}
	keyed := newTestServer(t, nil)
	if r := keyed.authed(t, "GET", "/api/health/detail", "", "Host", "fangd.example.com"); r.status != 200 {
		t.Errorf("API key, no allowed_hosts: foreign Host got %d, want 200 (the check does not apply)", r.status)
	}
	keyedList := newTestServer(t, func(c *Config) { c.AllowedHosts = []string{"fangd.example.com"} })
	if r := keyedList.authed(t, "GET", "/api/health/detail", "", "Host", "fangd.example.com"); r.status != 200 {
		t.Errorf("API key, listed Host: %d", r.status)
	}
	if r := keyedList.authed(t, "GET", "/api/health/detail", "", "Host", "evil.example.com"); r.status != 403 || r.envelope(t).Code != "host_not_allowed" {
		t.Errorf("API key with allowed_hosts, unlisted Host: %d %s", r.status, r.body)
	}
}

func TestEdgeConfigIsValidated(t *testing.T) {
	t.Parallel()
	bad := []Config{
		{AllowedHosts: []string{"http://fangd.lan"}},
		{AllowedHosts: []string{"fangd.lan:4545"}},
		{AllowedHosts: []string{"*.lan"}},
		{CORSOrigins: []string{"*"}},
		{CORSOrigins: []string{"null"}},
		{CORSOrigins: []string{"app.example"}},
		{CORSOrigins: []string{"https://app.example/path"}},
		{TrustedProxies: []string{"10.0.0.0/33"}},
		{TrustedProxies: []string{"proxy.lan"}},
	}
	for _, c := range bad {
		if err := c.ValidateEdge(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	good := Config{AllowedHosts: []string{"fangd.lan", "192.0.2.10", "[2001:db8::1]"},
		CORSOrigins: []string{"https://app.example", "http://localhost:5173/"}, TrustedProxies: []string{"127.0.0.1", "10.0.0.0/8", "::1/128"}}
	if err := good.ValidateEdge(); err != nil {
		t.Fatal(err)
	}
}

// CORS stays closed unless cors_origins lists the origin; preflights for a
// listed origin are answered 204 without credentials.
func TestCORSPreflightAndOrigins(t *testing.T) {
	t.Parallel()
	const app = "http://app.example:5173"
	ts := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{app} })
	preflight := func(ts *testServer, origin, path string) response {
		return ts.do(t, "OPTIONS", path, "", "Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization,content-type")
	}
	r := preflight(ts, app, "/api/agents")
	h := r.header
	if r.status != 204 || h.Get("Access-Control-Allow-Origin") != app || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
		h.Get("Vary") != "Origin" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("listed preflight = %d %v", r.status, h)
	}
	// An actual request from the listed origin can be read by the page.
	r = ts.authed(t, "GET", "/api/health/detail", "", "Origin", app)
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
		t.Fatalf("listed GET = %d %v", r.status, r.header)
	}
	// Unlisted origins, and every origin when none is configured, get no
	// CORS headers at all.
	closed := newTestServer(t, nil)
	for name, r := range map[string]response{
		"unlisted preflight":         preflight(ts, "http://evil.example", "/api/agents"),
		"unlisted GET":               ts.authed(t, "GET", "/api/health/detail", "", "Origin", "http://evil.example"),
		"scheme differs":             preflight(ts, "https://app.example:5173", "/api/agents"),
		"no cors_origins, preflight": preflight(closed, app, "/api/agents"),
		"no cors_origins, GET":       closed.authed(t, "GET", "/api/health/detail", "", "Origin", app),
	} {
		if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" || r.status == 204 {
			t.Errorf("%s: %d %v", name, r.status, r.header)
		}
	}
	// A preflight for a method the path does not serve gets its 405.
	r = ts.do(t, "OPTIONS", "/api/health", "", "Origin", app, "Access-Control-Request-Method", "DELETE")
	if r.status == 204 || r.header.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("preflight for an unserved method = %d %v", r.status, r.header)
	}
}

// With trusted_proxies, a request from a trusted peer is attributed to the
// client its X-Forwarded-For or Forwarded header names (rightmost untrusted
// hop) for rate limiting, audit source_ip and the loopback rule; without
// it, the same headers are ignored.
func TestTrustedProxyForwardedFor(t *testing.T) {
	t.Parallel()
	proxied := newTestServer(t, func(c *Config) { c.TrustedProxies = []string{"127.0.0.1/32"}; c.RateLimitPerMinute = 10 }, frozenLimiter)
	direct := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 10 }, frozenLimiter)
	put := func(ts *testServer, headers ...string) {
		t.Helper()
		h := append([]string{"Content-Type", "application/json"}, headers...)
		if r := ts.authed(t, "PUT", "/api/logs/level", `{"level":"info"}`, h...); r.status != 200 {
			t.Fatalf("PUT = %d %s", r.status, r.body)
		}
	}
	put(proxied, "X-Forwarded-For", "203.0.113.9")
	put(proxied, "X-Forwarded-For", "192.0.2.1, 198.51.100.7, 127.0.0.1") // spoofed left hop, trusted right hop
	put(proxied, "Forwarded", `for=192.0.2.60;proto=http, for="[2001:db8::17]:4711"`)
	put(direct, "X-Forwarded-For", "203.0.113.9")
	sources := func(ts *testServer) []string {
		var out []string
		for _, e := range ts.recent(t, 10) {
			if e.EventType == "api_request" {
				out = append([]string{e.SourceIP}, out...)
			}
		}
		return out
	}
	if got := strings.Join(sources(proxied), " "); got != "203.0.113.9 198.51.100.7 2001:db8::17" {
		t.Errorf("proxied source_ip = %s", got)
	}
	if got := strings.Join(sources(direct), " "); got != "127.0.0.1" {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer was used: %s", got)
	}

	// Rate limiting: each forwarded client has its own bucket (cost 1,
	// quota 10) behind the trusted proxy; the untrusted peer's headers
	// share the peer's bucket.
	spend := func(ts *testServer, xff string, n int) (last int) {
		for range n {
			last = ts.authed(t, "GET", "/api/health/detail", "", "X-Forwarded-For", xff).status
		}
		return last
	}
	if got := spend(proxied, "203.0.113.50", 12); got != 429 {
		t.Fatalf("client flood behind the proxy not limited: %d", got)
	}
	if got := spend(proxied, "203.0.113.51", 1); got != 200 {
		t.Fatalf("another client behind the proxy shares the flooder's bucket: %d", got)
	}
	if got := spend(direct, "203.0.113.50", 12); got != 429 {
		t.Fatalf("direct flood not limited: %d", got)
	}
	if got := spend(direct, "203.0.113.51", 1); got != 429 {
		t.Fatalf("a spoofed X-Forwarded-For escaped the peer's bucket: %d", got)
	}

	// The loopback rule (no API key): a proxied request counts as loopback
	// only when the client it names is on loopback.
	noKey := newTestServer(t, func(c *Config) { c.APIKey = ""; c.TrustedProxies = []string{"127.0.0.0/8"} })
	for xff, want := range map[string]int{"127.0.0.1": 200, "203.0.113.9": 401, "203.0.113.9, 127.0.0.1": 401,
		"127.0.0.1, 203.0.113.9": 401, "unknown": 401, "": 200} {
		h := []string{"X-Forwarded-For", xff}
		if xff == "" {
			h = nil
		}
		if r := noKey.do(t, "GET", "/api/health/detail", "", h...); r.status != want {
			t.Errorf("no key, trusted loopback proxy, X-Forwarded-For %q: %d, want %d", xff, r.status, want)
		}
	}
	if r := noKey.do(t, "GET", "/api/health/detail", "", "Forwarded", "for=203.0.113.9"); r.status != 401 {
		t.Errorf("Forwarded naming a remote client admitted as loopback: %d", r.status)
	}
}

func TestRightmostUntrustedHop(t *testing.T) {
	t.Parallel()
	s := &Server{}
	var err error
	if s.edge, err = newEdge(Config{TrustedProxies: []string{"10.0.0.0/8", "::1"}}); err != nil {
		t.Fatal(err)
	}
	peer := net.ParseIP("10.1.1.1")
	for _, c := range []struct {
		hops     []string
		ip       string
		loopback bool
	}{
		{[]string{"203.0.113.9"}, "203.0.113.9", false},
		{[]string{"1.2.3.4", "203.0.113.9", "10.0.0.2"}, "203.0.113.9", false},
		{[]string{"203.0.113.9:5555"}, "203.0.113.9", false},
		{[]string{"[2001:db8::1]:80"}, "2001:db8::1", false},
		{[]string{`"[2001:db8::1]"`}, "2001:db8::1", false},
		{[]string{"127.0.0.1"}, "127.0.0.1", true},
		{[]string{"::ffff:127.0.0.1"}, "127.0.0.1", true},
		{[]string{"10.0.0.3", "10.0.0.2"}, "10.0.0.3", false},
		{[]string{"203.0.113.9", "unknown"}, "10.1.1.1", false},
		{[]string{"127.0.0.1", "_hidden", "10.0.0.2"}, "10.0.0.2", false},
		{[]string{""}, "10.1.1.1", false},
	} {
		got := s.rightmostUntrusted(peer, c.hops)
		if got.ip.String() != c.ip || got.loopback != c.loopback {
			t.Errorf("%q: %s loopback=%v, want %s %v", c.hops, got.ip, got.loopback, c.ip, c.loopback)
		}
	}
	if got := forwardedFor(`for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https, by=10.0.0.1`); strings.Join(got, " ") !=
		`192.0.2.43 "[2001:db8:cafe::17]:4711" unknown` {
		t.Errorf("forwardedFor = %q", got)
	}
}

// A flood of bad keys (or missing ones) from one address spends its own
// bucket: the good key from the same address is still served.
func TestBadKeyFloodDoesNotLockOutTheGoodKey(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 10 }, frozenLimiter)
	last := 0
	for i := range 30 {
		h := []string{"Authorization", "Bearer wrong-key-0123456789abcdef"}
		if i%3 == 0 {
			h = nil
		}
		last = ts.do(t, "GET", "/api/health/detail", "", h...).status
	}
	if last != 429 {
		t.Fatalf("the bad-key flood itself was not limited: %d", last)
	}
	if r := ts.authed(t, "GET", "/api/health/detail", ""); r.status != 200 {
		t.Fatalf("good key after a bad-key flood from the same address: %d %s", r.status, r.body)
	}
	// Anonymous traffic on public routes has a bucket of its own too.
	for range 15 {
		ts.do(t, "GET", "/api/health", "")
	}
	if r := ts.authed(t, "GET", "/api/health/detail", ""); r.status != 200 {
		t.Fatalf("good key after an anonymous flood: %d", r.status)
	}
}

// SetRateLimits swaps the limiter while the server runs (config reload).
func TestSetRateLimits(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 3 }, frozenLimiter)
	for range 3 {
		ts.do(t, "GET", "/api/health", "")
	}
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 429 {
		t.Fatalf("quota 3: %d", r.status)
	}
	ts.SetRateLimits(RateLimits{PerMinute: 3, ExemptLoopback: true})
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
		t.Fatalf("exempt_loopback after SetRateLimits: %d", r.status)
	}
	ts.SetRateLimits(RateLimits{PerMinute: 3})
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 429 {
		t.Fatalf("same quota keeps the buckets: %d", r.status)
	}
	ts.SetRateLimits(RateLimits{PerMinute: 100})
	if r := ts.do(t, "GET", "/api/health", ""); r.status != 200 {
		t.Fatalf("new quota: %d", r.status)
	}
	ts.SetRateLimits(RateLimits{})
	var st securityStatus
	json.Unmarshal(ts.authed(t, "GET", "/api/security", "").body, &st)
	if st.Systems["gcra_rate_limiter"] != "inactive" {
		t.Fatalf("limiter off but reported %q", st.Systems["gcra_rate_limiter"])
	}
}

// 100 failed authentications from one address are one auth_failed entry
// with count 100, written by the timer or at shutdown, not 100 entries.
func TestFailedAuthIsAuditedInAggregate(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.RateLimitPerMinute = 0; c.AuthFailureInterval = time.Hour })
	for i := range 100 {
		h := []string{"X-API-Key", "wrong-key-0123456789abcdef"}
		if i%10 == 0 {
			h = nil
		}
		if r := ts.do(t, "GET", "/api/health/detail", "", h...); r.status != 401 {
			t.Fatalf("bad key: %d", r.status)
		}
	}
	ts.authFailures.flush()
	var got []audit.Entry
	for _, e := range ts.recent(t, 200) {
		if e.EventType == "auth_failed" {
			got = append(got, e)
		}
	}
	if len(got) != 1 || failureCount(t, got[0]) != 100 || got[0].SourceIP != "127.0.0.1" || got[0].Outcome != "denied" ||
		!strings.Contains(got[0].Details, "invalid API key x90") || !strings.Contains(got[0].Details, "missing credentials x10") ||
		!strings.Contains(got[0].Details, "first=") || !strings.Contains(got[0].Details, "last=") {
		t.Fatalf("auth_failed entries = %+v", got)
	}
	// The timer writes the counts without any flush call.
	timed := newTestServer(t, func(c *Config) { c.AuthFailureInterval = 20 * time.Millisecond })
	timed.do(t, "GET", "/api/health/detail", "")
	kerneltest.WaitFor(t, "an auth_failed entry written by the timer", func() bool {
		for _, e := range timed.recent(t, 10) {
			if e.EventType == "auth_failed" && failureCount(t, e) == 1 {
				return true
			}
		}
		return false
	})
}

// Shutdown writes the failures counted since the last entry.
func TestFailedAuthIsFlushedAtShutdown(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.AuthFailureInterval = time.Hour })
	for range 3 {
		ts.do(t, "GET", "/api/health/detail", "", "X-API-Key", "wrong-key-0123456789abcdef")
	}
	if err := ts.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	rec, err := ts.audit.Recent(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range rec.Entries {
		var e audit.Entry
		json.Unmarshal(raw, &e)
		if e.EventType == "auth_failed" && failureCount(t, e) == 3 {
			return
		}
	}
	t.Fatal("failed authentications counted before shutdown were not audited")
}

// A browser page on another origin cannot make a keyless fangd change
// state with a "simple" request (CORS would only hide the answer): writes
// marked cross-origin by Sec-Fetch-Site or Origin are refused unless the
// origin is in cors_origins.
func TestCrossOriginWritesAreRefused(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.APIKey = ""; c.CORSOrigins = []string{"http://app.example"} })
	ts.deps.LogLevel.SetLevel(zerolog.InfoLevel)
	host := strings.TrimPrefix(ts.url, "http://")
	put := func(headers ...string) response {
		return ts.do(t, "PUT", "/api/logs/level", `{"level":"trace"}`, append([]string{"Content-Type", "application/json"}, headers...)...)
	}
	for name, h := range map[string][]string{
		"foreign Origin":               {"Origin", "http://evil.example"},
		"null Origin":                  {"Origin", "null"},
		"same-site, other port":        {"Origin", "http://localhost:3000", "Sec-Fetch-Site", "same-site"},
		"cross-site, Origin like Host": {"Origin", "http://" + host, "Sec-Fetch-Site", "cross-site"},
	} {
		if r := put(h...); r.status != 403 || r.envelope(t).Code != "origin_not_allowed" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if got := ts.logLevel(t); got != "info" {
		t.Fatalf("a cross-origin write changed the log level to %q", got)
	}
	// Reads, same-origin writes, non-browser clients and listed origins pass.
	if r := ts.do(t, "GET", "/api/logs/level", "", "Origin", "http://evil.example"); r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("cross-origin read: %d %v", r.status, r.header)
	}
	for name, h := range map[string][]string{
		"no Origin":      nil,
		"same Origin":    {"Origin", "http://" + host},
		"Sec-Fetch none": {"Sec-Fetch-Site", "none"},
		"listed origin":  {"Origin", "http://app.example", "Sec-Fetch-Site", "cross-site"},
	} {
		if r := put(h...); r.status != 200 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
}

// Forwarding headers are written by whoever sends the request: parsing
// them never panics, and a client is loopback only if its address is.
func FuzzForwardedClient(f *testing.F) {
	for _, seed := range []string{"203.0.113.9", "1.1.1.1, 127.0.0.1", "[2001:db8::1]:80, unknown", `"[::1]"`, "_hidden", ",,,", "::ffff:127.0.0.1", "fe80::1%eth0"} {
		f.Add(seed, `for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"`)
	}
	s := &Server{}
	s.edge, _ = newEdge(Config{TrustedProxies: []string{"127.0.0.0/8", "10.0.0.0/8"}})
	peer := net.ParseIP("127.0.0.1")
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		for _, hops := range [][]string{strings.Split(xff, ","), forwardedFor(fwd)} {
			c := s.rightmostUntrusted(peer, hops)
			if c.ip == nil || (c.loopback && !c.ip.IsLoopback()) {
				t.Fatalf("%q: %+v", hops, c)
			}
		}
	})
}

// The Host check's parser never panics and admits only loopback names.
func FuzzHostName(f *testing.F) {
	for _, seed := range []string{"localhost:4545", "[::1]:80", "127.0.0.1", "evil.example.com", "[", "]:", "app.localhost.", "LOCALHOST"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, host string) {
		name := hostName([]byte(host))
		if loopbackName(name) {
			s := string(name)
			if a, err := netip.ParseAddr(s); err == nil && !a.Unmap().IsLoopback() {
				t.Fatalf("%q admitted as loopback", host)
			} else if err != nil && s != "localhost" && !strings.HasSuffix(s, ".localhost") {
				t.Fatalf("%q admitted as loopback", host)
			}
		}
	})
}
