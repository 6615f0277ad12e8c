package cluster

// Entity kinds fangd runs. Channel adapters, webhook outboxes and MCP
// server connections are cluster-wide (Mode "cluster": one activation,
// failover; channels.go, webhooks.go, mcp.go), and so are budget admission (budget.go) and approval
// requests (approvals.go); agents are "routed" (each runs on the node
// that created it, found through the etcd agent directory, agents.go),
// and so are A2A tasks (each on the node that took its message, found
// through the etcd task directory, a2a.go);
// every other kind
// still runs on each node separately (Mode "per_node"). GET /api/cluster
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
	// Mode is "cluster" (one activation cluster-wide, state in etcd),
	// "routed" (one activation on its creating node, reachable from every
	// node, no failover) or "per_node" (each node runs its own, from its
	// own store).
	Mode string `json:"mode"`
	Note string `json:"note"`
}

// Kinds is the honest table of where each kind runs.
var Kinds = []KindInfo{
	{KindChannel, "cluster", "one activation cluster-wide: records in etcd, each adapter runs on the node holding its lease-fenced owner key, cursor and queues in etcd; another node takes over within about 4-7 s of its host dying (see channels for where each runs)"},
	{KindAgent, "routed", "one activation, on the node that created it, from that node's own store, not failed over: an etcd directory names each agent's node and any node forwards requests for it there; while its node is down its requests answer 503 host_unreachable"},
	{KindMCP, "cluster", "servers added through the API and servers in config.toml: one connection cluster-wide (one stdio process or remote session), specs and sealed secrets (OAuth tokens included) in etcd, run by the node holding the lease-fenced owner key, which publishes its tools; every node lists them and sends calls to the host; another node takes over within about 4-7 s of its host dying (see mcp_connections for where each runs); a server in config.toml runs the same way on one of the nodes whose file lists it, from that node's own file (only a hash of its spec without secret values goes to etcd), and moves only among those nodes"},
	{KindBudget, "cluster", "admission is cluster-wide: each scope's spend and the open reservations are in etcd, changed by compare-and-swap Txns; a dead node's reservations are released with its lease (5 s); limits are shared through etcd (an agent's by its name); each node meters its own calls and the usage reports add up every node's"},
	{KindApproval, "cluster", "one record per request in etcd: any node lists and decides it (one compare-and-swap wins), the raising node's waiting call resumes, and any node's sweep expires it at its deadline"},
	{KindWebhook, "cluster", "one activation cluster-wide: subscriptions in etcd, each endpoint's outbox runs on the node holding its lease-fenced owner key with its state in etcd; every node appends its matching events; another node takes over within about 4-7 s of its host dying (see webhooks for where each runs)"},
	{KindA2ATask, "routed", "one activation, on the node that received the SendMessage (or hosts the agent or context it names), not failed over: an etcd task directory, written before the task's id is answered, names each task's node; any node forwards GetTask, CancelTask, resubscribe and push-config calls there; the final state (record capped at 16 KiB) is kept in etcd for an hour past the longest task, and a task whose node died before it ended is marked failed by any node's sweep (about 10-12 s) and answered by every node"},
	{KindAudit, "per_node", "each node keeps its own hash chain and anchor; every 10 s each node writes its tip to etcd and records the other nodes' tips in its own chain (cluster_checkpoint) when they moved"},
	{KindEventBus, "per_node", "each node has its own event bus; there is no cluster-wide ordered view"},
}
