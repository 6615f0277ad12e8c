package main

import (
	"context"

	"github.com/fangd/fangd/actors/agent"
)

// agentTools lets the MCP server ask the agent runtime which tools an agent
// may use (its manifest's tools, for X-Fangd-Agent-Id) and message an
// agent (agent_send).
type agentTools struct{ agents *agent.Agents }

func (t agentTools) ToolFilter(_ context.Context, ref string) (func(string) bool, error) {
	r, err := agent.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	a, err := t.agents.Get(r)
	if err != nil {
		return nil, err
	}
	allowed := make(map[string]bool, len(a.Tools))
	for _, name := range a.Tools {
		allowed[name] = true
	}
	return func(tool string) bool { return allowed[tool] }, nil
}

func (t agentTools) SendToAgent(_ context.Context, from, to, message string) (string, error) {
	r, err := agent.ParseRef(to)
	if err != nil {
		return "", err
	}
	if from != "mcp" {
		from = "agent:" + from
	}
	res, err := t.agents.Send(agent.Send{Ref: r, Text: message, From: from, Who: agent.Who{Actor: "mcp"}})
	if err != nil {
		return "", err
	}
	return res.Response, nil
}
