package comms

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecodeRecord: the event log is read back at start, so any stored
// bytes must decode or fail cleanly, keep the raw JSON as it was, and an
// event fangd wrote must read back as what was published.
func FuzzDecodeRecord(f *testing.F) {
	ts := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	f.Add(uint64(7), "message.routed", "agent:a", "agent:b", []byte(`{"kind":"task","route":"x"}`))
	f.Add(uint64(1), "channel.message.received", "channel:tg:1", "", []byte(`{"route":"channel_message"}`))
	f.Add(uint64(0), "", "", "", []byte(`null`))
	f.Add(uint64(1<<63), "x\u2028\"", "\x00", "\xff", []byte(`{"route":1}`))
	f.Fuzz(func(t *testing.T, id uint64, typ, source, target string, detail []byte) {
		// Any bytes at all, as a stored value.
		if r, err := decodeRecord(detail); err == nil && string(r.JSON) != string(detail) {
			t.Fatalf("raw JSON not kept: %q -> %q", detail, r.JSON)
		}
		if !json.Valid(detail) {
			return
		}
		raw := encodeEvent(id, ts, &publish{typ: typ, source: source, target: target}, json.RawMessage(detail))
		r, err := decodeRecord(raw)
		if err != nil {
			t.Fatalf("%s does not decode: %v", raw, err)
		}
		if !utf8.ValidString(typ) || !utf8.ValidString(source) || !utf8.ValidString(target) {
			return // JSON strings come back with U+FFFD for invalid bytes
		}
		if r.ID != id || r.Type != typ || r.Source != source || r.Target != target {
			t.Fatalf("round trip: %+v from %s", r, raw)
		}
		if r.Edge != "" && len(r.Edge) > len(detail) {
			t.Fatalf("edge %q longer than the detail", r.Edge)
		}
	})
}
