package agent

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
)

// Limits on what an agent and a message may hold.
const (
	DefaultMaxTokens = 1024
	MaxMaxTokens     = 1_000_000
	MaxMessageChars  = 100_000
	MaxPromptChars   = 100_000
	maxDescription   = 2000
	maxListItems     = 64
)

var (
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	toolRe = regexp.MustCompile(`^[A-Za-z0-9_.:*-]{1,64}$`)
	capRe  = regexp.MustCompile(`^[A-Za-z0-9_.:*/-]{1,128}$`)
	// bindRe: channel and MCP server names (their own rules are stricter).
	bindRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// ParseRef reads an agent reference from a URL: a UUID is an id, anything
// else that is a valid agent name is a name, the rest is a 400.
func ParseRef(s string) (Ref, error) {
	if len(s) == 36 {
		if u, err := uuid.Parse(s); err == nil {
			return Ref{ID: u.String()}, nil
		}
	}
	if nameRe.MatchString(s) {
		return Ref{Name: s}, nil
	}
	return Ref{}, kernel.Errorf(kernel.KindInvalid, "invalid_agent_id", "%q is neither an agent id (UUID) nor an agent name", truncate(s, 80))
}

// ParseSessionID checks a session id (a UUID) and returns it canonical.
func ParseSessionID(s string) (string, error) {
	u, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", kernel.Errorf(kernel.KindInvalid, "invalid_session_id", "session_id %q is not a UUID", truncate(s, 80))
	}
	return u.String(), nil
}

