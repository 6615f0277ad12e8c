package cluster

// Entity kinds fangd runs. In this version every kind still runs on each
// node separately (Mode "per_node"): none is a grain yet, so none has
// exactly-one activation or failover across nodes. GET /api/cluster
// reports this table as is, so nobody mistakes membership for more.
const (
	KindChannel  = "channel_adapter"
	KindAgent    = "agent"
	KindMCP      = "mcp_connection"
	KindBudget   = "budget_ledger"
	KindApproval = "approval"
	KindWebhook  = "webhook_outbox"
	KindA2ATask  = "a2a_task"
	KindAudit    = "audit_chain"
	KindEventBus = "event_bus"
)

// KindInfo says where one kind of entity lives.
type KindInfo struct {
	Kind string `json:"kind"`
	// Mode is "per_node": each node runs its own, from its own store.
	Mode string `json:"mode"`
	Note string `json:"note"`
}

// Kinds is the honest table of where each kind runs.
var Kinds = []KindInfo{
	{KindChannel, "per_node", "each node runs the channels configured on it; configure a bot account on one node only (two nodes polling one token would both answer)"},
	{KindAgent, "per_node", "agents live in the node's own store"},
	{KindMCP, "per_node", "each node keeps its own MCP server connections"},
	{KindBudget, "per_node", "budgets hold per node: N nodes may spend up to N times a limit"},
	{KindApproval, "per_node", "pending approvals live on the node that raised them"},
	{KindWebhook, "per_node", "webhook outboxes live on the node that queued them"},
	{KindA2ATask, "per_node", "A2A task records live on the node that runs them"},
	{KindAudit, "per_node", "each node keeps its own hash chain and anchor"},
	{KindEventBus, "per_node", "each node has its own event bus; there is no cluster-wide ordered view"},
}
