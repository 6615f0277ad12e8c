package usage

// This file is the hand-written encoders of roll-ups and events and the
// event decoder (binary, and JSON for events stored before it).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fangd/fangd/store"
)

// encodeBatch turns a dirty set and the events of waiters into key/value
// pairs to store, all in one buffer (one allocation per batch, not one per
// key and value).
func encodeBatch(dirty dirtySet, waiters []settleWaiter) []kv {
	out := make([]kv, 0, len(dirty)+len(waiters))
	buf := make([]byte, 0, len(dirty)*112+len(waiters)*360)
	for dk, v := range dirty {
		start := len(buf)
		buf = dk.appendTo(buf)
		p := kv{key: buf[start:len(buf):len(buf)]}
		start = len(buf)
		switch x := v.(type) {
		case []byte:
			buf = append(buf, x...)
		case *Counters:
			buf = x.appendJSON(buf)
		case *agentTotal:
			buf = x.appendJSON(buf)
		case *latency:
			buf = x.appendJSON(buf)
		case nil:
			p.del = true
		default:
			panic(fmt.Sprintf("usage: no encoding for roll-up value %T", v))
		}
		if !p.del {
			p.val = buf[start:len(buf):len(buf)]
		}
		out = append(out, p)
	}
	for i := range waiters {
		e := &waiters[i].event
		start := len(buf)
		buf = append(buf, pEvent...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
		p := kv{key: buf[start:len(buf):len(buf)]}
		start = len(buf)
		buf = appendEventBinary(buf, e)
		p.val = buf[start:len(buf):len(buf)]
		out = append(out, p)
	}
	return out
}

// The hot path encodes by hand: encoding/json's reflection and time
// formatting were most of the ledger's CPU per event.

// MarshalJSON encodes counters with their stored field names.
func (c *Counters) MarshalJSON() ([]byte, error) { return c.appendJSON(make([]byte, 0, 96)), nil }

func (c *Counters) appendJSON(b []byte) []byte {
	return append(c.appendFields(append(b, '{')), '}')
}

func (c *Counters) appendFields(b []byte) []byte {
	b = append(b, `"in":`...)
	b = strconv.AppendInt(b, c.InputTokens, 10)
	b = append(b, `,"cached":`...)
	b = strconv.AppendInt(b, c.CachedInputTokens, 10)
	b = append(b, `,"out":`...)
	b = strconv.AppendInt(b, c.OutputTokens, 10)
	b = append(b, `,"cost":`...)
	b = strconv.AppendInt(b, c.CostNanos, 10)
	b = append(b, `,"req":`...)
	b = strconv.AppendInt(b, c.Requests, 10)
	b = append(b, `,"failed":`...)
	return strconv.AppendInt(b, c.Failed, 10)
}

// MarshalJSON encodes an agent's total (name and counters, flat).
func (a *agentTotal) MarshalJSON() ([]byte, error) { return a.appendJSON(make([]byte, 0, 128)), nil }

func (a *agentTotal) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = store.AppendJSONString(b, a.Name)
	b = append(b, ',')
	return append(a.Counters.appendFields(b), '}')
}

// appendJSON encodes a model's latency with its stored field names.
func (l *latency) appendJSON(b []byte) []byte {
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, l.N, 10)
	b = append(b, `,"sum":`...)
	b = strconv.AppendInt(b, l.Sum, 10)
	b = append(b, `,"min":`...)
	b = strconv.AppendInt(b, l.Min, 10)
	b = append(b, `,"max":`...)
	b = strconv.AppendInt(b, l.Max, 10)
	return append(b, '}')
}

// encodeEvent is json.Marshal(e) without reflection; json.Unmarshal reads
// it back into an Event.
func encodeEvent(e *Event) []byte { return appendEvent(make([]byte, 0, 320), e) }

