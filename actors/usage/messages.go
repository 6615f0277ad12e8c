// Package usage is the metering ledger: one actor that records every LLM
// call durably, keeps usage roll-ups (per minute, hour, day, model and
// agent) up to date at write time, and enforces budgets by reserving a
// call's worst-case cost before the provider is called.
//
// Because one actor owns every counter and every reservation, admission is
// serial: no two calls can both see room for themselves in the same last
// dollar of a budget. The recipe is in docs/usage-budget.md.
package usage

import "time"

// Event is one metered LLM call, as stored under usage/e/<time>.
type Event struct {
	Time              time.Time `json:"ts"`
	AgentID           string    `json:"agent_id"`
	AgentName         string    `json:"agent_name"`
	SessionID         string    `json:"session_id,omitempty"`
	Provider          string    `json:"provider"`
	Model             string    `json:"model"`
	InputTokens       int64     `json:"input_tokens"`
	CachedInputTokens int64     `json:"cached_input_tokens"`
	CacheWriteTokens  int64     `json:"cache_write_tokens,omitempty"`
	OutputTokens      int64     `json:"output_tokens"`
	// CostNanos is the cost in nano-USD (1e-9 USD): integers add up exactly,
	// so budget comparisons never drift.
	CostNanos      int64  `json:"cost_nanos"`
	LatencyMS      int64  `json:"latency_ms"`
	Outcome        string `json:"outcome"` // llm.Outcome*: "ok", "timeout", "rate_limited", ...
	PricingKnown   bool   `json:"pricing_known"`
	UsageEstimated bool   `json:"usage_estimated,omitempty"`
}

// ---- the hot path (Meter.Reserve / Meter.Settle) ----

// Reserve asks the ledger to hold a call's worst-case cost and tokens
// against every applicable limit. Answered with a Reservation, or a
// KindPaymentRequired error with code "budget_exceeded".
type Reserve struct {
	AgentID   string
	AgentName string
	Provider  string
	Model     string
	CostNanos int64 // worst case: prompt upper bound and max output at the model's price
	Tokens    int64 // worst case: prompt upper bound + max output tokens
	reply     chan reserveReply
}

// Reservation is a granted hold; settle it exactly once.
type Reservation struct {
	ID        uint64
	CostNanos int64
	Tokens    int64
}

type reserveReply struct {
	res *Reservation
	err error
}

// Settle ends a reservation (ID 0 if the call had none) with what the call
// really cost, and records its event. Answered once the event and the
// roll-ups it changed are on disk.
type Settle struct {
	ReservationID uint64
	Event         Event
	reply         chan settleReply
}

type settleReply struct {
	event Event
	err   error
}

// ---- queries (answered from memory) ----

// UsageQuery asks for the totals of a period: "hour" (the last 60
// minutes), "day" (today, UTC), "week" (the last 7 UTC days including
// today) or "month" (this UTC calendar month). Answered with *UsageReport.
type UsageQuery struct{ Period string }

// UsageReport is GET /api/usage.
type UsageReport struct {
	Period                 string  `json:"period"`
	From                   string  `json:"from"`
	TotalInputTokens       int64   `json:"total_input_tokens"`
	TotalCachedInputTokens int64   `json:"total_cached_input_tokens"`
	TotalOutputTokens      int64   `json:"total_output_tokens"`
	TotalCostUSD           float64 `json:"total_cost_usd"`
	RequestCount           int64   `json:"request_count"`
	FailedRequests         int64   `json:"failed_requests"`
	ActiveAgents           int     `json:"active_agents"`
}

// SummaryQuery asks for today's totals and the hourly token quota.
// Answered with *Summary.
type SummaryQuery struct{}

// Summary is GET /api/usage/summary.
type Summary struct {
	Today struct {
		InputTokens  int64   `json:"input_tokens"`
		OutputTokens int64   `json:"output_tokens"`
		CostUSD      float64 `json:"cost_usd"`
		Requests     int64   `json:"requests"`
	} `json:"today"`
	Quota struct {
		HourlyTokenLimit     int64  `json:"hourly_token_limit"`
		HourlyTokensUsed     int64  `json:"hourly_tokens_used"`
		HourlyReservedTokens int64  `json:"hourly_reserved_tokens"`
		HourlyResetAt        string `json:"hourly_reset_at"`
	} `json:"quota"`
}

// ByModelQuery asks for usage per model over a period ("" = all time).
// Answered with *ByModel.
type ByModelQuery struct{ Period string }

// ByModel is GET /api/usage/by-model.
type ByModel struct {
	Period string       `json:"period"`
	Models []ModelUsage `json:"models"`
}

