package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/peer"
)

var _ channel.Agents = agent.ChatAgents{}

// approvalCommands lets chat users decide approvals with /approve and
// /reject (channel.Commands over approval.Approvals).
type approvalCommands struct{ a *approval.Approvals }

// Match claims /approve and /reject only while the policy names chats to
// decide from (it can change on reload); otherwise such text goes to the
// agent like any other.
func (c approvalCommands) Match(text string) bool {
	return len(c.a.Policy().Notify) > 0 && approval.IsCommand(text)
}

func (c approvalCommands) Handle(ctx context.Context, channelName string, m channel.Inbound) string {
	reply, _ := c.a.HandleChat(ctx, approval.ChatMessage{Channel: channelName, ChatID: m.ChatID,
		UserID: m.UserID, UserName: m.UserName, Text: m.Text})
	return reply
}

var _ channel.Commands = approvalCommands{}

// approvalNotifier posts approval requests and decisions to chats
// (approval.Notifier over channel.Service's durable outbox).
type approvalNotifier struct{ s *channel.Service }

func (n approvalNotifier) Post(ctx context.Context, channelName, chatID, text string) error {
	_, err := n.s.SendMessage(ctx, channelName, chatID, text, "approvals")
	return err
}

var _ approval.Notifier = approvalNotifier{}

// agentToolbox is the toolbox agents see: the MCP servers' tools and, when
// A2A is on, a2a_send to the external agents this daemon discovered. Both
// providers start after the agents (their server sides need the agents), so
// they are set late; until then agents are offered only what is set.
// Approval gating applies to every tool by name, a2a_send included.
type agentToolbox struct {
	m   atomic.Pointer[mcp.Manager]
	a2a atomic.Pointer[a2aTool]
	// ofp is the peer network when network_enabled: ofp_send.
	ofp atomic.Pointer[peer.Network]
}

// a2aTool is what the toolbox needs of the A2A service.
type a2aTool interface {
	CallTool(ctx context.Context, agentID string, raw json.RawMessage) (string, error)
}

func (t *agentToolbox) set(m *mcp.Manager) { t.m.Store(m) }

func (t *agentToolbox) setA2A(svc a2aTool) { t.a2a.Store(&svc) }

func (t *agentToolbox) Tools() []llm.Tool {
	var out []llm.Tool
	if m := t.m.Load(); m != nil {
		for _, i := range m.Tools() {
			server, _, _ := m.ToolHints(i.Name)
			out = append(out, llm.Tool{Name: i.Name, Description: i.Description, InputSchema: i.InputSchema, Server: server})
		}
	}
	if t.a2a.Load() != nil {
		out = append(out, llm.Tool{Name: a2a.ToolName, Description: a2a.ToolDescription, InputSchema: a2a.ToolSchema})
	}
	if t.ofp.Load() != nil {
		out = append(out, llm.Tool{Name: peer.ToolName, Description: peer.ToolDescription, InputSchema: peer.ToolSchema})
	}
	return out
}

func (t *agentToolbox) Call(ctx context.Context, inv agent.ToolInvocation) (agent.ToolOutput, error) {
	if inv.Tool == a2a.ToolName {
		svc := t.a2a.Load()
		if svc == nil {
			return agent.ToolOutput{}, kernel.Unavailable("A2A is not enabled")
		}
		text, err := (*svc).CallTool(ctx, inv.AgentID, inv.Arguments)
		if err != nil {
			// Bad arguments, unknown agents and failed peers are answers the
			// model can act on, not failures of the turn.
			return agent.ToolOutput{Text: err.Error(), IsError: true}, nil
		}
		return agent.ToolOutput{Text: text}, nil
	}
	if inv.Tool == peer.ToolName {
		n := t.ofp.Load()
		if n == nil {
			return agent.ToolOutput{}, kernel.Unavailable("the peer network is off (network_enabled)")
		}
		text, err := n.CallTool(ctx, inv.AgentID, inv.Arguments)
		if err != nil {
			return agent.ToolOutput{Text: err.Error(), IsError: true}, nil
		}
		return agent.ToolOutput{Text: text}, nil
	}
	m := t.m.Load()
	if m == nil {
		return agent.ToolOutput{}, kernel.Unavailable("MCP is not running")
	}
	res, err := m.CallTool(ctx, mcp.Caller{Via: "agent", AgentID: inv.AgentID, Actor: inv.Who.Actor, SourceIP: inv.Who.SourceIP}, inv.Tool, inv.Arguments)
	if err != nil {
		return agent.ToolOutput{}, err
	}
	return agent.ToolOutput{Text: toolText(res), IsError: res.IsError}, nil
}