// CheckMessage validates a message's text: 400 when empty, 413 when over
// MaxMessageChars characters.
func CheckMessage(text string) error {
	if strings.TrimSpace(text) == "" {
		return kernel.Errorf(kernel.KindInvalid, "empty_message", "message must not be empty")
	}
	if !utf8.ValidString(text) {
		return kernel.Errorf(kernel.KindInvalid, "invalid_message", "message is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(text); n > MaxMessageChars {
		return kernel.Errorf(kernel.KindTooLarge, "message_too_large", "message has %d characters; at most %d are allowed", n, MaxMessageChars)
	}
	return nil
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// validName checks an agent name; names must not look like ids.
func validName(name string) error {
	if !nameRe.MatchString(name) {
		return kernel.Invalid("name %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", truncate(name, 80))
	}
	if _, err := uuid.Parse(name); err == nil {
		return kernel.Invalid("name %q looks like an agent id; pick a name that is not a UUID", name)
	}
	return nil
}

func checkText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return kernel.Invalid("%s is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return kernel.Invalid("%s has %d characters; at most %d are allowed", field, n, max)
	}
	return nil
}

func checkList(field string, items []string, re *regexp.Regexp) ([]string, error) {
	if len(items) > maxListItems {
		return nil, kernel.Invalid("%s has %d entries; at most %d are allowed", field, len(items), maxListItems)
	}
	out := make([]string, 0, len(items))
	seen := map[string]bool{}
	for _, it := range items {
		if re != nil && !re.MatchString(it) {
			return nil, kernel.Invalid("%s entry %q is not valid", field, truncate(it, 80))
		}
		if re == nil {
			if it = strings.TrimSpace(it); it == "" || utf8.RuneCountInString(it) > 64 || strings.IndexFunc(it, unicode.IsControl) >= 0 {
				return nil, kernel.Invalid("%s entries must be 1-64 printable characters", field)
			}
		}
		if !seen[it] {
			seen[it] = true
			out = append(out, it)
		}
	}
	return out, nil
}

// checkModel resolves model and checks maxTokens against it.
func checkModel(reg *llm.Registry, model string, maxTokens int) (llm.Route, error) {
	route, err := reg.Resolve(model)
	if err != nil {
		return route, err
	}
	if maxTokens < 1 || maxTokens > MaxMaxTokens {
		return route, kernel.Invalid("max_tokens must be between 1 and %d, got %d", MaxMaxTokens, maxTokens)
	}
	if cw := route.Pricing.ContextWindow; cw > 0 && maxTokens >= cw {
		return route, kernel.Invalid("max_tokens %d does not fit %s's context window of %d tokens", maxTokens, model, cw)
	}
	return route, nil
}

// checkTemperature refuses a temperature outside what the route's
// provider API takes (0-2 OpenAI-compatible, 0-1 Anthropic): sent as is,
// the provider would fail every turn with a 400 of its own.
func checkTemperature(reg *llm.Registry, route llm.Route, t *float64) error {
	if t == nil {
		return nil
	}
	if hi := reg.MaxTemperature(route.Provider); math.IsNaN(*t) || *t < 0 || *t > hi {
		return kernel.Invalid("temperature must be between 0 and %g for %s, got %v", hi, route.Provider, *t)
	}
	return nil
}

// validate checks a whole manifest (after a Spec or a Patch was applied).
func validate(reg *llm.Registry, m *Manifest) error {
	if err := validName(m.Name); err != nil {
		return err
	}
	if err := checkText("description", m.Description, maxDescription); err != nil {
		return err
	}
	if err := checkText("system_prompt", m.SystemPrompt, MaxPromptChars); err != nil {
		return err
	}
	route, err := checkModel(reg, m.Model, m.MaxTokens)
	if err != nil {
		return err
	}
	if err := checkTemperature(reg, route, m.Temperature); err != nil {
		return err
	}
	if m.Tags, err = checkList("tags", m.Tags, nil); err != nil {
		return err
	}
	if m.Tools, err = checkList("tools", m.Tools, toolRe); err != nil {
		return err
	}
	if m.Capabilities, err = checkList("capabilities", m.Capabilities, capRe); err != nil {
		return err
	}
	if m.Channels, err = checkList("channels", m.Channels, bindRe); err != nil {
		return err
	}
	m.MCPServers, err = checkList("mcp_servers", m.MCPServers, bindRe)
	return err
}

// AllowsChannel reports whether the agent answers messages from the
// channel named name (an empty allow-list allows every channel).
func (m *Manifest) AllowsChannel(name string) bool {
	return len(m.Channels) == 0 || slices.Contains(m.Channels, name)
}

// AllowsMCPServer reports whether the agent is offered the tools of the
// MCP server named server ("" for tools that are not an MCP server's).
func (m *Manifest) AllowsMCPServer(server string) bool {
	return server == "" || len(m.MCPServers) == 0 || slices.Contains(m.MCPServers, server)
}

func (s *Spec) manifest() Manifest {
	m := Manifest{Name: s.Name, Description: s.Description, Model: s.Model, SystemPrompt: s.SystemPrompt,
		MaxTokens: DefaultMaxTokens, Tags: s.Tags, Tools: s.Tools, Capabilities: s.Capabilities,
		Channels: s.Channels, MCPServers: s.MCPServers}
	if s.MaxTokens != nil {
		m.MaxTokens = *s.MaxTokens
	}
	m.Temperature = s.Temperature
	return m
}

func (p *Patch) apply(m Manifest) Manifest {
	if p.Name != nil {
		m.Name = *p.Name
	}
	if p.Description != nil {
		m.Description = *p.Description
	}
	if p.Model != nil {
		m.Model = *p.Model
	}
	if p.SystemPrompt != nil {
		m.SystemPrompt = *p.SystemPrompt
	}
	if p.MaxTokens != nil {
		m.MaxTokens = *p.MaxTokens
	}
	if p.Temperature != nil {
		m.Temperature = p.Temperature
	}
	if p.Tags != nil {
		m.Tags = *p.Tags
	}
	if p.Tools != nil {
		m.Tools = *p.Tools
	}
	if p.Capabilities != nil {
		m.Capabilities = *p.Capabilities
	}
	if p.Channels != nil {
		m.Channels = *p.Channels
	}
	if p.MCPServers != nil {
		m.MCPServers = *p.MCPServers
	}
	return m
}

func (p *Patch) empty() bool {
	return p.Name == nil && p.Description == nil && p.Model == nil && p.SystemPrompt == nil &&
		p.MaxTokens == nil && p.Temperature == nil && p.Tags == nil && p.Tools == nil && p.Capabilities == nil &&
		p.Channels == nil && p.MCPServers == nil
}

// defaultSession is the session an agent's messages join when they name
// none: a fixed UUID derived from the agent's id.
func defaultSession(agentID string) string {
	return uuid.NewSHA1(uuid.MustParse(agentID), []byte("default-session")).String()
}
