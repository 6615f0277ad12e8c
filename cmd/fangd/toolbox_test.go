package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/kernel"
)

type fakeA2ATool struct {
	gotAgent string
	gotArgs  string
	answer   string
	err      error
}

func (f *fakeA2ATool) CallTool(_ context.Context, agentID string, raw json.RawMessage) (string, error) {
	f.gotAgent, f.gotArgs = agentID, string(raw)
	return f.answer, f.err
}

func TestAgentToolboxOffersAndRoutesA2ASend(t *testing.T) {
	var box agentToolbox
	if len(box.Tools()) != 0 {
		t.Fatalf("tools offered before anything is set: %+v", box.Tools())
	}
	_, err := box.Call(context.Background(), agent.ToolInvocation{Tool: a2a.ToolName})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindUnavailable {
		t.Fatalf("a2a_send with A2A off: %v", err)
	}
	fake := &fakeA2ATool{answer: `{"status":"completed","answer":"hi"}`}
	box.setA2A(fake)
	tools := box.Tools()
	if len(tools) != 1 || tools[0].Name != a2a.ToolName || !json.Valid(tools[0].InputSchema) {
		t.Fatalf("tools = %+v", tools)
	}
	out, err := box.Call(context.Background(), agent.ToolInvocation{AgentID: "agent-1", Tool: a2a.ToolName,
		Arguments: json.RawMessage(`{"agent":"peer","message":"hello"}`)})
	if err != nil || out.IsError || out.Text != fake.answer || fake.gotAgent != "agent-1" || fake.gotArgs != `{"agent":"peer","message":"hello"}` {
		t.Fatalf("call = %+v %v (fake saw %q %q)", out, err, fake.gotAgent, fake.gotArgs)
	}
	fake.err = errors.New("a2a_send: unknown agent \"nope\"")
	out, err = box.Call(context.Background(), agent.ToolInvocation{AgentID: "agent-1", Tool: a2a.ToolName, Arguments: json.RawMessage(`{}`)})
	if err != nil || !out.IsError || out.Text != fake.err.Error() {
		t.Fatalf("failed call should be an error the model sees: %+v %v", out, err)
	}
	// Other tools still go to MCP, which is not running here.
	if _, err := box.Call(context.Background(), agent.ToolInvocation{Tool: "mcp_x_y"}); kernel.AsError(err) == nil {
		t.Fatalf("MCP tool without MCP: %v", err)
	}
}
