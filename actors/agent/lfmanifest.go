package agent

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fangd/fangd/actors/kernel"
)

// LibreFang describes an agent with an agent.toml manifest (its
// AgentManifest type), and its clients create agents by sending one as
// POST /api/agents {"manifest_toml": "..."} or by naming a template. This
// file maps such a manifest onto fangd's Spec: the fields fangd has an
// equivalent for are mapped, the ones that would change nothing here
// (metadata, translations, grants of LibreFang runtime features fangd does
// not have) are accepted and listed as ignored, and the ones whose meaning
// fangd cannot keep (a limit it does not enforce, a model setting it does
// not send) are a 400 naming them. docs/agents.md has the table.

// MaxManifestBytes caps a manifest, as LibreFang does (1 MiB).
const MaxManifestBytes = 1 << 20

// DefaultManifestMaxTokens and DefaultManifestPrompt are what LibreFang
// takes when a manifest's [model] leaves max_tokens or system_prompt out.
const (
	DefaultManifestMaxTokens = 4096
	DefaultManifestPrompt    = "You are a helpful AI agent."
)

// Imported is a LibreFang manifest mapped onto fangd.
type Imported struct {
	Spec Spec
	// DailyUSD and MonthlyUSD are the agent's cost caps from [resources]
	// (nil: none); they become the agent's budget.
	DailyUSD, MonthlyUSD *float64
	// Ignored names the manifest's keys that have no effect in fangd.
	Ignored []string
}

// lfManifest holds the fields of LibreFang's AgentManifest that fangd
// reads; every other key is classified by manifestKeys.
type lfManifest struct {
	Name        string   `toml:"name"`
	Description string   `toml:"description"`
	Module      string   `toml:"module"`
	Tags        []string `toml:"tags"`
	Enabled     *bool    `toml:"enabled"`
	Profile     string   `toml:"profile"`
	Model       struct {
		Provider     string   `toml:"provider"`
		Model        string   `toml:"model"`
		Name         string   `toml:"name"` // LibreFang's alias of model
		MaxTokens    *int64   `toml:"max_tokens"`
		Temperature  *float64 `toml:"temperature"`
		SystemPrompt *string  `toml:"system_prompt"`
	} `toml:"model"`
	Resources struct {
		MaxCostPerHourUSD      float64  `toml:"max_cost_per_hour_usd"`
		MaxCostPerDayUSD       float64  `toml:"max_cost_per_day_usd"`
		MaxCostPerMonthUSD     float64  `toml:"max_cost_per_month_usd"`
		MaxLLMTokensPerHour    int64    `toml:"max_llm_tokens_per_hour"`
		MaxToolCallsPerMinute  *int64   `toml:"max_tool_calls_per_minute"`
		MaxNetworkBytesPerHour *int64   `toml:"max_network_bytes_per_hour"`
		BurstRatio             *float64 `toml:"burst_ratio"`
	} `toml:"resources"`
	Capabilities struct {
		Tools []string `toml:"tools"`
	} `toml:"capabilities"`
	MCPServers     serverList `toml:"mcp_servers"`
	MCPDisabled    bool       `toml:"mcp_disabled"`
	ToolAllowlist  []string   `toml:"tool_allowlist"`
	ToolBlocklist  []string   `toml:"tool_blocklist"`
	ToolsDisabled  bool       `toml:"tools_disabled"`
	Channels       []string   `toml:"channels"`
	FallbackModels []any      `toml:"fallback_models"`
	Schedule       any        `toml:"schedule"`
}

// serverList is a manifest's mcp_servers.
type serverList []string

// all reports whether the list names every server (LibreFang's ["*"]).
func (l serverList) all() bool { return slices.Contains(l, "*") }

// keyRule is what a manifest key does in fangd.
type keyRule int

const (
	keyMapped  keyRule = iota // onto the Spec (or the budget)
	keyIgnored                // accepted, no effect here; listed in Ignored
	keyRefused                // its meaning cannot be kept: a 400
	keyChecked                // mapped when at its default, else refused (checkValues)
)

