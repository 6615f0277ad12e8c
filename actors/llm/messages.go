// Package llm talks to LLM providers and prices their answers. It has two
// wire clients — the OpenAI-compatible chat completions API (OpenAI, Groq,
// OpenRouter, Together, Mistral, DeepSeek, Ollama, vLLM, LM Studio) and
// Anthropic's Messages API — a registry of configured providers, and the
// model catalog that turns token counts into dollars.
//
// Nothing here is an actor: the registry is immutable configuration plus
// goroutine-safe HTTP clients. The agent actor calls Chat (or ChatStream,
// for a streamed turn) from the goroutine that runs one turn, never from
// its Receive.
package llm

import (
	"encoding/json"
	"time"
)

// Message is one entry of a conversation.
type Message struct {
	Role    string `json:"role"` // "user", "assistant" or "tool"
	Content string `json:"content"`
	// ToolCalls are the tools an assistant message asks to run.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID and IsError belong to a "tool" message: the call it
	// answers and whether the answer is a failure or refusal.
	ToolCallID string `json:"tool_call_id,omitempty"`
	IsError    bool   `json:"is_error,omitempty"`
}

// Roles a Message may have. The system prompt is not a message: it goes in
// Request.System, because the two APIs place it differently. A "tool"
// message is the result of one tool call; the Anthropic client folds
// consecutive ones into a user message of tool_result blocks.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Tool is a function the model may call.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// InputSchema is the JSON Schema of the arguments (an object schema);
	// empty means "no arguments".
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	// Server is the MCP server that serves the tool ("" for others); it
	// is never sent to a provider.
	Server string `json:"-"`
}

// ToolCall is one call the model asked for. Arguments is the JSON the
// model wrote; it is not guaranteed to be valid JSON (OpenAI sends it as
// a string the model produced), so callers check before using it.
type ToolCall struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// Request is one chat turn, provider-neutral.
type Request struct {
	// Model is the provider's own model id (the part after "provider/").
	Model     string
	System    string
	Messages  []Message
	MaxTokens int
	// Temperature is the sampling temperature; nil leaves the provider's
	// default (the field is then not sent at all).
	Temperature *float64
	// Tools are offered to the model; none means a plain chat.
	Tools []Tool
}

// Usage is the token accounting a provider reports for one call.
// InputTokens counts every prompt token, cached ones included;
// CachedInputTokens is the part served from the provider's prompt cache
// (billed at the cached-input price) and CacheWriteTokens the part written
// to it (Anthropic bills those at 1.25x the input price).
type Usage struct {
	InputTokens       int64 `json:"input_tokens"`
	CachedInputTokens int64 `json:"cached_input_tokens"`
	CacheWriteTokens  int64 `json:"cache_write_tokens"`
	OutputTokens      int64 `json:"output_tokens"`
}

// Response is a provider's answer to a Request.
type Response struct {
	Text string
	// ToolCalls are the tools the model wants run before it answers;
	// StopReason is then "tool_calls" (OpenAI) or "tool_use" (Anthropic).
	ToolCalls []ToolCall
	// Reasoning is the model's reasoning text, when the provider streams
	// it (Anthropic's thinking, DeepSeek's reasoning_content).
	Reasoning  string
	Model      string // the model that answered, as the provider names it
	StopReason string
	Usage      Usage
	// UsageEstimated is set when the provider reported no usage (some
	// local servers do not) and Usage was estimated from the text.
	UsageEstimated bool
	Latency        time.Duration
}

// Outcomes of a provider call, as counted in metrics and usage events.
const (
	OutcomeOK          = "ok"
	OutcomeTimeout     = "timeout"
	OutcomeRateLimited = "rate_limited"
	OutcomeServerError = "provider_error"
	OutcomeRejected    = "rejected"
	OutcomeUnreachable = "unreachable"
	OutcomeBadResponse = "bad_response"
	OutcomeNoKey       = "no_api_key"
	OutcomeCanceled    = "canceled"
)
