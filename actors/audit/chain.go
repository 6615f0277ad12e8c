package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Genesis is the prev_hash of entry 1.
var Genesis = strings.Repeat("0", 64)

const sep = 0x1F

// Hash computes an entry's hash: SHA-256 over its fields in a fixed order,
// each as 0x1F "key=" value, hex-encoded lowercase. See docs/audit.md.
func Hash(e *Entry) string {
	// On the stack for the usual entry: the writer hashes every append.
	var stack [512]byte
	buf := stack[:0]
	field := func(key, val string) {
		buf = append(buf, sep)
		buf = append(buf, key...)
		buf = append(buf, '=')
		buf = append(buf, val...)
	}
	// The id's digits go straight into buf, and the hex below is encoded
	// on the stack: their strings were two of an append's allocations.
	buf = strconv.AppendUint(append(buf, sep, 'i', 'd', '='), e.ID, 10)
	field("timestamp", e.Timestamp)
	field("event_type", e.EventType)
	field("agent_id", e.AgentID)
	field("details", e.Details)
	field("outcome", e.Outcome)
	field("actor", e.Actor)
	field("source_ip", e.SourceIP)
	field("prev_hash", e.PrevHash)
	sum := sha256.Sum256(buf)
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], sum[:])
	return string(hexSum[:])
}

// clean removes the field separator from a value so that no field can
// forge the boundary of the next one.
func clean(s string) string {
	if strings.IndexByte(s, sep) < 0 {
		return s
	}
	return strings.ReplaceAll(s, string(rune(sep)), "\uFFFD")
}
