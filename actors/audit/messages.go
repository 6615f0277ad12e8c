// Package audit keeps fangd's tamper-evident audit log: an append-only
// SHA-256 hash chain written by one actor that group-commits appends from
// many callers, with an anchor file outside the store that catches a
// truncated tail. The recipe is in docs/audit.md.
package audit

// Event is what a caller asks to record. Never put a secret in any field.
type Event struct {
	EventType string // e.g. "api_request", "auth_failed", "agent_spawned"
	AgentID   string // "system" when empty
	Details   string
	Outcome   string // "ok", "denied", "error", ...
	Actor     string // who acted: "api_key", "loopback", a user or device id
	SourceIP  string
}

// Entry is one link of the chain, as stored and as served.
type Entry struct {
	ID        uint64 `json:"id"`
	Timestamp string `json:"timestamp"`
	EventType string `json:"event_type"`
	AgentID   string `json:"agent_id"`
	Details   string `json:"details"`
	Outcome   string `json:"outcome"`
	Actor     string `json:"actor"`
	SourceIP  string `json:"source_ip"`
	PrevHash  string `json:"prev_hash"`
	Hash      string `json:"hash"`
}

// appendRequest asks the writer to chain and durably store events, as
// consecutive entries in their order. The writer answers on done once all
// of them are on disk (or failed): they are one item of the group commit,
// so they are in the same synced transaction.
type appendRequest struct {
	events []Event
	one    [1]Event // events' array for Log.Append
	done   chan appendResult
	// accept marks an `audit accept` (Log.Accept): once the entry is
	// durable the writer re-anchors on it and degraded mode ends.
	accept bool
}

type appendResult struct {
	entries []Entry
	err     error
}

// Recent asks for the newest committed entries, newest first.
type Recent struct{ Limit int }

// RecentReply is the answer to Recent. Entries holds each entry's stored
// JSON, so serving it costs no re-encoding; Items the same entries with
// LibreFang's names for three fields added (seq, action, detail), built
// once per entry. Tip is the committed chain's tip hash.
type RecentReply struct {
	Entries [][]byte
	Items   [][]byte
	Total   uint64
	Tip     string
}

// Snapshot asks for the committed chain's length and tip.
type Snapshot struct{}

// SnapshotReply is the answer to Snapshot.
type SnapshotReply struct {
	Length uint64
	Tip    string
}