// toolText flattens an MCP tool result for the model: its text parts, the
// structured content as JSON when there is no text, and a note for parts
// a text model cannot take.
func toolText(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		switch v := c.(type) {
		case *sdk.TextContent:
			b.WriteString(v.Text)
		case *sdk.ImageContent:
			fmt.Fprintf(&b, "[image %s, %d bytes]", v.MIMEType, len(v.Data))
		case *sdk.AudioContent:
			fmt.Fprintf(&b, "[audio %s, %d bytes]", v.MIMEType, len(v.Data))
		case *sdk.ResourceLink:
			fmt.Fprintf(&b, "[resource %s]", v.URI)
		case *sdk.EmbeddedResource:
			if v.Resource != nil && v.Resource.Text != "" {
				b.WriteString(v.Resource.Text)
			} else if v.Resource != nil {
				fmt.Fprintf(&b, "[resource %s]", v.Resource.URI)
			}
		}
	}
	if b.Len() == 0 && res.StructuredContent != nil {
		if raw, err := json.Marshal(res.StructuredContent); err == nil {
			b.Write(raw)
		}
	}
	return b.String()
}

var _ agent.Toolbox = (*agentToolbox)(nil)

// toolCatalog is every tool fangd offers, for the approval policy (what
// a tool is, so that only read-only ones run at once) and the agent
// manifest check: the agents' toolbox (MCP tools, a2a_send) and POST
// /mcp's built-ins.
type toolCatalog struct {
	box    *agentToolbox
	expose atomic.Pointer[mcp.Exposer]
}

func (c *toolCatalog) ToolHints(name string) (approval.ToolHints, bool) {
	if x := c.expose.Load(); x != nil {
		if ro, ok := x.BuiltinReadOnly(name); ok {
			return approval.ToolHints{ReadOnly: ro}, true
		}
	}
	if name == a2a.ToolName && c.box.a2a.Load() != nil {
		return approval.ToolHints{}, true
	}
	// Like a2a_send: it acts elsewhere, so never read-only.
	if name == peer.ToolName && c.box.ofp.Load() != nil {
		return approval.ToolHints{}, true
	}
	if m := c.box.m.Load(); m != nil {
		if server, ro, ok := m.ToolHints(name); ok {
			return approval.ToolHints{Server: server, ReadOnly: ro}, true
		}
	}
	return approval.ToolHints{}, false
}

func (c *toolCatalog) ToolNames() []string {
	seen := map[string]bool{}
	if x := c.expose.Load(); x != nil {
		for _, n := range x.BuiltinNames() {
			seen[n] = true
		}
	}
	for _, t := range c.box.Tools() {
		seen[t.Name] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (c *toolCatalog) ServerNames() []string {
	m := c.box.m.Load()
	if m == nil {
		return nil
	}
	views, err := m.Servers(context.Background())
	if err != nil {
		return nil
	}
	out := make([]string, len(views))
	for i, v := range views {
		out[i] = v.Name
	}
	return out
}

// Offered reports whether fangd offers the tool now.
func (c *toolCatalog) Offered(name string) bool {
	_, ok := c.ToolHints(name)
	return ok
}

// WaitingServer names the configured MCP server, not connected now, that
// name would be a tool of.
func (c *toolCatalog) WaitingServer(name string) string {
	m := c.box.m.Load()
	if m == nil {
		return ""
	}
	views, err := m.Servers(context.Background())
	if err != nil {
		return ""
	}
	for _, v := range views {
		if !v.Connected && strings.HasPrefix(name, mcp.Namespace(v.Name, "")) && len(name) > len(mcp.Namespace(v.Name, "")) {
			return v.Name
		}
	}
	return ""
}

var (
	_ approval.ToolCatalog = (*toolCatalog)(nil)
	_ agent.ToolDirectory  = (*toolCatalog)(nil)
)

// watchApprovalPatterns logs the approval policy's patterns that match no
// offered tool: once the MCP servers had a moment to connect, then after
// every change of the tool set (once it is quiet, so that servers
// connecting one by one do not warn midway).
func watchApprovalPatterns(a *approval.Approvals, changed <-chan struct{}, stop <-chan struct{}) {
	const first, quiet = 10 * time.Second, 2 * time.Second
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-changed:
			t.Reset(quiet)
		case <-t.C:
			a.CheckPatterns()
		}
	}
}
