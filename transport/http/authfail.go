package http

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
)

// authFailures audits failed authentications in aggregate: one auth_failed
// entry per source address per interval, with the count, the first and
// last time and the reasons. One synced entry per failure let a single
// client at the default rate limit grow the log by ~100 MB a day. The
// failures of the interval in progress are written by the timer, and by
// flush on shutdown; a kill -9 loses at most that interval's counts (no
// caller was promised they are on disk).
type authFailures struct {
	interval time.Duration
	write    func(audit.Event) error
	log      zerolog.Logger
	now      func() time.Time

	mu      sync.Mutex
	sources map[string]*failedSource
	// other counts the sources beyond maxFailureSources in one entry, so
	// a spray from many addresses cannot grow the map without bound.
	other *failedSource

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// maxFailureSources bounds the addresses tracked in one interval.
const maxFailureSources = 4096

type failedSource struct {
	count       int
	first, last time.Time
	reasons     map[string]int
	lastRequest string
	sources     int // for the "other" entry: how many addresses
}

func newAuthFailures(interval time.Duration, write func(audit.Event) error, log zerolog.Logger) *authFailures {
	if interval <= 0 {
		interval = time.Minute
	}
	a := &authFailures{interval: interval, write: write, log: log, now: time.Now,
		sources: map[string]*failedSource{}, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *authFailures) run() {
	defer close(a.done)
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush()
		case <-a.stop:
			return
		}
	}
}

// record counts one failure. request is "METHOD /path" (cut short: the
// path is the caller's); reason is one of the middleware's fixed strings.
func (a *authFailures) record(source, request, reason string) {
	if len(request) > 200 {
		request = request[:200] + "..."
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.sources[source]
	if f == nil {
		if len(a.sources) >= maxFailureSources {
			if a.other == nil {
				a.other = &failedSource{first: now, reasons: map[string]int{}}
			}
			f = a.other
			f.sources++
		} else {
			f = &failedSource{first: now, reasons: map[string]int{}}
			a.sources[source] = f
		}
	}
	f.count++
	f.last = now
	f.reasons[reason]++
	f.lastRequest = request
}

// flush writes one entry per source counted since the last flush.
func (a *authFailures) flush() {
	a.mu.Lock()
	sources, other := a.sources, a.other
	a.sources, a.other = map[string]*failedSource{}, nil
	a.mu.Unlock()
	ips := slices.Sorted(maps.Keys(sources))
	for _, ip := range ips {
		a.append(ip, sources[ip], "")
	}
	if other != nil {
		a.append("", other, fmt.Sprintf(" from %d more addresses", other.sources))
	}
}

func (a *authFailures) append(ip string, f *failedSource, extra string) {
	reasons := make([]string, 0, len(f.reasons))
	for r, n := range f.reasons {
		reasons = append(reasons, fmt.Sprintf("%s x%d", r, n))
	}
	sort.Strings(reasons)
	details := fmt.Sprintf("count=%d first=%s last=%s%s; %s; last request %s", f.count,
		f.first.UTC().Format(time.RFC3339), f.last.UTC().Format(time.RFC3339), extra,
		strings.Join(reasons, ", "), f.lastRequest)
	err := a.write(audit.Event{EventType: "auth_failed", Outcome: "denied", Actor: "anonymous",
		SourceIP: ip, Details: details})
	if err != nil {
		a.log.Error().Err(err).Int("count", f.count).Str("source_ip", ip).
			Msg("failed authentications could not be audited")
	}
}

// close stops the timer and writes what was counted since the last flush.
func (a *authFailures) close() {
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
		a.flush()
	})
}
