package approval

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Policy is the [approval] table of config.toml: which actions need a
// human, how long a request waits, what happens when nobody answers,
// whether approving needs a TOTP code, who may decide and where requests
// are posted. Key names follow LibreFang's where it has them.
type Policy struct {
	// RequireApproval are globs over tool (action) names: a call of a
	// matching tool always waits for a decision, whatever else says.
	RequireApproval []string `toml:"require_approval"`
	// AutoApprove is LibreFang's boolean (true turns the default gate
	// off: only RequireApproval matches wait) or a list of tool globs the
	// default gate lets through (tools the operator knows are harmless).
	AutoApprove AutoApprove `toml:"auto_approve"`
	// TrustReadOnlyHints are globs over MCP server names whose
	// readOnlyHint annotations are believed; a tool of any other server
	// waits however it is annotated. Default ["*"]; [] believes none.
	TrustReadOnlyHints []string `toml:"trust_read_only_hints"`
	// TimeoutSecs is how long a request waits, from requested_at.
	TimeoutSecs int `toml:"timeout_secs"`
	// TimeoutAction says what an unanswered request becomes: "deny"
	// (expired), "approve" (approved when its risk is low, expired
	// otherwise) or "escalate" (re-posted with EscalateSecs more time, at
	// most MaxEscalations times, then expired).
	TimeoutAction  string `toml:"timeout_action"`
	EscalateSecs   int    `toml:"escalate_secs"`
	MaxEscalations int    `toml:"max_escalations"`
	// SecondFactor is "none" or "totp". With "totp" and a confirmed
	// enrolment, approving an action that TOTPTools match (all gated
	// actions when empty) needs a current code or a recovery code.
	SecondFactor string   `toml:"second_factor"`
	TOTPTools    []string `toml:"totp_tools"`
	TOTPIssuer   string   `toml:"totp_issuer"`
	// Approvers are the API callers allowed to decide, by the identity
	// the HTTP layer gives them ("api_key", "loopback"); empty lets every
	// authenticated caller decide.
	Approvers []string `toml:"approvers"`
	// Notify lists the chats a new request is posted to; their approvers
	// may answer there with /approve or /reject.
	Notify []NotifyTarget `toml:"notify"`
	// RiskLevels maps action globs to a risk level; the first match wins
	// and an action no glob matches is "high". A caller may raise a
	// request's risk, never lower it below the policy's.
	RiskLevels map[string]string `toml:"risk_levels"`
	// MaxPendingPerAgent bounds the requests one agent may have waiting
	// (429 beyond).
	MaxPendingPerAgent int `toml:"max_pending_per_agent"`
	// KeepDecided is how many decided requests are kept for listing and
	// lookup (the audit log keeps every decision regardless).
	KeepDecided int `toml:"keep_decided"`
}

// NotifyTarget is one chat of one configured channel.
type NotifyTarget struct {
	Channel string `toml:"channel"`
	ChatID  string `toml:"chat_id"`
	// Approvers are the platform user ids or @usernames whose /approve
	// and /reject on this channel count.
	Approvers []string `toml:"approvers"`
}

// The fixed vocabularies.
const (
	TimeoutDeny     = "deny"
	TimeoutApprove  = "approve"
	TimeoutEscalate = "escalate"

	SecondFactorNone = "none"
	SecondFactorTOTP = "totp"

	RiskLow      = "low"
	RiskMedium   = "medium"
	RiskHigh     = "high"
	RiskCritical = "critical"
)

var riskRank = map[string]int{RiskLow: 0, RiskMedium: 1, RiskHigh: 2, RiskCritical: 3}

