// Package mcp connects fangd to MCP servers and exposes fangd's own tools
// over MCP.
//
// Client side: the root actor "mcp" supervises one actor "mcp/<name>" per
// configured server. Each connection actor owns its session (stdio
// subprocess in a sandbox, streamable HTTP, or legacy SSE), its tool list,
// the pins of its tools and its health; it reconnects with the kernel's
// capped backoff and fails calls fast while down. The supervisor owns the
// set of definitions (config.toml plus those added through the API, kept in
// the store with their secrets in the vault) and the catalog.
//
// Server side (exposer.go): an MCP server offering fangd's built-in tools
// and every connected server's tools, for transport/http to mount at
// POST /mcp.
//
// The messages below are what the actors accept and answer; Manager wraps
// them for callers.
package mcp

import (
	"context"
	"encoding/json"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/mcp/stdio"
)

// ---- supervisor ("mcp") ----

// listServers asks for every server's view. Answer: []ServerView.
type listServers struct{}

// getServer asks for one server's view. Answer: ServerView or NotFound.
type getServer struct{ name string }

// addServer installs from the catalog or adds a raw spec. Answer:
// ServerView (the connection starts in the background), or an error:
// Invalid, NotFound (template), Conflict (name taken).
type addServer struct{ req AddRequest }

// updateServer replaces a server's spec and reconnects it. Answer:
// ServerView.
type updateServer struct {
	name string
	spec Spec
}

// removeServer stops a server and forgets it and its secrets. Answer:
// removed{}.
type removeServer struct{ name string }

type removed struct{}

// healthQuery asks for every server's health. Answer: []HealthEntry.
type healthQuery struct{}

// childOf asks for the connection actor of a server. Answer: *actor.PID.
type childOf struct{ name string }

// reload re-reads the catalog directory and config.toml (or, when given,
// takes servers as config.toml's servers). Answer: ReloadReply.
type reload struct {
	servers []Spec
	given   bool
}

// ReloadReply is the answer to a reload.
type ReloadReply struct {
	Status      string   `json:"status"`
	Added       []string `json:"added"`
	Removed     []string `json:"removed"`
	Reconnected []string `json:"reconnected"`
	Catalog     int      `json:"catalog_entries"`
}

// getCatalog asks for the catalog snapshot. Answer: catalogReply.
type getCatalog struct{}

type catalogReply struct {
	catalog   *Catalog
	installed map[string]bool
}

// serverReport is what a connection actor tells its supervisor whenever
// its state changes.
type serverReport struct {
	name  string
	state serverState
}

// ---- connection ("mcp/<name>") ----

// applySpec replaces the connection's spec: it drops the session and
// connects again with the new definition.
type applySpec struct{ spec Spec }

// callTool calls one tool (by its original name) on the server. The
// answer goes to reply, not to the sender: the call runs in a goroutine
// and the actor never waits for it.
type callTool struct {
	ctx   context.Context
	tool  string
	args  json.RawMessage
	reply chan callResult
}

type callResult struct {
	res *sdk.CallToolResult
	err error
}

// reconnectNow drops the session and connects at once, resetting the
// backoff. Answer (when the attempt ends): ReconnectReply.
type reconnectNow struct{}

// ReconnectReply is the answer to a reconnect.
type ReconnectReply struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	ToolCount int    `json:"tool_count"`
	Error     string `json:"error,omitempty"`
}

// acceptTools re-pins tools whose definition changed (all of them when
// tools is empty) and lifts their quarantine. Answer: ServerView... as
// []string of the accepted tools.
type acceptTools struct{ tools []string }

// AcceptReply is the answer to acceptTools.
type AcceptReply struct {
	ID       string   `json:"id"`
	Accepted []string `json:"accepted"`
}

// connectResult is the outcome of a connection attempt, sent by the
// goroutine that made it.
type connectResult struct {
	gen     uint64
	session *sdk.ClientSession
	proc    *stdio.Process
	tools   []*sdk.Tool
	err     error
}

// sessionEnded is sent when the session's connection closes.
type sessionEnded struct {
	gen uint64
	err error
}

// toolsChangedNotice is sent by the SDK's tools/list_changed handler.
type toolsChangedNotice struct{ gen uint64 }

// toolsListed is the outcome of a refresh after tools/list_changed.
type toolsListed struct {
	gen   uint64
	tools []*sdk.Tool
	err   error
}

// retryConnect fires when a backoff delay has passed.
type retryConnect struct{ gen uint64 }

// callDone tells the actor how a call ended, for health accounting.
type callDone struct {
	gen     uint64
	failure error // a transport failure or timeout; nil when the server answered
}

// serverState is a connection's externally visible state.
type serverState struct {
	Status    string
	LastOK    time.Time
	LastError string
	// LastErrorCode is the network error's code (transport/neterr) when
	// the last failure was one: host_not_found, connection_refused ...
	LastErrorCode       string
	ConsecutiveFailures int
	ReconnectAttempts   int
	ConnectedSince      time.Time
	Reconnecting        bool
	ToolsChanged        bool
	Tools               []ToolInfo
	Pid                 int
	ProtocolVersion     string
	ServerInfo          string
}
