package usage

import (
	"reflect"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecodeEvent: stored events are read back after crashes and
// upgrades, so any bytes must decode or fail cleanly (no panic, no huge
// allocation from a length field), and what decodes must survive both
// encoders unchanged.
func FuzzDecodeEvent(f *testing.F) {
	e := &Event{Time: time.Date(2026, 12, 7, 3, 0, 0, 123, time.UTC), AgentID: "a1", AgentName: "n", SessionID: "s",
		Provider: "p", Model: "m", InputTokens: 10, CachedInputTokens: 2, CacheWriteTokens: 1, OutputTokens: 5,
		CostNanos: -3, LatencyMS: 40, Outcome: "ok", PricingKnown: true, UsageEstimated: true}
	f.Add(appendEventBinary(nil, e))
	f.Add(encodeEvent(e))
	withUser := *e
	withUser.User = "telegram:42"
	f.Add(appendEventBinary(nil, &withUser))
	f.Add(encodeEvent(&withUser))
	f.Add([]byte{eventFormatBinary})
	f.Add([]byte{eventFormatBinary, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte(`{"ts":"x"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got Event
		if err := decodeEvent(raw, &got); err != nil {
			return
		}
		n := len(got.AgentID) + len(got.AgentName) + len(got.SessionID) + len(got.Provider) + len(got.Model) + len(got.Outcome) + len(got.User)
		if n > len(raw) {
			t.Fatalf("%d bytes of strings from %d bytes", n, len(raw))
		}
		got.Time = got.Time.UTC()
		// The binary format holds unix nanoseconds (years 1678-2262): it
		// is written only for new events, never for old JSON ones.
		if nanos := got.Time.UnixNano(); time.Unix(0, nanos).Equal(got.Time) {
			var bin Event
			if err := decodeEvent(appendEventBinary(nil, &got), &bin); err != nil || !reflect.DeepEqual(bin, got) {
				t.Fatalf("binary round trip: %+v -> %+v (%v)", got, bin, err)
			}
		}
		for _, s := range []string{got.AgentID, got.AgentName, got.SessionID, got.Provider, got.Model, got.Outcome, got.User} {
			if !utf8.ValidString(s) {
				return // JSON carries text only: invalid UTF-8 comes back as U+FFFD
			}
		}
		if y := got.Time.Year(); y < 0 || y > 9999 {
			return // RFC 3339 has four-digit years
		}
		var js Event
		if err := decodeEvent(encodeEvent(&got), &js); err != nil || !reflect.DeepEqual(js, got) {
			t.Fatalf("JSON round trip: %+v -> %s -> %+v (%v)", got, encodeEvent(&got), js, err)
		}
	})
}
