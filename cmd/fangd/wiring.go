package main

import (
	"context"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/channel"
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