// manifestKeys classifies LibreFang's manifest keys by path; a key not
// listed takes the rule of its nearest listed parent, and one with no
// listed parent is unknown (a 400, like an unknown JSON field).
var manifestKeys = map[string]keyRule{
	"name": keyMapped, "description": keyMapped, "tags": keyMapped, "profile": keyMapped,
	"model": keyMapped, "model.provider": keyMapped, "model.model": keyMapped, "model.name": keyMapped,
	"model.max_tokens": keyMapped, "model.system_prompt": keyMapped, "model.temperature": keyMapped,
	"resources": keyMapped, "resources.max_cost_per_day_usd": keyMapped, "resources.max_cost_per_month_usd": keyMapped,
	"capabilities": keyMapped, "capabilities.tools": keyMapped,
	"mcp_servers": keyMapped, "mcp_disabled": keyMapped, "channels": keyMapped, "tool_allowlist": keyMapped, "tool_blocklist": keyMapped,
	"tools_disabled": keyMapped,

	// Limits fangd does not enforce (yet): fine at LibreFang's "none".
	"module": keyChecked, "enabled": keyChecked, "fallback_models": keyChecked, "schedule": keyChecked,
	"resources.max_cost_per_hour_usd": keyChecked, "resources.max_llm_tokens_per_hour": keyChecked,
	"resources.max_tool_calls_per_minute": keyChecked, "resources.max_network_bytes_per_hour": keyChecked,
	"resources.burst_ratio": keyChecked,

	// Descriptive, or grants of LibreFang runtime features fangd agents
	// do not have (a shell, memory namespaces, WASM limits, skills,
	// workspaces): dropping a grant leaves the agent with less, never more.
	"version": keyIgnored, "author": keyIgnored, "metadata": keyIgnored, "i18n": keyIgnored,
	"priority": keyIgnored, "is_hand": keyIgnored, "pinned_model": keyIgnored,
	"session_mode": keyIgnored, "generate_identity_files": keyIgnored, "auto_evolve": keyIgnored,
	"show_progress": keyIgnored, "inherit_parent_context": keyIgnored, "skills": keyIgnored,
	"skills_disabled": keyIgnored, "allowed_plugins": keyIgnored, "workspace": keyIgnored, "workspaces": keyIgnored,
	"exec_policy": keyIgnored, "web_search_augmentation": keyIgnored, "auto_dream_enabled": keyIgnored,
	"auto_dream_min_hours": keyIgnored, "auto_dream_min_sessions": keyIgnored,
	"capabilities.network": keyIgnored, "capabilities.shell": keyIgnored, "capabilities.memory_read": keyIgnored,
	"capabilities.memory_write": keyIgnored, "capabilities.agent_spawn": keyIgnored,
	"capabilities.agent_message": keyIgnored, "capabilities.ofp_discover": keyIgnored,
	"capabilities.ofp_connect":   keyIgnored,
	"resources.max_memory_bytes": keyIgnored, "resources.max_cpu_time_ms": keyIgnored,

	// Behaviour fangd would silently not have: refused.
	"model.api_key_env": keyRefused, "model.base_url": keyRefused, "model.context_window": keyRefused,
	"model.max_output_tokens": keyRefused, "tools": keyRefused, "routing": keyRefused, "autonomous": keyRefused,
	"response_format": keyRefused, "thinking": keyRefused, "context_injection": keyRefused,
	"channel_overrides": keyRefused, "max_history_messages": keyRefused, "triggers": keyRefused,
}

// why says, for a refused key, what fangd does instead.
var refusedWhy = map[string]string{
	"model.api_key_env":                    "provider keys are set per provider ([providers.<name>] api_key_env)",
	"model.base_url":                       "provider URLs are set per provider ([providers.<name>] base_url)",
	"model.context_window":                 "context windows come from the model catalog ([[models]])",
	"model.max_output_tokens":              "use model.max_tokens",
	"resources.max_cost_per_hour_usd":      "hourly budgets are not built yet; use max_cost_per_day_usd or max_cost_per_month_usd",
	"resources.max_llm_tokens_per_hour":    "token budgets are not built yet; use max_cost_per_day_usd or max_cost_per_month_usd",
	"resources.max_tool_calls_per_minute":  "fangd has no per-minute tool call limit",
	"resources.max_network_bytes_per_hour": "fangd does not meter an agent's network bytes",
	"resources.burst_ratio":                "token budgets are not built yet",
	"module":                               `fangd runs chat agents only ("builtin:chat")`,
	"enabled":                              "every agent fangd has runs",
	"fallback_models":                      "fangd has no fallback model chain",
	"schedule":                             "fangd runs no scheduled agents (only the reactive default)",
}

// ruleOf finds a key's rule: its own, or its nearest listed parent's.
func ruleOf(key string) (keyRule, string, bool) {
	for k := key; ; {
		if r, ok := manifestKeys[k]; ok {
			return r, k, true
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			return 0, "", false
		}
		k = k[:i]
	}
}

// profileTools expands LibreFang's named tool profiles.
var profileTools = map[string][]string{
	"minimal":    {"file_read", "file_list"},
	"coding":     {"file_read", "file_write", "file_list", "shell_exec", "web_fetch"},
	"research":   {"web_fetch", "web_search", "file_read", "file_write"},
	"messaging":  {"agent_send", "agent_list", "channel_send", "memory_store", "memory_list", "memory_recall"},
	"automation": {"file_read", "file_write", "file_list", "shell_exec", "web_fetch", "web_search", "agent_send", "agent_list", "channel_send", "memory_store", "memory_list", "memory_recall"},
	"full":       {"*"},
	"custom":     {"*"},
}

