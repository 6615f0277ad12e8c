package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/mcp"
)

// channelAgents lets chat channels talk to the agent runtime
// (channel.Agents over agent.Agents).
type channelAgents struct{ a *agent.Agents }

func (c channelAgents) Resolve(_ context.Context, ref string) (string, string, error) {
	r, err := agent.ParseRef(ref)
	if err != nil {
		return "", "", err
	}
	ag, err := c.a.Get(r)
	if err != nil {
		return "", "", err
	}
	return ag.ID, ag.Name, nil
}

// Turn runs the turn in a session of its own per chat: the channel passes
// "channel:<name>:<chat_id>", which becomes a stable UUID under the agent.
func (c channelAgents) Turn(_ context.Context, agentID, session, message string) (string, error) {
	ns, err := uuid.Parse(agentID)
	if err != nil {
		ns = uuid.NameSpaceURL
	}
	sid := uuid.NewSHA1(ns, []byte(session)).String()
	res, err := c.a.Send(agent.Send{Ref: agent.Ref{ID: agentID}, Text: message, SessionID: sid, From: session,
		Who: agent.Who{Actor: session}})
	if err != nil {
		return "", err
	}
	return res.Response, nil
}

var _ channel.Agents = channelAgents{}

// approvalCommands lets chat users decide approvals with /approve and
// /reject (channel.Commands over approval.Approvals).
type approvalCommands struct{ a *approval.Approvals }

func (c approvalCommands) Match(text string) bool { return approval.IsCommand(text) }

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

// mcpTools lets agents call the MCP servers' tools (agent.Toolbox over
// mcp.Manager). The manager starts after the agents (its server side needs
// them), so it is set late; until then agents are offered no tools.
type mcpTools struct{ m atomic.Pointer[mcp.Manager] }

func (t *mcpTools) set(m *mcp.Manager) { t.m.Store(m) }

func (t *mcpTools) Tools() []llm.Tool {
	m := t.m.Load()
	if m == nil {
		return nil
	}
	infos := m.Tools()
	out := make([]llm.Tool, 0, len(infos))
	for _, i := range infos {
		out = append(out, llm.Tool{Name: i.Name, Description: i.Description, InputSchema: i.InputSchema})
	}
	return out
}

func (t *mcpTools) Call(ctx context.Context, inv agent.ToolInvocation) (agent.ToolOutput, error) {
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

var _ agent.Toolbox = (*mcpTools)(nil)
