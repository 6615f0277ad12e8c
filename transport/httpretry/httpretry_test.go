package httpretry

import (
	"net/http"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"   ", 0},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"7", 7 * time.Second},
		{" 30 ", 30 * time.Second},
		{"599", 599 * time.Second},
		{"600", MaxWait},
		// A hostile or buggy hint must not park a channel for years.
		{"999999999", MaxWait},
		{"99999999999999999999", MaxWait}, // overflows int64
		{date(90 * time.Second), 90 * time.Second},
		{date(-time.Minute), 0},
		{date(48 * time.Hour), MaxWait},
	} {
		if got := Parse(tc.in, now); got != tc.want {
			t.Errorf("Parse(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseUpToKeepsTheCallersCap(t *testing.T) {
	now := time.Now()
	if got := ParseUpTo("3600", now, 24*time.Hour); got != time.Hour {
		t.Fatalf("an hour under a day's cap: %v", got)
	}
	if got := ParseUpTo("999999999", now, 24*time.Hour); got != 24*time.Hour {
		t.Fatalf("hostile under a day's cap: %v", got)
	}
}

func TestAfterFallsBackToPlatformHeaders(t *testing.T) {
	now := time.Now()
	h := http.Header{}
	h.Set("X-Ratelimit-Reset", "4")
	if got := After(h, now, "X-Ratelimit-Reset"); got != 4*time.Second {
		t.Fatalf("fallback: %v", got)
	}
	h.Set("Retry-After", "2")
	if got := After(h, now, "X-Ratelimit-Reset"); got != 2*time.Second {
		t.Fatalf("Retry-After first: %v", got)
	}
	if got := After(http.Header{}, now); got != 0 {
		t.Fatalf("absent: %v", got)
	}
}