func manifestErr(format string, args ...any) error {
	return kernel.Errorf(kernel.KindInvalid, "invalid_manifest", format, args...)
}

// ImportManifest maps a LibreFang agent.toml onto a Spec. defaultModel
// ("provider/model", may be empty) stands for LibreFang's "default"
// provider and model.
func ImportManifest(text, defaultModel string) (*Imported, error) {
	if len(text) > MaxManifestBytes {
		return nil, kernel.Errorf(kernel.KindTooLarge, "manifest_too_large", "manifest_toml is %d bytes; at most %d are allowed", len(text), MaxManifestBytes)
	}
	var m lfManifest
	md, err := toml.Decode(text, &m)
	if err != nil {
		return nil, manifestErr("manifest_toml is not a valid agent manifest: %v", err)
	}
	var unknown, refused, ignored []string
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		key := k.String()
		rule, at, ok := ruleOf(key)
		switch {
		case !ok:
			unknown = append(unknown, key)
		case seen[at]:
		case rule == keyRefused:
			refused = append(refused, at)
		case rule == keyIgnored:
			ignored = append(ignored, at)
		}
		seen[at] = true
	}
	if len(unknown) > 0 {
		return nil, kernel.Errorf(kernel.KindInvalid, "unknown_manifest_field", "manifest_toml has keys that are not in LibreFang's agent manifest: %s", strings.Join(unknown, ", "))
	}
	refused = append(refused, checkValues(&m, md)...)
	if len(refused) > 0 {
		sort.Strings(refused)
		parts := make([]string, len(refused))
		for i, k := range refused {
			parts[i] = k
			if w := refusedWhy[k]; w != "" {
				parts[i] += " (" + w + ")"
			}
		}
		return nil, kernel.Errorf(kernel.KindInvalid, "unsupported_manifest_field", "manifest_toml sets what fangd cannot honour: %s", strings.Join(parts, "; "))
	}

	imp := &Imported{Ignored: ignored}
	s := &imp.Spec
	s.Name, s.Description, s.Tags = strings.TrimSpace(m.Name), m.Description, m.Tags
	if s.Name == "" {
		return nil, manifestErr("manifest_toml has no name (give one, or pass \"name\" beside it)")
	}
	if s.Model, err = manifestModel(m.Model.Provider, firstNonEmpty(m.Model.Model, m.Model.Name), defaultModel); err != nil {
		return nil, err
	}
	maxTokens := int64(DefaultManifestMaxTokens)
	if m.Model.MaxTokens != nil {
		maxTokens = *m.Model.MaxTokens
	}
	if maxTokens < 1 || maxTokens > MaxMaxTokens {
		return nil, manifestErr("model.max_tokens must be between 1 and %d, got %d", MaxMaxTokens, maxTokens)
	}
	mt := int(maxTokens)
	s.MaxTokens = &mt
	// Checked against the provider's range by the Create that follows.
	s.Temperature = m.Model.Temperature
	s.SystemPrompt = DefaultManifestPrompt
	if m.Model.SystemPrompt != nil {
		s.SystemPrompt = strings.TrimSpace(*m.Model.SystemPrompt)
	}
	if s.Tools, err = manifestTools(&m); err != nil {
		return nil, err
	}
	// channels and mcp_servers are allow-lists on fangd's agents too (an
	// empty one allows all there; LibreFang's "*" is that). The MCP
	// servers' tools are also in Tools, as globs: the list of tools is
	// what offers them.
	s.Channels = m.Channels
	if !m.MCPServers.all() && !m.MCPDisabled {
		s.MCPServers = m.MCPServers
	}
	for _, c := range []struct {
		key string
		v   float64
		dst **float64
	}{{"resources.max_cost_per_day_usd", m.Resources.MaxCostPerDayUSD, &imp.DailyUSD}, {"resources.max_cost_per_month_usd", m.Resources.MaxCostPerMonthUSD, &imp.MonthlyUSD}} {
		switch {
		case math.IsNaN(c.v) || math.IsInf(c.v, 0) || c.v < 0:
			return nil, manifestErr("%s must be a finite number >= 0, got %v", c.key, c.v)
		case c.v > 0: // 0 is LibreFang's "unlimited"
			v := c.v
			*c.dst = &v
		}
	}
	return imp, nil
}

