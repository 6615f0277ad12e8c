// Package httpretry reads the retry hints HTTP servers send with a 429 or
// 503 (RFC 9110 §10.2.3 Retry-After), for every fangd client that talks to
// a third party: the webhook engine, the LLM clients and the channel
// adapters. One parser, so that one cap holds everywhere.
package httpretry

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxWait is the longest a server's hint may push a retry out unless the
// caller names another limit. A hostile or buggy "Retry-After: 999999999"
// would otherwise park a channel for decades. Ten minutes is longer than any
// documented rate-limit window of the chat platforms fangd talks to
// (Telegram, Slack, Discord and the Bot Connector ask for seconds to a
// minute); a server that really needs longer answers the next try with
// another 429 and a fresh hint, so capping costs one request, not
// correctness.
const MaxWait = 10 * time.Minute

// Parse reads a Retry-After value: delay-seconds ("120") or an HTTP date
// ("Wed, 21 Oct 2015 07:28:00 GMT", relative to now). It returns 0 when v
// is empty, malformed, not positive or in the past, and at most MaxWait.
func Parse(v string, now time.Time) time.Duration { return ParseUpTo(v, now, MaxWait) }

// ParseUpTo is Parse with another cap, for callers whose retries are
// counted against a schedule of hours (the webhook outbox) or that only
// pass the hint on (the LLM clients): for them a long hint is honest
// information, and capping it early would burn an attempt.
func ParseUpTo(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Compare in seconds first: secs*time.Second overflows int64
		// for hints past about 292 years.
		if secs >= int64(limit/time.Second) {
			return limit
		}
		return time.Duration(secs) * time.Second
	} else if errors.Is(err, strconv.ErrRange) && v[0] != '-' {
		return limit // more digits than int64 holds: still "very long"
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return 0 // "1.5" or "-3": not delay-seconds, and no date either
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, limit)
		}
	}
	return 0
}

// After is Parse of h's Retry-After header, or, when that is absent or
// unusable, of the first of the fallback headers that parses (platforms
// such as Mattermost send X-Ratelimit-Reset in seconds instead).
func After(h http.Header, now time.Time, fallback ...string) time.Duration {
	if d := Parse(h.Get("Retry-After"), now); d > 0 {
		return d
	}
	for _, k := range fallback {
		if d := Parse(h.Get(k), now); d > 0 {
			return d
		}
	}
	return 0
}