// DefaultPolicy is what fangd uses with no [approval] table: every call
// of a tool not known to be read-only waits (see Gate), five minutes, deny
// on timeout, no second factor. LibreFang's default require_approval names
// (shell_exec, file_write, ...) are not fangd's: no tool fangd offers has
// them, so listing them would gate nothing.
func DefaultPolicy() Policy {
	return Policy{
		RequireApproval:    []string{},
		TrustReadOnlyHints: []string{"*"},
		TimeoutSecs:        300,
		TimeoutAction:      TimeoutDeny,
		MaxEscalations:     3,
		SecondFactor:       SecondFactorNone,
		TOTPIssuer:         "fangd",
		MaxPendingPerAgent: 5,
		KeepDecided:        1000,
	}
}

var (
	globRe     = regexp.MustCompile(`^[A-Za-z0-9_.:*?\[\]-]{1,128}$`)
	approverRe = regexp.MustCompile(`^[^\s]{1,128}$`)
	channelRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// Validate checks the policy and fills defaults for zero values; errors
// name the field.
func (p *Policy) Validate() error {
	def := DefaultPolicy()
	if p.TimeoutSecs == 0 {
		p.TimeoutSecs = def.TimeoutSecs
	}
	if p.TimeoutSecs < 1 || p.TimeoutSecs > 7*24*3600 {
		return errors.New("approval.timeout_secs must be between 1 and 604800 (a week)")
	}
	if p.TimeoutAction == "" {
		p.TimeoutAction = def.TimeoutAction
	}
	switch p.TimeoutAction {
	case TimeoutDeny, TimeoutApprove, TimeoutEscalate:
	default:
		return fmt.Errorf("approval.timeout_action %q: want \"deny\", \"approve\" (low risk only) or \"escalate\"", p.TimeoutAction)
	}
	if p.EscalateSecs == 0 {
		p.EscalateSecs = p.TimeoutSecs
	}
	if p.EscalateSecs < 1 || p.EscalateSecs > 7*24*3600 {
		return errors.New("approval.escalate_secs must be between 1 and 604800")
	}
	if p.MaxEscalations < 0 || p.MaxEscalations > 10 {
		return errors.New("approval.max_escalations must be between 0 and 10")
	}
	if p.SecondFactor == "" {
		p.SecondFactor = def.SecondFactor
	}
	if p.SecondFactor != SecondFactorNone && p.SecondFactor != SecondFactorTOTP {
		return fmt.Errorf("approval.second_factor %q: want \"none\" or \"totp\"", p.SecondFactor)
	}
	if p.TOTPIssuer == "" {
		p.TOTPIssuer = def.TOTPIssuer
	}
	if len(p.TOTPIssuer) > 64 || strings.ContainsAny(p.TOTPIssuer, ":\r\n") {
		return errors.New("approval.totp_issuer must be at most 64 characters without ':' or line breaks")
	}
	if p.MaxPendingPerAgent == 0 {
		p.MaxPendingPerAgent = def.MaxPendingPerAgent
	}
	if p.MaxPendingPerAgent < 1 || p.MaxPendingPerAgent > 1_000_000 {
		return errors.New("approval.max_pending_per_agent must be between 1 and 1000000")
	}
	if p.KeepDecided == 0 {
		p.KeepDecided = def.KeepDecided
	}
	if p.KeepDecided < 1 || p.KeepDecided > 1_000_000 {
		return errors.New("approval.keep_decided must be between 1 and 1000000")
	}
	if p.RequireApproval == nil {
		p.RequireApproval = def.RequireApproval
	}
	if p.TrustReadOnlyHints == nil {
		p.TrustReadOnlyHints = def.TrustReadOnlyHints
	}
	for field, globs := range map[string][]string{"require_approval": p.RequireApproval, "totp_tools": p.TOTPTools,
		"auto_approve": p.AutoApprove.Globs, "trust_read_only_hints": p.TrustReadOnlyHints} {
		if err := checkGlobs("approval."+field, globs); err != nil {
			return err
		}
	}
	for glob, level := range p.RiskLevels {
		if err := checkGlobs("approval.risk_levels", []string{glob}); err != nil {
			return err
		}
		if _, ok := riskRank[level]; !ok {
			return fmt.Errorf("approval.risk_levels[%q] = %q: want low, medium, high or critical", glob, level)
		}
	}
	for i, a := range p.Approvers {
		if !approverRe.MatchString(a) {
			return fmt.Errorf("approval.approvers[%d] %q: want an identity of at most 128 characters without spaces", i, a)
		}
	}
	for i, n := range p.Notify {
		field := fmt.Sprintf("approval.notify[%d]", i)
		if !channelRe.MatchString(n.Channel) {
			return fmt.Errorf("%s.channel %q: want the name of a configured channel", field, n.Channel)
		}
		if n.ChatID == "" || len(n.ChatID) > 256 {
			return fmt.Errorf("%s.chat_id is required (the chat the requests are posted to)", field)
		}
		if len(n.Approvers) == 0 {
			return fmt.Errorf("%s.approvers is empty: list the user ids or @usernames allowed to decide from %s", field, n.Channel)
		}
		for j, a := range n.Approvers {
			if !approverRe.MatchString(a) {
				return fmt.Errorf("%s.approvers[%d] %q: want a user id or @username without spaces", field, j, a)
			}
		}
	}
	return nil
}

func checkGlobs(field string, globs []string) error {
	for i, g := range globs {
		if !globRe.MatchString(g) {
			return fmt.Errorf("%s[%d] %q: want a tool name or glob (letters, digits, _ . : - and * ? [ ])", field, i, g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("%s[%d] %q: %v", field, i, g, err)
		}
	}
	return nil
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// ToolHints is what fangd knows of a tool besides its name.
type ToolHints struct {
	// Server is the MCP server that offers the tool; "" for fangd's own
	// tools (its MCP built-ins, a2a_send).
	Server string `json:"server,omitempty"`
	// ReadOnly says the tool does not change its environment: for an MCP
	// tool its server's readOnlyHint annotation, for fangd's own tools
	// fangd's own knowledge of them.
	ReadOnly bool `json:"read_only"`
}

// Why a call waits or not (Gate's reason).
const (
	ReasonRequireApproval = "require_approval"
	ReasonAutoApprove     = "auto_approve"
	ReasonReadOnly        = "read_only"
	ReasonHintNotTrusted  = "read_only_hint_not_trusted"
	ReasonNotReadOnly     = "not_read_only"
)

// Gate decides whether a call of tool waits for a human, and why. In
// order: a require_approval match waits; auto_approve (true, or a
// matching glob) lets it through; a read-only tool runs at once when the
// hint comes from fangd itself or from a server trust_read_only_hints
// names; everything else waits. Unknown tools get zero hints, so they wait.
func (p *Policy) Gate(tool string, h ToolHints) (gated bool, reason string) {
	switch {
	case matchAny(p.RequireApproval, tool):
		return true, ReasonRequireApproval
	case p.AutoApprove.All || matchAny(p.AutoApprove.Globs, tool):
		return false, ReasonAutoApprove
	case !h.ReadOnly:
		return true, ReasonNotReadOnly
	case h.Server != "" && !matchAny(p.TrustReadOnlyHints, h.Server):
		return true, ReasonHintNotTrusted
	}
	return false, ReasonReadOnly
}

// Gated reports whether calling tool needs a human decision.
func (p *Policy) Gated(tool string, h ToolHints) bool {
	gated, _ := p.Gate(tool, h)
	return gated
}

// UnmatchedPattern is a policy glob that matches nothing fangd offers now.
type UnmatchedPattern struct {
	Key     string `json:"key"`
	Pattern string `json:"pattern"`
}

// Unmatched lists the tool globs of the policy (require_approval,
// auto_approve, totp_tools, risk_levels) that match none of tools, and
// the trust_read_only_hints globs other than "*" that match none of
// servers (the configured MCP servers): most likely a typo, or a name
// from another product (LibreFang's shell_exec) that gates nothing here.
func (p *Policy) Unmatched(tools, servers []string) []UnmatchedPattern {
	var out []UnmatchedPattern
	check := func(key string, globs []string, names []string) {
		for _, g := range globs {
			found := false
			for _, n := range names {
				if ok, _ := path.Match(g, n); ok {
					found = true
					break
				}
			}
			if !found {
				out = append(out, UnmatchedPattern{Key: "approval." + key, Pattern: g})
			}
		}
	}
	check("require_approval", p.RequireApproval, tools)
	check("auto_approve", p.AutoApprove.Globs, tools)
	check("totp_tools", p.TOTPTools, tools)
	risk := slices.Sorted(maps.Keys(p.RiskLevels))
	check("risk_levels", risk, tools)
	var trust []string
	for _, g := range p.TrustReadOnlyHints {
		if g != "*" {
			trust = append(trust, g)
		}
	}
	check("trust_read_only_hints", trust, servers)
	return out
}

// AutoApprove is [approval] auto_approve: LibreFang's boolean, or a list
// of tool globs.
type AutoApprove struct {
	// All: LibreFang's auto_approve = true, the default gate is off.
	All bool
	// Globs are tools the default gate lets through.
	Globs []string
}

// UnmarshalTOML takes true, false or a list of strings.
func (a *AutoApprove) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case bool:
		*a = AutoApprove{All: x}
		return nil
	case []any:
		globs := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("approval.auto_approve[%d]: want a tool name or glob (a string)", i)
			}
			globs = append(globs, s)
		}
		*a = AutoApprove{Globs: globs}
		return nil
	}
	return errors.New("approval.auto_approve: want true, false or a list of tool names or globs")
}

