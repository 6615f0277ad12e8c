package mcp

import (
	"context"
	"net"
	"net/url"
)

// These small interfaces are what the MCP domain needs from others. They
// are satisfied by the comms bus, the network policy and the agent
// runtime when those are wired in cmd/fangd; tests use fakes.

// URLPolicy is the outbound network policy (SSRF protection) applied to
// http and sse servers: CheckURL refuses a URL up front (a 400 when a
// server is added), DialContext is the only way the connection's HTTP
// client reaches the network, so the check also holds for the address a
// name resolves to at dial time and for the message endpoint a legacy SSE
// server announces.
type URLPolicy interface {
	Check(ctx context.Context, rawURL string) (*url.URL, error)
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// EventSink receives the domain's events (mcp.server.up, mcp.server.down,
// mcp.tools_changed) with source "mcp:<server>". Publish must not block.
type EventSink interface {
	Publish(eventType, source, target string, detail any)
}

// AgentDirectory answers which tools an agent may use. ToolFilter returns
// a NotFound domain error for an unknown agent.
type AgentDirectory interface {
	ToolFilter(ctx context.Context, agent string) (func(tool string) bool, error)
}

// AgentMessenger delivers a message to an agent and returns its reply.
type AgentMessenger interface {
	SendToAgent(ctx context.Context, from, to, message string) (string, error)
}

// ChannelSender sends a message to a chat through a channel adapter and
// returns the delivery status.
type ChannelSender interface {
	SendToChannel(ctx context.Context, from, channel, chatID, message string) (string, error)
}

// EventLog serves recent comms events as JSON objects, newest first.
type EventLog interface {
	RecentEvents(ctx context.Context, limit int) ([]map[string]any, error)
}
