package agent

import (
	"context"
	"strings"

	"github.com/google/uuid"
)

// ChatAgents lets chat channels talk to the agent runtime: it is the
// channel.Agents the daemon hands its channels (asserted in cmd/fangd's
// wiring, since this package does not import channel).
type ChatAgents struct{ Agents *Agents }

// Resolve names the agent a channel's agent_name refers to.
func (c ChatAgents) Resolve(_ context.Context, ref string) (string, string, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return "", "", err
	}
	ag, err := c.Agents.Get(context.Background(), r)
	if err != nil {
		return "", "", err
	}
	return ag.ID, ag.Name, nil
}

// Turn runs the turn in a session of its own per chat: the channel passes
// "channel:<name>:<chat_id>", which becomes a stable UUID under the agent.
func (c ChatAgents) Turn(_ context.Context, agentID, session, message string) (string, error) {
	ns, err := uuid.Parse(agentID)
	if err != nil {
		ns = uuid.NameSpaceURL
	}
	sid := uuid.NewSHA1(ns, []byte(session)).String()
	// The chat is the user its turns spend for ("<channel>:<chat_id>"):
	// per-user budgets then hold per person in a direct chat, per group in
	// a group (the runtime does not pass the sender of a group message).
	res, err := c.Agents.Send(context.Background(), Send{Ref: Ref{ID: agentID}, Text: message, SessionID: sid, From: session,
		Who: Who{Actor: session}, User: strings.TrimPrefix(session, "channel:")})
	if err != nil {
		return "", err
	}
	return res.Response, nil
}
