// Package agent runs fangd's agents: one supervised actor agent/<id> per
// agent under the "agents" supervisor, which keeps the manifests (and so
// the id and name registry) and re-spawns every agent from the store when
// it starts. An agent actor owns its conversation sessions and runs one
// LLM turn at a time per session, the provider call in a goroutine so its
// mailbox stays free.
package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/llm"
)

// Manifest is an agent's persisted definition.
type Manifest struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Model is "<provider>/<model id>", e.g. "groq/llama-3.3-70b-versatile".
	Model        string `json:"model"`
	SystemPrompt string `json:"system_prompt"`
	// MaxTokens caps output tokens per turn: sent to the provider and
	// reserved against budgets.
	MaxTokens int `json:"max_tokens"`
	// Temperature is the sampling temperature sent with every call; null
	// (the default) sends none and the provider's default applies.
	Temperature  *float64 `json:"temperature"`
	Tags         []string `json:"tags"`
	Tools        []string `json:"tools"`
	Capabilities []string `json:"capabilities"`
	// Channels and MCPServers are allow-lists (LibreFang's): the channels
	// whose messages the agent answers and the MCP servers whose tools it
	// is offered. Empty means all.
	Channels   []string  `json:"channels"`
	MCPServers []string  `json:"mcp_servers"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Agent is an agent as the API shows it.
type Agent struct {
	Manifest
	Provider string `json:"provider"`
	ModelID  string `json:"model_id"`
	// State is "running", or "failed" when its actor was stopped by its
	// supervisor (it is started again with the daemon).
	State string `json:"state"`
	// DefaultSessionID is the session a message without session_id joins.
	DefaultSessionID string `json:"default_session_id"`
	// Warnings are said about the manifest by the create or update that
	// answers with it (a tool of an MCP server that is not connected).
	Warnings []string `json:"warnings,omitempty"`
}

// Ref names an agent by id or by name; exactly one is set.
type Ref struct{ ID, Name string }

// Who is the caller, for audit entries.
type Who struct{ Actor, SourceIP string }

// Spec is what POST /api/agents accepts.
type Spec struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Model        string   `json:"model"`
	SystemPrompt string   `json:"system_prompt"`
	MaxTokens    *int     `json:"max_tokens"`
	Temperature  *float64 `json:"temperature"`
	Tags         []string `json:"tags"`
	Tools        []string `json:"tools"`
	Capabilities []string `json:"capabilities"`
	Channels     []string `json:"channels"`
	MCPServers   []string `json:"mcp_servers"`
}

// Patch is what PATCH /api/agents/{id} accepts; absent fields stay.
type Patch struct {
	Name         *string   `json:"name"`
	Description  *string   `json:"description"`
	Model        *string   `json:"model"`
	SystemPrompt *string   `json:"system_prompt"`
	MaxTokens    *int      `json:"max_tokens"`
	Temperature  *float64  `json:"temperature"`
	Tags         *[]string `json:"tags"`
	Tools        *[]string `json:"tools"`
	Capabilities *[]string `json:"capabilities"`
	Channels     *[]string `json:"channels"`
	MCPServers   *[]string `json:"mcp_servers"`
}

// ---- what the "agents" supervisor accepts ----

// Create spawns a new agent. Answered with *Agent once its manifest and
// its audit entry are durable; 409 when the name is taken.
type Create struct {
	Spec Spec
	Who  Who
}

// Get answers *Agent, or a 404.
type Get struct{ Ref Ref }

// List answers []Agent, oldest first.
type List struct{}

// Update applies a Patch. Answered with *Agent.
type Update struct {
	Ref   Ref
	Patch Patch
	Who   Who
}

// Delete stops an agent for good and removes its manifest and sessions
// (its usage history stays). Answered with *Deleted.
type Delete struct {
	Ref Ref
	Who Who
}

// Deleted is the answer to Delete.
type Deleted struct{ ID, Name string }

// Send runs one turn: the supervisor forwards it to the agent, which
// answers *TurnResult when the provider has answered, the usage event is
// on disk and the turn is in the session's history and the audit log.
type Send struct {
	Ref       Ref
	Text      string
	SessionID string // "" = the agent's default session
	From      string // who speaks: "api" for the REST API
	Who       Who
	// User is on whose behalf the turn runs, for per-user budgets: the
	// sender of a chat message or of an API request ("" = nobody's; see
	// docs/usage-budget.md).
	User string
	// Ctx, when set, bounds this turn: cancelling it cancels the provider
	// call and the caller gets the error (A2A's CancelTask needs a turn
	// that really stops). Local only; never serialised.
	Ctx context.Context
	// Stream, when set, receives the turn's events as they happen: the
	// answer's text in pieces, the tool calls as the model writes them,
	// each tool run and each provider call. Sends wait for the reader, so
	// it must keep reading until the turn's answer comes, or cancel Ctx
	// (which Stream needs set). Local only, like Ctx.
	Stream chan<- StreamEvent
}

// StreamEvent is one event of a streamed turn (Send.Stream).
type StreamEvent struct {
	Type string
	// Text is a piece of the answer (StreamText).
	Text string
	// Tool and ToolCallID name the call of StreamToolUse, StreamToolInput
	// and StreamToolRun; Input is its arguments (StreamToolInput).
	Tool       string
	ToolCallID string
	Input      json.RawMessage
	// Iteration is which provider call of the turn begins (StreamStep),
	// from 1.
	Iteration int
}

// The types of StreamEvent.
const (
	// StreamStep: a provider call begins (before its budget is reserved).
	StreamStep = "step"
	// StreamText: a piece of the model's text.
	StreamText = "text"
	// StreamToolUse: the model began writing a tool call.
	StreamToolUse = "tool_use"
	// StreamToolInput: the tool call is complete, with its arguments.
	StreamToolInput = "tool_input"
	// StreamToolRun: the tool is being run (after any approval).
	StreamToolRun = "tool_run"
)

// TurnResult is POST /api/agents/{id}/message's answer.
type TurnResult struct {
	Response          string  `json:"response"`
	InputTokens       int64   `json:"input_tokens"`
	CachedInputTokens int64   `json:"cached_input_tokens"`
	OutputTokens      int64   `json:"output_tokens"`
	CostUSD           float64 `json:"cost_usd"`
	Model             string  `json:"model"`
	Provider          string  `json:"provider"`
	PricingKnown      bool    `json:"pricing_known"`
	AgentID           string  `json:"agent_id"`
	SessionID         string  `json:"session_id"`
	// LatencyMS is the time spent waiting for the provider, summed over
	// the turn's calls (tool runs and approval waits are not in it).
	LatencyMS int64 `json:"latency_ms"`
	// ToolCalls lists the tools the model asked for during the turn and
	// how each ended.
	ToolCalls []ToolCallRecord `json:"tool_calls,omitempty"`
	// Iterations is the provider calls (LLM round trips) of the turn:
	// one, plus one per round of tool calls (LibreFang's field).
	Iterations int `json:"iterations"`
}

// ToolCallRecord is one tool call of a turn.
type ToolCallRecord struct {
	Tool string `json:"tool"`
	// Outcome: "ok", "tool_error" (the tool reported a failure), "error"
	// (it could not be called), "unknown_tool", "invalid_arguments",
	// "rejected", "expired" or "cancelled" (a human said no, nobody
	// answered in time, or the request was withdrawn), "limit" (too many
	// tool rounds in one turn).
	Outcome    string `json:"outcome"`
	ApprovalID string `json:"approval_id,omitempty"`
}

// ---- what agents need from other domains ----

// Toolbox is where agents find and call tools: the MCP manager's proxied
// tools (and built-ins, once there are any). Tools is read at the start
// of every turn, so it must be cheap.
type Toolbox interface {
	Tools() []llm.Tool
	Call(ctx context.Context, inv ToolInvocation) (ToolOutput, error)
}

// ToolInvocation is one call of a tool by an agent.
type ToolInvocation struct {
	AgentID, AgentName, SessionID string
	Tool                          string
	Arguments                     json.RawMessage
	// ApprovalID is the approval that let the call through, if any.
	ApprovalID string
	Who        Who
}

// ToolOutput is a tool's answer. IsError marks a failure the tool itself
// reported (the model sees it as such).
type ToolOutput struct {
	Text    string
	IsError bool
}

// ToolDirectory is what a manifest's tools are checked against: the
// tools fangd offers now (to agents, or through POST /mcp to a client
// acting as the agent) and the configured MCP servers not connected now.
type ToolDirectory interface {
	// Offered reports whether a tool of exactly this name is offered.
	Offered(name string) bool
	// WaitingServer names the configured MCP server, not connected now,
	// whose tool name could be; "" when there is none.
	WaitingServer(name string) string
}

// Gatekeeper is the approvals subsystem as agents see it: which tools
// need a human decision, the actor to ask (with approval.Gate), and the
// longest a decision can take.
type Gatekeeper interface {
	Gated(tool string) bool
	PID() *actor.PID
	MaxWait() time.Duration
}

// ---- what an agent/<id> actor accepts (from its supervisor) ----

// manifestChanged gives the agent its new manifest after an Update.
type manifestChanged struct{ m Manifest }

// terminate makes the agent answer every waiting caller, delete its
// sessions and stop.
type terminate struct{}

// stepDone is sent by a turn's goroutine when one provider call ended.
type stepDone struct {
	t    *turn
	step *stepResult
	err  error
}

// sessionSaved says a history write synced (or failed).
type sessionSaved struct {
	sessionID string
	err       error
}

// toolDone is sent by a tool call's goroutine when the tool answered.
type toolDone struct {
	t   *turn
	out ToolOutput
	err error
}

// regate asks the approvals supervisor again after it could not answer.
type regate struct{ t *turn }

// turnRecorded: the record of a turn that waits for approval is durable
// (or could not be written); only then is the approval asked for.
type turnRecorded struct {
	t    *turn
	call llm.ToolCall
	err  error
}

// decisionRecorded: the turn's record is deleted for good now that its
// approval is decided; only then does the decision take effect, so a
// restart can never run the tool a second time.
type decisionRecorded struct {
	t   *turn
	res any
}

// turnCancelled: the caller's context of a turn was cancelled.
type turnCancelled struct{ t *turn }

// ---- events published on the actor system's EventStream ----
//
// The comms bus subscribes to these; Kind is the comms event kind.

// AgentSpawned: an agent was created.
type AgentSpawned struct {
	AgentID, Name, Model string
	At                   time.Time
}

// AgentTerminated: an agent was deleted.
type AgentTerminated struct {
	AgentID, Name string
	At            time.Time
}

// AgentMessage: an agent ran a turn (successfully or not).
type AgentMessage struct {
	AgentID, Name, SessionID string
	From                     string // "api", or later "agent:<id>" / a channel
	MessageChars             int
	ResponseChars            int
	InputTokens              int64
	OutputTokens             int64
	CostUSD                  float64
	Model, Provider          string
	LatencyMS                int64
	ToolCalls                int
	Outcome                  string // "ok", "denied" (budget), "error"
	At                       time.Time
}

// Kind names the event as the comms bus does.
func (AgentSpawned) Kind() string    { return "agent_spawned" }
func (AgentTerminated) Kind() string { return "agent_terminated" }
func (AgentMessage) Kind() string    { return "agent_message" }

// history is one session's conversation.
type history struct {
	ID        string        `json:"id"`
	Messages  []llm.Message `json:"messages"`
	UpdatedAt time.Time     `json:"updated_at"`
}