// ModelUsage is one model's totals.
type ModelUsage struct {
	Model             string  `json:"model"`
	Provider          string  `json:"provider"`
	InputTokens       int64   `json:"input_tokens"`
	CachedInputTokens int64   `json:"cached_input_tokens"`
	OutputTokens      int64   `json:"output_tokens"`
	CostUSD           float64 `json:"cost_usd"`
	RequestCount      int64   `json:"request_count"`
}

// DailyQuery asks for one row per UTC day, the last Days days (1-366).
// Answered with *Daily.
type DailyQuery struct{ Days int }

// Daily is GET /api/usage/daily.
type Daily struct {
	Days           []DayUsage `json:"days"`
	TodayCostUSD   float64    `json:"today_cost_usd"`
	FirstEventDate *string    `json:"first_event_date"`
}

// DayUsage is one UTC day.
type DayUsage struct {
	Date         string  `json:"date"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	Requests     int64   `json:"requests"`
}

// AgentSpendQuery asks for every agent's spend. Answered with []AgentSpend.
type AgentSpendQuery struct{}

// AgentSpend is one agent's lifetime and today's spend.
type AgentSpend struct {
	AgentID      string  `json:"agent_id"`
	AgentName    string  `json:"agent_name"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	TodayCostUSD float64 `json:"today_cost_usd"`
}

// ---- budgets ----

// BudgetQuery asks for the global budget. Answered with *BudgetStatus.
type BudgetQuery struct{}

// SetBudget changes the global limits; nil fields stay as they are. The
// change is durable before the answer (*BudgetStatus).
type SetBudget struct {
	DailyLimitUSD    *float64
	MonthlyLimitUSD  *float64
	AlertThreshold   *float64
	HourlyTokenLimit *int64
}

// BudgetStatus is GET /api/budget. Status is "ok", "warning" (some spend
// at or above alert_threshold of its limit) or "exceeded" (some limit
// reached).
type BudgetStatus struct {
	DailyLimitUSD    float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  float64 `json:"monthly_limit_usd"`
	TodaySpentUSD    float64 `json:"today_spent_usd"`
	MonthSpentUSD    float64 `json:"month_spent_usd"`
	Status           string  `json:"status"`
	HourlyTokenLimit int64   `json:"hourly_token_limit"`
	HourlyTokensUsed int64   `json:"hourly_tokens_used"`
	AlertThreshold   float64 `json:"alert_threshold"`
	ReservedUSD      float64 `json:"reserved_usd"`
	Reservations     int     `json:"reservations"`
}

// AgentBudgetQuery asks for one agent's limits and spend (the caller has
// checked the agent exists). Answered with *AgentBudget.
type AgentBudgetQuery struct{ AgentID, AgentName string }

// SetAgentBudget changes one agent's limits; nil fields stay as they are.
// Durable before the answer (*AgentBudget).
type SetAgentBudget struct {
	AgentID         string
	AgentName       string
	DailyLimitUSD   *float64
	MonthlyLimitUSD *float64
}

// AgentBudget is GET /api/budget/agents/{id}.
type AgentBudget struct {
	AgentID         string  `json:"agent_id"`
	AgentName       string  `json:"agent_name"`
	DailyLimitUSD   float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD float64 `json:"monthly_limit_usd"`
	TodaySpentUSD   float64 `json:"today_spent_usd"`
	MonthSpentUSD   float64 `json:"month_spent_usd"`
	TotalCostUSD    float64 `json:"total_cost_usd"`
	ReservedUSD     float64 `json:"reserved_usd"`
	Status          string  `json:"status"`
	AlertThreshold  float64 `json:"alert_threshold"`
}

// ForgetAgent drops a deleted agent's limits. Its usage history stays.
// Answered with ForgetAgent{} once durable.
type ForgetAgent struct{ AgentID string }

// ---- events published on the actor system's EventStream ----

// BudgetAlert describes a budget crossing. Published as *BudgetWarning or
// *BudgetExceeded, at most once per limit and window (and audited as
// "budget_warning" / "budget_exceeded").
type BudgetAlert struct {
	Scope     string // "global" or "agent"
	AgentID   string // for scope "agent"
	AgentName string
	Limit     string // "daily", "monthly" or "hourly_tokens"
	Window    string // "2026-11-28", "2026-11" or "2026-11-28T14" (the hour the rolling window was hit)
	Spent     float64
	Max       float64 // the limit, USD (tokens for hourly_tokens)
	Refused   bool    // a call was refused by this limit
	At        time.Time
}

// BudgetWarning: spend reached alert_threshold of a limit.
type BudgetWarning struct{ BudgetAlert }

// BudgetExceeded: a limit was reached, or a call refused by it.
type BudgetExceeded struct{ BudgetAlert }

// ---- internal ----

// compactTick starts a retention pass.
type compactTick struct{}

// compacted reports a finished retention pass.
type compacted struct {
	removed int
	err     error
}
