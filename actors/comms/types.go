package comms

import (
	"fmt"
	"regexp"
	"strings"
)

// TypeInfo describes one event type. docs/events.md lists the same table
// (a test keeps them in step).
type TypeInfo struct {
	Type        string
	Description string
	// Publisher is the part of fangd that publishes it; "planned: ..."
	// marks types reserved for subsystems that are not built yet.
	Publisher string
}

// Types is every event type fangd publishes or reserves. Subscriptions may
// only name these (or a prefix of them, or "*"), so a typo is a 400.
var Types = []TypeInfo{
	{"daemon.started", "the daemon started and is serving", "fangd serve"},
	{"daemon.stopping", "the daemon began a graceful shutdown", "fangd serve"},
	{"agent.spawned", "an agent was created", "agents"},
	{"agent.terminated", "an agent was deleted", "agents"},
	{"agent.message", "an agent completed a turn (from whom, tokens, cost; not the text)", "agents"},
	{"agent.error", "an agent's turn failed or was refused by a budget (outcome error or denied)", "agents"},
	{"message.routed", "the comms layer accepted a message for a target (an observed route)", "comms router"},
	{"message.delivered", "a routed message was answered by its agent or handed to its channel", "comms router"},
	{"message.failed", "a routed message could not be delivered", "comms router"},
	{"task.created", "a task was dispatched and assigned to an agent", "comms router"},
	{"task.completed", "a task's agent turn finished", "comms router"},
	{"task.failed", "a task's agent turn failed or was interrupted", "comms router"},
	{"loop.blocked", "the loop guard stopped a message chain bouncing between two agents", "comms router"},
	{"hook.wake", "POST /hooks/wake was called", "inbound hooks"},
	{"hook.agent", "POST /hooks/agent ran an agent turn", "inbound hooks"},
	{"webhook.delivery_failed", "one delivery attempt to an outbound webhook failed", "webhooks"},
	{"webhook.dead_lettered", "a message exhausted its retries and moved to the dead-letter list", "webhooks"},
	{"webhook.disabled", "an endpoint was disabled (410 Gone or persistent failure)", "webhooks"},
	{"channel.message.received", "a chat channel delivered an inbound message to its agent (a route: channel -> agent)", "channels"},
	{"channel.message.sent", "a message was sent out through a chat channel (a route when it says who sent it)", "channels"},
	{"approval.requested", "a request for human approval was made (an agent's gated tool call or POST /api/approvals)", "approvals"},
	{"approval.approved", "an approval was approved (API, chat, or low risk on timeout)", "approvals"},
	{"approval.rejected", "an approval was rejected (detail has the reason)", "approvals"},
	{"approval.expired", "an approval got no decision in time; the action was not run", "approvals"},
	{"approval.escalated", "an approval got no decision in time and was re-posted with more time (timeout_action = escalate)", "approvals"},
	{"approval.cancelled", "an approval was withdrawn (its agent was deleted or its turn cancelled)", "approvals"},
	{"budget.warning", "spend crossed a budget's alert threshold (once per window)", "usage ledger"},
	{"budget.exceeded", "a budget limit was reached or refused a call (once per window)", "usage ledger"},
	{"mcp.server.up", "an MCP server connected (detail: tool_count, protocol_version)", "MCP"},
	{"mcp.server.down", "an MCP server's connection was lost (detail: error)", "MCP"},
	{"mcp.tools_changed", "an MCP server changed tool definitions since they were pinned (detail: tools, quarantined)", "MCP"},
	{"peer.connected", "an OFP peer connected", "planned: peers"},
	{"peer.disconnected", "an OFP peer disconnected", "planned: peers"},
	{"a2a.task.received", "an A2A task arrived for a local agent (a route: a2a:<caller> -> agent)", "A2A"},
	{"a2a.task.sent", "an A2A task was sent to an external agent (a route: caller -> a2a:<external agent id>)", "A2A"},
}

var known = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range Types {
		m[t.Type] = true
	}
	return m
}()

var typeSyntax = regexp.MustCompile(`^[a-zA-Z0-9_]+(\.[a-zA-Z0-9_]+)*$`)

// KnownType reports whether t is a registered event type.
func KnownType(t string) bool { return known[t] }

// legacyAliases maps LibreFang's snake_case webhook event names onto
// fangd's types, so subscriptions written for LibreFang keep working.
var legacyAliases = map[string]string{
	"agent_spawned":     "agent.spawned",
	"agent_terminated":  "agent.terminated",
	"agent_stopped":     "agent.terminated",
	"agent_error":       "agent.error",
	"message_received":  "message.routed",
	"message_completed": "agent.message",
	"all":               "*",
}

// NormalizeFilter validates a subscription filter and returns its
// canonical form: "*", a known type, a prefix "agent.*" that covers at
// least one known type, or a LibreFang alias ("agent_spawned").
func NormalizeFilter(f string) (string, error) {
	f = strings.TrimSpace(f)
	if alias, ok := legacyAliases[f]; ok {
		return alias, nil
	}
	if f == "*" {
		return f, nil
	}
	if prefix, ok := strings.CutSuffix(f, ".*"); ok {
		if !typeSyntax.MatchString(prefix) {
			return "", fmt.Errorf("event filter %q is not a valid prefix", f)
		}
		for t := range known {
			if strings.HasPrefix(t, prefix+".") {
				return f, nil
			}
		}
		return "", fmt.Errorf("event filter %q matches no known event type", f)
	}
	if !known[f] {
		return "", fmt.Errorf("unknown event type %q (see docs/events.md)", f)
	}
	return f, nil
}

// Match reports whether event type t passes filter f ("" and "*" match all).
func Match(f, t string) bool {
	switch {
	case f == "" || f == "*":
		return true
	case strings.HasSuffix(f, ".*"):
		return strings.HasPrefix(t, f[:len(f)-1])
	}
	return f == t
}

// MatchAny reports whether t passes any of filters.
func MatchAny(filters []string, t string) bool {
	for _, f := range filters {
		if Match(f, t) {
			return true
		}
	}
	return false
}