func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"ts":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","agent_id":`...)
	b = store.AppendJSONString(b, e.AgentID)
	b = append(b, `,"agent_name":`...)
	b = store.AppendJSONString(b, e.AgentName)
	if e.SessionID != "" {
		b = append(b, `,"session_id":`...)
		b = store.AppendJSONString(b, e.SessionID)
	}
	b = append(b, `,"provider":`...)
	b = store.AppendJSONString(b, e.Provider)
	b = append(b, `,"model":`...)
	b = store.AppendJSONString(b, e.Model)
	for _, f := range []struct {
		name string
		v    int64
	}{{"input_tokens", e.InputTokens}, {"cached_input_tokens", e.CachedInputTokens}, {"cache_write_tokens", e.CacheWriteTokens},
		{"output_tokens", e.OutputTokens}, {"cost_nanos", e.CostNanos}, {"latency_ms", e.LatencyMS}} {
		b = append(b, ',', '"')
		b = append(b, f.name...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, f.v, 10)
	}
	b = append(b, `,"outcome":`...)
	b = store.AppendJSONString(b, e.Outcome)
	b = append(b, `,"pricing_known":`...)
	b = strconv.AppendBool(b, e.PricingKnown)
	if e.UsageEstimated {
		b = append(b, `,"usage_estimated":true`...)
	}
	if e.User != "" {
		b = append(b, `,"user":`...)
		b = store.AppendJSONString(b, e.User)
	}
	return append(b, '}')
}

// eventFormatBinary is the first byte of a binary-encoded event. Events
// were stored as JSON (first byte '{') before; decodeEvent reads both.
// eventFormatBinaryUser is the same with the user appended as a seventh
// string: an event without a user is still written in the first format,
// byte for byte as before.
const (
	eventFormatBinary     = 1
	eventFormatBinaryUser = 2
)

// appendEventBinary encodes e compactly: the format byte, the time (unix
// nanos), the strings length-prefixed, the counts as varints, and a flags
// byte. A third of the JSON's size: the event is most of the bytes a
// settlement writes, and Badger's cost (WAL, memtable, flushes,
// compaction) grows with bytes.
func appendEventBinary(b []byte, e *Event) []byte {
	format := byte(eventFormatBinary)
	if e.User != "" {
		format = eventFormatBinaryUser
	}
	b = append(b, format)
	b = binary.AppendVarint(b, e.Time.UnixNano())
	for _, s := range [...]string{e.AgentID, e.AgentName, e.SessionID, e.Provider, e.Model, e.Outcome} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if format == eventFormatBinaryUser {
		b = binary.AppendUvarint(b, uint64(len(e.User)))
		b = append(b, e.User...)
	}
	for _, v := range [...]int64{e.InputTokens, e.CachedInputTokens, e.CacheWriteTokens, e.OutputTokens, e.CostNanos, e.LatencyMS} {
		b = binary.AppendVarint(b, v)
	}
	var flags byte
	if e.PricingKnown {
		flags |= 1
	}
	if e.UsageEstimated {
		flags |= 2
	}
	return append(b, flags)
}

// decodeEvent reads a stored event in either format.
func decodeEvent(raw []byte, e *Event) error {
	if len(raw) > 0 && raw[0] == '{' {
		return json.Unmarshal(raw, e)
	}
	if len(raw) == 0 || (raw[0] != eventFormatBinary && raw[0] != eventFormatBinaryUser) {
		return errors.New("unknown event encoding")
	}
	b := raw[1:]
	bad := errors.New("truncated binary event")
	varint := func() (int64, bool) {
		v, n := binary.Varint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	nanos, ok := varint()
	if !ok {
		return bad
	}
	e.Time = time.Unix(0, nanos).UTC()
	strs := [...]*string{&e.AgentID, &e.AgentName, &e.SessionID, &e.Provider, &e.Model, &e.Outcome, &e.User}
	n := len(strs) - 1
	if raw[0] == eventFormatBinaryUser {
		n++
	}
	for _, dst := range strs[:n] {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return bad
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	for _, dst := range [...]*int64{&e.InputTokens, &e.CachedInputTokens, &e.CacheWriteTokens, &e.OutputTokens, &e.CostNanos, &e.LatencyMS} {
		if *dst, ok = varint(); !ok {
			return bad
		}
	}
	if len(b) != 1 {
		return bad
	}
	e.PricingKnown, e.UsageEstimated = b[0]&1 != 0, b[0]&2 != 0
	return nil
}