// checkValues refuses the keyChecked keys set to anything but LibreFang's
// default ("none", "reactive", "builtin:chat", enabled).
func checkValues(m *lfManifest, md toml.MetaData) []string {
	var out []string
	r := &m.Resources
	for key, bad := range map[string]bool{
		"module":                               m.Module != "" && m.Module != "builtin:chat",
		"enabled":                              m.Enabled != nil && !*m.Enabled,
		"fallback_models":                      len(m.FallbackModels) > 0,
		"schedule":                             m.Schedule != nil && !isReactive(m.Schedule),
		"resources.max_cost_per_hour_usd":      r.MaxCostPerHourUSD != 0,
		"resources.max_llm_tokens_per_hour":    r.MaxLLMTokensPerHour != 0,
		"resources.max_tool_calls_per_minute":  r.MaxToolCallsPerMinute != nil,
		"resources.max_network_bytes_per_hour": r.MaxNetworkBytesPerHour != nil,
		"resources.burst_ratio":                r.BurstRatio != nil,
	} {
		if bad && md.IsDefined(strings.Split(key, ".")...) {
			out = append(out, key)
		}
	}
	return out
}

// isReactive reports whether a schedule is LibreFang's default: the
// string "reactive" (or a table naming only it).
func isReactive(v any) bool {
	switch s := v.(type) {
	case string:
		return s == "reactive"
	case map[string]any:
		_, ok := s["reactive"]
		return ok && len(s) == 1
	}
	return false
}

// manifestModel makes fangd's "provider/model" of a manifest's [model];
// "default" (LibreFang's "the daemon's default model") takes defaultModel's part.
func manifestModel(provider, model, defaultModel string) (string, error) {
	if provider == "" {
		provider = "default"
	}
	if model == "" {
		model = "default"
	}
	if provider == "default" || model == "default" {
		dp, dm, ok := strings.Cut(defaultModel, "/")
		if !ok {
			return "", kernel.Errorf(kernel.KindInvalid, "no_default_model",
				`the manifest's model is provider %q, model %q, and fangd has no default model: set [default_model] in config.toml, or pass "model": "<provider>/<model id>" beside manifest_toml or template`, provider, model)
		}
		if provider == "default" {
			provider = dp
		}
		if model == "default" {
			model = dm
		}
	}
	return provider + "/" + model, nil
}

// manifestTools makes fangd's tool list: capabilities.tools (or the
// profile's), each MCP server as the glob of its tools, then LibreFang's
// allowlist and blocklist applied; none at all with tools_disabled.
func manifestTools(m *lfManifest) ([]string, error) {
	if m.ToolsDisabled {
		return []string{}, nil
	}
	tools := slices.Clone(m.Capabilities.Tools)
	if len(tools) == 0 && m.Profile != "" {
		p, ok := profileTools[m.Profile]
		if !ok {
			return nil, manifestErr("profile %q is not one of minimal, coding, research, messaging, automation, full, custom", m.Profile)
		}
		tools = slices.Clone(p)
	}
	if m.MCPDisabled {
		// LibreFang's belt and braces: no MCP tool at all, even one named.
		tools = slices.DeleteFunc(tools, func(t string) bool { return strings.HasPrefix(t, "mcp_") })
	} else {
		for _, srv := range m.MCPServers {
			if srv == "*" {
				tools = append(tools, "mcp_*")
				continue
			}
			tools = append(tools, "mcp_"+strings.ReplaceAll(strings.ToLower(srv), "-", "_")+"_*")
		}
	}
	if len(m.ToolAllowlist) > 0 {
		kept := tools[:0]
		for _, t := range tools {
			switch {
			case slices.Contains(m.ToolAllowlist, t):
				kept = append(kept, t)
			case strings.Contains(t, "*"):
				// A glob narrowed by an allowlist is the allowlist's
				// names it covers; fangd's list is names and globs, so
				// say it rather than guess.
				return nil, manifestErr("tool_allowlist cannot narrow the glob %q: list the tools in capabilities.tools", t)
			}
		}
		tools = kept
	}
	for _, b := range m.ToolBlocklist {
		for _, t := range tools {
			if t != b && strings.Contains(t, "*") && matches(t, b) {
				return nil, manifestErr("tool_blocklist entry %q is inside the glob %q, which fangd cannot subtract from: list the allowed tools by name", b, t)
			}
		}
		tools = slices.DeleteFunc(tools, func(t string) bool { return t == b })
	}
	return tools, nil
}

// matches is the glob match offeredTools applies to a manifest's tools.
func matches(glob, name string) bool {
	ok, _ := path.Match(glob, name)
	return ok
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Warnings describes what was ignored, for the answer's warnings.
func (imp *Imported) Warnings() []string {
	if len(imp.Ignored) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("ignored (no effect in fangd): %s", strings.Join(imp.Ignored, ", "))}
}