// MarshalJSON shows it as it is written: true/false, or the list.
func (a AutoApprove) MarshalJSON() ([]byte, error) {
	if len(a.Globs) > 0 {
		return json.Marshal(a.Globs)
	}
	return json.Marshal(a.All)
}

// TOTPApplies reports whether approving action needs a second factor
// (once one is enrolled and confirmed).
func (p *Policy) TOTPApplies(action string) bool {
	if p.SecondFactor != SecondFactorTOTP {
		return false
	}
	return len(p.TOTPTools) == 0 || matchAny(p.TOTPTools, action)
}

// Risk is the policy's risk level for action, raised to requested when
// that is higher.
func (p *Policy) Risk(action, requested string) string {
	level := RiskHigh
	// Longest glob first, so "shell_ls" beats "shell_*" whatever the
	// map's order.
	best := -1
	for g, l := range p.RiskLevels {
		if ok, _ := path.Match(g, action); ok && len(g) > best {
			best, level = len(g), l
		}
	}
	if r, ok := riskRank[requested]; ok && r > riskRank[level] {
		level = requested
	}
	return level
}

// APIApprover reports whether an API caller with identity may decide.
func (p *Policy) APIApprover(identity string) bool {
	if len(p.Approvers) == 0 {
		return true
	}
	for _, a := range p.Approvers {
		if a == identity {
			return true
		}
	}
	return false
}

// ChatApprover reports whether a chat user (by platform id or name) is
// on the approver list of a notify target of channel.
func (p *Policy) ChatApprover(channel, userID, userName string) bool {
	for _, n := range p.Notify {
		if n.Channel != channel {
			continue
		}
		for _, a := range n.Approvers {
			bare := strings.TrimPrefix(a, "@")
			if (userID != "" && a == userID) || (userName != "" && strings.EqualFold(bare, strings.TrimPrefix(userName, "@"))) {
				return true
			}
		}
	}
	return false
}

// Timeout is how long a request waits before its first timeout.
func (p *Policy) Timeout() time.Duration { return time.Duration(p.TimeoutSecs) * time.Second }

// MaxWait bounds how long a request can stay pending, escalations
// included.
func (p *Policy) MaxWait() time.Duration {
	d := p.Timeout()
	if p.TimeoutAction == TimeoutEscalate {
		d += time.Duration(p.MaxEscalations*p.EscalateSecs) * time.Second
	}
	return d
}
