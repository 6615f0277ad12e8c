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
	// User is on whose behalf the call ran ("" = nobody's): what per-user
	// budgets count. See User in docs/usage-budget.md for where it comes from.
	User string `json:"user,omitempty"`
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
	User      string // on whose behalf ("" = nobody's): per-user budgets
	CostNanos int64  // worst case: prompt upper bound and max output at the model's price
	Tokens    int64  // worst case: prompt upper bound + max output tokens
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
	// clusterAlerts: cluster mode, where alerts follow the cluster's
	// spend (cluster.go), not this node's.
	clusterAlerts bool
}

type settleReply struct {
	event Event
	err   error
}

// ---- queries (answered from memory) ----

// UsageQuery asks for the totals of a period: "hour" (the last 60
// minutes), "day" (today, UTC), "week" (the last 7 UTC days including
// today) or "month" (this UTC calendar month). Answered with *UsageReport.
type UsageQuery struct {
	Period        string
	Offset, Limit int // the page of AgentItems (Limit 0: none)
}

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
	// AgentItems is LibreFang's answer to the same route; nil (and left
	// out) when the query asked for no page of it.
	*AgentItems
}

// AgentItems is LibreFang's GET /api/usage: lifetime totals per agent
// that has usage (deleted agents included), costliest first; Total counts
// them all, Offset and Limit say which page this is.
type AgentItems struct {
	Items  []AgentUsage `json:"items"`
	Total  int          `json:"total"`
	Offset int          `json:"offset"`
	Limit  int          `json:"limit"`
}

