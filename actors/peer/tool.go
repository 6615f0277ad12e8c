package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fangd/fangd/actors/kernel"
)

// ToolName is the tool local agents use to ask an agent on a peer node.
const ToolName = "ofp_send"

// ToolDescription tells the model what the tool does.
const ToolDescription = "Send a message to an agent on another fangd or LibreFang node of the OFP peer network, wait for its answer and return it. " +
	"Name the node by its id or name (GET /api/peers lists them) and the agent by its id or name."

// ToolSchema is the JSON schema of the tool's arguments.
var ToolSchema = json.RawMessage(`{"type":"object","properties":{` +
	`"peer":{"type":"string","description":"node id or node name of the peer"},` +
	`"agent":{"type":"string","description":"id or name of the agent on that node"},` +
	`"message":{"type":"string","description":"the text to send"}},` +
	`"required":["peer","agent","message"],"additionalProperties":false}`)

// ToolArgs are the tool's arguments.
type ToolArgs struct {
	Peer    string `json:"peer"`
	Agent   string `json:"agent"`
	Message string `json:"message"`
}

// ToolResult is what the tool returns to the model (as JSON text).
type ToolResult struct {
	NodeID   string `json:"node_id"`
	NodeName string `json:"node_name"`
	Answer   string `json:"answer"`
}

// CallTool runs ofp_send for the local agent agentID (the remote turn's
// sender is "agent:<id>"). Bad arguments, unknown peers and refusals are
// errors the model can read.
func (n *Network) CallTool(ctx context.Context, agentID string, raw json.RawMessage) (string, error) {
	var args ToolArgs
	ctx, cancel, err := kernel.StartToolCall(ctx, ToolName, raw, &args, n.e.opts.TurnTimeout)
	defer cancel()
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(args.Peer) == "" || strings.TrimSpace(args.Agent) == "" || strings.TrimSpace(args.Message) == "" {
		return "", errors.New("ofp_send: peer, agent and message are required")
	}
	r, err := n.SendAgent(ctx, args.Peer, args.Agent, args.Message, "agent:"+agentID)
	if err != nil {
		return "", fmt.Errorf("ofp_send: %s", err.Error())
	}
	out, err := json.Marshal(ToolResult{NodeID: r.NodeID, NodeName: r.NodeName, Answer: r.Text})
	return string(out), err
}
