package comms

import "context"

// Agent is what the comms layer needs to know about an agent.
type Agent struct {
	ID          string
	Name        string
	Description string
	State       string
	Model       string
	Tags        []string
}

// TurnResult is one completed agent turn.
type TurnResult struct {
	Response     string
	InputTokens  int
	OutputTokens int
	CostUSD      float64
}

// Agents is the agent runtime as the comms layer sees it. The agents
// package implements it; tests use a fake. Errors are kernel domain errors
// (NotFound for an unknown agent, PaymentRequired for a budget refusal...)
// and pass through to the caller unchanged.
type Agents interface {
	// Resolve finds an agent by id or by name.
	Resolve(ctx context.Context, ref string) (*Agent, error)
	// List returns every agent.
	List(ctx context.Context) ([]Agent, error)
	// Turn runs one turn of agentID on message, said by from ("system",
	// "agent:<id>", "hook:agent", "task:<id>"...), and returns its answer.
	Turn(ctx context.Context, agentID, from, message string) (*TurnResult, error)
}

// Channels is the chat channel layer as the comms layer sees it. Until a
// channel subsystem is wired, the router has none and every channel target
// is 404.
type Channels interface {
	// Has reports whether a channel adapter named name is configured.
	Has(name string) bool
	// Send queues content for chatID on channel name.
	Send(ctx context.Context, name, chatID, content string) error
}

// Node is one vertex of the topology.
type Node struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"` // agent, channel, peer, a2a_agent, external
	Name  string `json:"name"`
	State string `json:"state"`
	// Model is an agent's "provider/model" (LibreFang's TopoNode.model);
	// absent on other nodes (LibreFang's topology has agents only).
	Model string `json:"model,omitempty"`
}

// NodeSource contributes topology nodes (channels, peers, external A2A
// agents register theirs as they are built).
type NodeSource interface {
	Nodes(ctx context.Context) ([]Node, error)
}