// AgentUsage is one agent's lifetime usage under LibreFang's names.
// is_hand is always false: fangd has no hands. LibreFang's tool_calls is
// not given: the ledger meters LLM calls, not tool runs.
type AgentUsage struct {
	AgentID      string  `json:"agent_id"`
	Name         string  `json:"name"`
	IsHand       bool    `json:"is_hand"`
	TotalTokens  int64   `json:"total_tokens"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	Cost         float64 `json:"cost"`
	CallCount    int64   `json:"call_count"`
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
	// LibreFang's summary: lifetime totals.
	TotalInputTokens  int64   `json:"total_input_tokens"`
	TotalOutputTokens int64   `json:"total_output_tokens"`
	TotalCostUSD      float64 `json:"total_cost_usd"`
	CallCount         int64   `json:"call_count"`
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
	// LibreFang's names for the same numbers.
	TotalCostUSD      float64 `json:"total_cost_usd"`
	TotalInputTokens  int64   `json:"total_input_tokens"`
	TotalOutputTokens int64   `json:"total_output_tokens"`
	CallCount         int64   `json:"call_count"`
}

// ModelPerfQuery asks for every model's lifetime totals and provider
// latency. Answered with *ModelPerformance.
type ModelPerfQuery struct{}

// ModelPerformance is GET /api/usage/by-model/performance.
type ModelPerformance struct {
	Models []ModelPerf `json:"models"`
}

// ModelPerf is one model's totals and latency (milliseconds waiting for
// the provider, over every call, failed ones included).
type ModelPerf struct {
	Model             string  `json:"model"`
	Provider          string  `json:"provider"`
	TotalCostUSD      float64 `json:"total_cost_usd"`
	TotalInputTokens  int64   `json:"total_input_tokens"`
	TotalOutputTokens int64   `json:"total_output_tokens"`
	CallCount         int64   `json:"call_count"`
	AvgLatencyMS      float64 `json:"avg_latency_ms"`
	MinLatencyMS      int64   `json:"min_latency_ms"`
	MaxLatencyMS      int64   `json:"max_latency_ms"`
	CostPerCall       float64 `json:"cost_per_call"`
	AvgLatencyPerCall float64 `json:"avg_latency_per_call"`
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
	Tokens       int64   `json:"tokens"` // LibreFang's: input + output
	Calls        int64   `json:"calls"`  // LibreFang's: = requests
}

// AgentSpendQuery asks for every agent's spend. Answered with []AgentSpend.
type AgentSpendQuery struct{}

// AgentSpend is one agent's lifetime and today's spend, then LibreFang's
// ranking fields (its limits; max_llm_tokens_per_hour is the one in force).
type AgentSpend struct {
	AgentID             string  `json:"agent_id"`
	AgentName           string  `json:"agent_name"`
	TotalCostUSD        float64 `json:"total_cost_usd"`
	TodayCostUSD        float64 `json:"today_cost_usd"`
	Name                string  `json:"name"`
	DailyCostUSD        float64 `json:"daily_cost_usd"`
	HourlyLimit         float64 `json:"hourly_limit"`
	DailyLimit          float64 `json:"daily_limit"`
	MonthlyLimit        float64 `json:"monthly_limit"`
	MaxLLMTokensPerHour int64   `json:"max_llm_tokens_per_hour"`
}

// ---- budgets ----

// BudgetQuery asks for the global budget. Answered with *BudgetStatus.
type BudgetQuery struct{}

// SetBudget changes the global limits; nil fields stay as they are. The
// change is durable before the answer (*BudgetStatus).
type SetBudget struct {
	HourlyLimitUSD   *float64 // rolling last 60 minutes
	DailyLimitUSD    *float64
	MonthlyLimitUSD  *float64
	AlertThreshold   *float64
	HourlyTokenLimit *int64
	// DefaultAgentTokensPerHour is every agent's hourly token limit unless
	// the agent has its own (LibreFang's default_max_llm_tokens_per_hour).
	DefaultAgentTokensPerHour *int64
}

// BudgetStatus is GET /api/budget. Status is "ok", "warning" (some spend
// at or above alert_threshold of its limit) or "exceeded" (some limit
// reached). The seed page's fields come first; LibreFang's BudgetStatus
// (spend, limit and pct per window, pct a fraction, 0 without a limit)
// follows.
type BudgetStatus struct {
	DailyLimitUSD    float64 `json:"daily_limit_usd"`
	MonthlyLimitUSD  float64 `json:"monthly_limit_usd"`
	TodaySpentUSD    float64 `json:"today_spent_usd"`
	MonthSpentUSD    float64 `json:"month_spent_usd"`
	Status           string  `json:"status"`
	HourlyLimitUSD   float64 `json:"hourly_limit_usd"`
	HourSpentUSD     float64 `json:"hour_spent_usd"`
	HourlyTokenLimit int64   `json:"hourly_token_limit"`
	HourlyTokensUsed int64   `json:"hourly_tokens_used"`
	AlertThreshold   float64 `json:"alert_threshold"`
	ReservedUSD      float64 `json:"reserved_usd"`
	Reservations     int     `json:"reservations"`

	HourlySpend                float64 `json:"hourly_spend"`
	HourlyLimit                float64 `json:"hourly_limit"`
	HourlyPct                  float64 `json:"hourly_pct"`
	DailySpend                 float64 `json:"daily_spend"`
	DailyLimit                 float64 `json:"daily_limit"`
	DailyPct                   float64 `json:"daily_pct"`
	MonthlySpend               float64 `json:"monthly_spend"`
	MonthlyLimit               float64 `json:"monthly_limit"`
	MonthlyPct                 float64 `json:"monthly_pct"`
	DefaultMaxLLMTokensPerHour int64   `json:"default_max_llm_tokens_per_hour"`
}

// Window is one budget window as LibreFang reports it: spend, limit (0 =
// unlimited) and pct, the spend as a fraction of the limit (0 without one).
type Window struct {
	Spend float64 `json:"spend"`
	Limit float64 `json:"limit"`
	Pct   float64 `json:"pct"`
}

// TokenWindow is the rolling hour's tokens against a token limit.
type TokenWindow struct {
	Used  int64   `json:"used"`
	Limit int64   `json:"limit"`
	Pct   float64 `json:"pct"`
}

// AgentBudgetQuery asks for one agent's limits and spend (the caller has
// checked the agent exists). Answered with *AgentBudget.
type AgentBudgetQuery struct{ AgentID, AgentName string }

// SetAgentBudget changes one agent's limits; nil fields stay as they are.
// Durable before the answer (*AgentBudget).
type SetAgentBudget struct {
	AgentID         string
	AgentName       string
	HourlyLimitUSD  *float64
	DailyLimitUSD   *float64
	MonthlyLimitUSD *float64
	TokensPerHour   *int64 // rolling hour; overrides the global default
}

// AgentBudget is GET /api/budget/agents/{id}: the seed page's fields, then
// LibreFang's windows and the agent's quota under LibreFang's ResourceQuota
// names (only the cost and token limits: fangd enforces no memory, CPU or
// network quota, so it does not claim one).
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
	HourlyLimitUSD  float64 `json:"hourly_limit_usd"`
	HourSpentUSD    float64 `json:"hour_spent_usd"`

	Hourly  Window      `json:"hourly"`
	Daily   Window      `json:"daily"`
	Monthly Window      `json:"monthly"`
	Tokens  TokenWindow `json:"tokens"`

	MaxCostPerHourUSD  float64 `json:"max_cost_per_hour_usd"`
	MaxCostPerDayUSD   float64 `json:"max_cost_per_day_usd"`
	MaxCostPerMonthUSD float64 `json:"max_cost_per_month_usd"`
	// MaxLLMTokensPerHour is the agent's own limit; absent when it takes
	// the global default (Tokens.Limit is the one in force).
	MaxLLMTokensPerHour *int64 `json:"max_llm_tokens_per_hour,omitempty"`
}

// ---- per-provider and per-user budgets ----

// ProviderBudgetsQuery asks for every provider with a budget or with
// usage this month. Answered with *ProviderBudgets.
type ProviderBudgetsQuery struct{}

// ProviderBudgetQuery asks for one provider. Answered with *ProviderBudget.
type ProviderBudgetQuery struct{ Provider string }

// ProviderBudgets is GET /api/budget/providers.
type ProviderBudgets struct {
	Providers      []ProviderBudget `json:"providers"`
	AlertThreshold float64          `json:"alert_threshold"`
}

// ProviderBudget is one provider's caps and spend under LibreFang's names.
// is_exhausted is true while one of its budget caps is reached (fangd
// tracks no other kind of provider exhaustion); exhaustion_remaining_ms
// is the time to the reset of a daily or monthly cap, null for the
// rolling hour (it frees up as old calls leave the window).
type ProviderBudget struct {
	Provider              string  `json:"provider"`
	Unconfigured          bool    `json:"unconfigured"`
	CapHourlyUSD          float64 `json:"cap_hourly_usd"`
	CapDailyUSD           float64 `json:"cap_daily_usd"`
	CapMonthlyUSD         float64 `json:"cap_monthly_usd"`
	CapTokensPerHour      int64   `json:"cap_tokens_per_hour"`
	SpendHourlyUSD        float64 `json:"spend_hourly_usd"`
	SpendDailyUSD         float64 `json:"spend_daily_usd"`
	SpendMonthlyUSD       float64 `json:"spend_monthly_usd"`
	TokensThisHour        int64   `json:"tokens_this_hour"`
	ReservedUSD           float64 `json:"reserved_usd"`
	Status                string  `json:"status"`
	IsExhausted           bool    `json:"is_exhausted"`
	ExhaustionReason      *string `json:"exhaustion_reason"`
	ExhaustionRemainingMS *int64  `json:"exhaustion_remaining_ms"`
}

// SetProviderBudget changes one provider's caps; nil fields stay. Clear
// removes them all. Durable before the answer (*ProviderLimitsSet).
type SetProviderBudget struct {
	Provider        string
	HourlyLimitUSD  *float64
	DailyLimitUSD   *float64
	MonthlyLimitUSD *float64
	TokensPerHour   *int64
	Clear           bool
}

// ProviderLimitsSet is PUT /api/budget/providers/{id}'s answer.
type ProviderLimitsSet struct {
	Provider           string  `json:"provider"`
	MaxCostPerHourUSD  float64 `json:"max_cost_per_hour_usd"`
	MaxCostPerDayUSD   float64 `json:"max_cost_per_day_usd"`
	MaxCostPerMonthUSD float64 `json:"max_cost_per_month_usd"`
	MaxTokensPerHour   int64   `json:"max_tokens_per_hour"`
}

// UserBudgetsQuery asks for the users ranked by today's spend, then this
// month's (Limit rows at most). Answered with *UserBudgets.
type UserBudgetsQuery struct{ Limit int }

// UserBudgets is GET /api/budget/users.
type UserBudgets struct {
	Users []UserSpend `json:"users"`
	Total int         `json:"total"`
	Limit int         `json:"limit"`
}

// UserSpend is one row of the user ranking.
type UserSpend struct {
	UserID         string      `json:"user_id"`
	Name           string      `json:"name"`
	HourlyCostUSD  float64     `json:"hourly_cost_usd"`
	DailyCostUSD   float64     `json:"daily_cost_usd"`
	MonthlyCostUSD float64     `json:"monthly_cost_usd"`
	CallCount      int64       `json:"call_count"`
	Limits         *UserLimits `json:"limits"`
}

// UserBudgetQuery asks for one user. Answered with *UserBudget.
type UserBudgetQuery struct{ User string }

// UserBudget is GET /api/budget/users/{id}. fangd has no user accounts,
// so role is always null; enforced is true because the limits are
// checked before every LLM call made on the user's behalf.
type UserBudget struct {
	UserID         string      `json:"user_id"`
	Name           string      `json:"name"`
	Role           *string     `json:"role"`
	Hourly         Window      `json:"hourly"`
	Daily          Window      `json:"daily"`
	Monthly        Window      `json:"monthly"`
	AlertThreshold float64     `json:"alert_threshold"`
	AlertBreach    bool        `json:"alert_breach"`
	Enforced       bool        `json:"enforced"`
	Configured     bool        `json:"configured"`
	Limits         *UserLimits `json:"limits"`
	ReservedUSD    float64     `json:"reserved_usd"`
	CallCount      int64       `json:"call_count"`
	Status         string      `json:"status"`
}

// SetUserBudget replaces one user's limits (all of them, as LibreFang's
// PUT does), or removes them when Limits is nil. Durable before the
// answer (*UserLimits, or SetUserBudget{} for a removal).
type SetUserBudget struct {
	User   string
	Limits *UserLimits
}

// ForgetAgent drops a deleted agent's limits. Its usage history stays.
// Answered with ForgetAgent{} once durable.
type ForgetAgent struct{ AgentID string }

// ---- events published on the actor system's EventStream ----

// BudgetAlert describes a budget crossing. Published as *BudgetWarning or
// *BudgetExceeded, at most once per limit and window (and audited as
// "budget_warning" / "budget_exceeded").
type BudgetAlert struct {
	Scope     string // "global", "agent", "provider" or "user"
	AgentID   string // for scope "agent"
	AgentName string
	ScopeID   string // the provider or user, for those scopes
	Limit     string // "hourly", "daily", "monthly" or "hourly_tokens"
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
