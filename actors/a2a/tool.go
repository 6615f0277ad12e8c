package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// ToolName is the tool local agents use to ask external A2A agents.
const ToolName = "a2a_send"

// ToolDescription tells the model what the tool does.
const ToolDescription = "Send a message to an external A2A agent that this fangd has discovered, wait for its answer and return it. " +
	"Name the agent by its id or name (GET /api/a2a/agents lists them). Pass context_id from a previous answer to continue that conversation."

// ToolSchema is the JSON schema of the tool's arguments.
var ToolSchema = json.RawMessage(`{"type":"object","properties":{` +
	`"agent":{"type":"string","description":"id or name of the external agent"},` +
	`"message":{"type":"string","description":"the text to send"},` +
	`"context_id":{"type":"string","description":"optional: continue an earlier conversation with this agent"}},` +
	`"required":["agent","message"],"additionalProperties":false}`)

// ToolArgs are the tool's arguments.
type ToolArgs struct {
	Agent     string `json:"agent"`
	Message   string `json:"message"`
	ContextID string `json:"context_id,omitempty"`
}

// ToolResult is what the tool returns to the model (as JSON text).
type ToolResult struct {
	TaskID    string `json:"task_id"`
	Status    string `json:"status"`
	Answer    string `json:"answer,omitempty"`
	ContextID string `json:"context_id,omitempty"`
	Error     string `json:"error,omitempty"`
}

// toolTimeout bounds one tool call when the caller's context has no deadline.
const toolTimeout = 5 * time.Minute

// CallTool runs a2a_send for the local agent agentID: it creates an
// outbound task (visible in GET /api/a2a/tasks/{id}/status, owned by
// "agent:<id>"), waits for the peer's final answer and returns it as JSON.
// Bad arguments and unknown agents are errors the model can read.
func (s *Service) CallTool(ctx context.Context, agentID string, raw json.RawMessage) (string, error) {
	var args ToolArgs
	ctx, cancel, err := kernel.StartToolCall(ctx, ToolName, raw, &args, toolTimeout)
	defer cancel()
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(args.Agent) == "" || strings.TrimSpace(args.Message) == "" {
		return "", errors.New("a2a_send: agent and message are required")
	}
	ctx = context.WithValue(ctx, CallerKey, Caller{Name: "agent:" + agentID})
	msg := &a2a.Message{ID: uuid.NewString(), Role: a2a.MessageRoleUser, Parts: a2a.ContentParts{a2a.NewTextPart(args.Message)}}
	receipt, _, err := s.SendOutbound(ctx, OutboundRequest{AgentRef: args.Agent, Message: msg, ContextID: args.ContextID})
	if err != nil {
		return "", fmt.Errorf("a2a_send: %s", err.Error())
	}
	snap, err := s.WaitOutbound(ctx, receipt.TaskID)
	if err != nil {
		return "", fmt.Errorf("a2a_send: %s", err.Error())
	}
	st := snap.Outbound()
	res := ToolResult{TaskID: st.TaskID, Status: st.Status, ContextID: st.ContextID, Error: st.Error}
	if st.Result != nil {
		var texts []string
		for _, p := range st.Result.Parts {
			if p.Text != nil {
				texts = append(texts, *p.Text)
			} else if len(p.Data) > 0 {
				texts = append(texts, string(p.Data))
			}
		}
		res.Answer = strings.Join(texts, "\n")
	}
	if !snap.Terminal() {
		res.Error = "the agent has not answered yet; check GET /api/a2a/tasks/" + st.TaskID + "/status later"
	}
	out, err := json.Marshal(res)
	return string(out), err
}
