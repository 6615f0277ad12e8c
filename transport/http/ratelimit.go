package http

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// RateLimits is the limiter's whole configuration, swapped as one value
// (SetRateLimits) so that a config reload can change it while requests run.
type RateLimits struct {
	// PerMinute is the GCRA quota of each bucket; 0 turns the limiter off.
	PerMinute int
	// ExemptLoopback lets loopback clients bypass the limiter.
	ExemptLoopback bool
}

// limiter is the RateLimits in force and their buckets (nil when off).
type limiter struct {
	RateLimits
	g *gcra
}

// SetRateLimits puts l in force. Buckets carry over when the quota is
// unchanged; a new quota starts every bucket full.
func (s *Server) SetRateLimits(l RateLimits) {
	next := &limiter{RateLimits: l}
	old := s.limits.Load()
	if old != nil && old.PerMinute == l.PerMinute {
		next.g = old.g
	} else if l.PerMinute > 0 {
		next.g = newGCRA(l.PerMinute)
		if old != nil && old.g != nil {
			next.g.now = old.g.now // a test's clock stays in force
		}
	}
	s.limits.Store(next)
}

// Rate-limit buckets. A request spends cells from exactly one bucket,
// chosen by what it proved, so that traffic in one class cannot starve
// another from the same address (a shared NAT or proxy):
//   - a valid credential (API key, A2A peer token): its identity at the
//     client address, so a flood of bad keys or anonymous requests from
//     the same address leaves the key's bucket untouched;
//   - a failed authentication: its own bucket per client address, which
//     caps key guessing without locking out the good key;
//   - everything else (public routes, loopback callers with no API key,
//     CORS preflights): the client address.
func bucketKey(ip, actor string, failed bool) string {
	switch {
	case failed:
		return "auth_failed|" + ip
	case actor == "api_key" || strings.HasPrefix(actor, "peer:"):
		return actor + "|" + ip
	}
	return ip
}

// gcra is a Generic Cell Rate Algorithm limiter keyed by client: each key
// has a theoretical arrival time (TAT). A request of cost c is allowed when
// max(TAT, now) + c*T - now <= burst*T, where T is the emission interval.
// With perMinute cells and a burst of perMinute, it is the same quota as
// LibreFang's governor::Quota::per_minute.
type gcra struct {
	interval time.Duration
	burst    time.Duration
	now      func() time.Time
	seed     maphash.Seed
	shards   [32]gcraShard
}

type gcraShard struct {
	mu      sync.Mutex
	tat     map[string]int64
	inserts int
}

func newGCRA(perMinute int) *gcra {
	g := &gcra{
		interval: time.Minute / time.Duration(perMinute),
		burst:    time.Minute,
		now:      time.Now,
		seed:     maphash.MakeSeed(),
	}
	for i := range g.shards {
		g.shards[i].tat = map[string]int64{}
	}
	return g
}

// allow spends cost cells for key. When refused it returns how long until
// the request would be allowed.
func (g *gcra) allow(key string, cost int) (bool, time.Duration) {
	now := g.now().UnixNano()
	sh := &g.shards[maphash.String(g.seed, key)%uint64(len(g.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	tat := max(sh.tat[key], now)
	next := tat + int64(cost)*int64(g.interval)
	if over := next - now - int64(g.burst); over > 0 {
		return false, time.Duration(over)
	}
	sh.tat[key] = next
	if sh.inserts++; sh.inserts >= 4096 {
		sh.sweep(now)
	}
	return true, 0
}

// sweep forgets keys whose bucket is full again; they behave exactly as
// keys never seen.
func (sh *gcraShard) sweep(now int64) {
	sh.inserts = 0
	for k, tat := range sh.tat {
		if tat <= now {
			delete(sh.tat, k)
		}
	}
}

// routeCost is how many cells a request spends, after LibreFang's
// operation_cost table: cheap reads cost little, LLM turns and spawns a lot.
func routeCost(method, path string) int {
	path = strings.TrimPrefix(path, "/api/v1")
	path = strings.TrimPrefix(path, "/api")
	get := method == "GET" || method == "HEAD"
	switch {
	case path == "/health" || path == "/health/detail" || path == "/ready" || path == "/version":
		return 1
	case get && (path == "/status" || path == "/providers" || path == "/models" || path == "/security"):
		return 1
	case get && (path == "/agents" || path == "/peers" || path == "/config" || path == "/channels"):
		return 2
	case get && strings.HasPrefix(path, "/usage"):
		return 3
	case get && strings.HasPrefix(path, "/audit"):
		return 5
	case method == "PATCH" && strings.HasPrefix(path, "/agents/"):
		return 10
	case method == "POST" && strings.Contains(path, "/message"):
		return 30
	case method == "POST" && (path == "/agents" || path == "/pairing/complete"):
		return 50
	case method == "POST" && strings.Contains(path, "/run"):
		return 100
	}
	return 5
}
