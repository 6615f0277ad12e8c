package main

import (
	"context"
	"encoding/json"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/comms"
)

// agentTools lets the MCP server ask the agent runtime which tools an agent
// may use: its manifest's tools, for X-Fangd-Agent-Id.
type agentTools struct{ agents *agent.Agents }

func (t agentTools) ToolFilter(_ context.Context, ref string) (func(string) bool, error) {
	r, err := agent.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	a, err := t.agents.Get(context.Background(), r)
	if err != nil {
		return nil, err
	}
	allowed := make(map[string]bool, len(a.Tools))
	for _, name := range a.Tools {
		allowed[name] = true
	}
	return func(tool string) bool { return allowed[tool] }, nil
}

// commsTools routes the MCP server's messaging tools through the comms
// router, so that they are observed routes (topology), pass the loop
// guard and produce message events like any other message, and serves
// comms_events from the bus.
type commsTools struct {
	router *comms.Router
	bus    *comms.Bus
}

// SendToAgent backs agent_send.
func (t commsTools) SendToAgent(ctx context.Context, from, to, message string) (string, error) {
	res, err := t.router.Send(ctx, from, "agent:"+to, message)
	if err != nil {
		return "", err
	}
	if res.Response != nil {
		return *res.Response, nil
	}
	return res.Status, nil
}

// SendToChannel backs channel_send.
func (t commsTools) SendToChannel(ctx context.Context, from, channel, chatID, message string) (string, error) {
	res, err := t.router.Send(ctx, from, "channel:"+channel+":"+chatID, message)
	if err != nil {
		return "", err
	}
	out, _ := json.Marshal(map[string]string{"message_id": res.MessageID, "status": res.Status, "to": res.To})
	return string(out), nil
}

// RecentEvents backs comms_events: the bus's newest events as stored.
func (t commsTools) RecentEvents(ctx context.Context, limit int) ([]map[string]any, error) {
	r, err := t.bus.Query(ctx, comms.Query{Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(r.Events))
	for _, rec := range r.Events {
		var ev map[string]any
		if err := json.Unmarshal(rec.JSON, &ev); err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}
