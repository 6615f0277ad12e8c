package mcp

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Connection states.
const (
	StatusConnecting   = "connecting"
	StatusConnected    = "connected"
	StatusReconnecting = "reconnecting" // down, a retry is scheduled
	StatusError        = "error"        // down for good: permanent error or retries exhausted
	StatusDisabled     = "disabled"
)

// ToolInfo is one tool of a server as fangd exposes it.
type ToolInfo struct {
	Name         string          `json:"name"` // mcp_<server>_<tool>
	OriginalName string          `json:"original_name"`
	Description  string          `json:"description"`
	InputSchema  json.RawMessage `json:"input_schema,omitempty"`
	// ReadOnlyHint is the server's readOnlyHint annotation: the tool says
	// it does not change its environment. A hint, not a guarantee: the
	// approval policy decides how far to believe it.
	ReadOnlyHint bool `json:"read_only_hint"`
	// Changed: the definition differs from the pin taken at first sight.
	Changed bool `json:"changed,omitempty"`
	// Quarantined: changed and not callable until accepted.
	Quarantined bool `json:"quarantined,omitempty"`
}

// ServerView is a server as GET /api/mcp/servers shows it: the seed's
// fields (name, transport as a string, command, args, url, connected,
// tools) plus the rest of the definition and its status. Secret values
// never appear: env lists names, header values show as "***" unless they
// are ${VAR} templates.
type ServerView struct {
	Name            string     `json:"name"`
	Transport       string     `json:"transport"`
	Command         string     `json:"command,omitempty"`
	Args            []string   `json:"args,omitempty"`
	URL             string     `json:"url,omitempty"`
	Connected       bool       `json:"connected"`
	Status          string     `json:"status"`
	TemplateID      string     `json:"template_id"`
	TimeoutSecs     int        `json:"timeout_secs"`
	Env             []string   `json:"env"`
	Headers         []string   `json:"headers"`
	Source          string     `json:"source"` // "config" or "api"
	Disabled        bool       `json:"disabled"`
	ToolCount       int        `json:"tool_count"`
	Tools           []ToolInfo `json:"tools"`
	ToolsChanged    bool       `json:"tools_changed"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorCode   string     `json:"last_error_code,omitempty"`
	Pid             int        `json:"pid,omitempty"`
	ProtocolVersion string     `json:"protocol_version,omitempty"`
	ServerInfo      string     `json:"server_info,omitempty"`
	// Node is the cluster node running the connection of a server added
	// through the API in cluster mode ("" while none does, and outside
	// cluster mode); Cluster says the server is such a one.
	Node    string `json:"node,omitempty"`
	Cluster bool   `json:"cluster,omitempty"`
	// ListedBy names the nodes whose config.toml lists a config server in
	// cluster mode (down ones included); SpecDiffers is set when their
	// specs of it differ (compared by a hash without secret values): one
	// connection runs all the same, from the host's file.
	ListedBy    []string `json:"listed_by,omitempty"`
	SpecDiffers bool     `json:"spec_differs,omitempty"`
}

// HealthEntry is one server in GET /api/mcp/health (LibreFang's fields
// plus tools_changed).
type HealthEntry struct {
	ID                  string  `json:"id"`
	Status              string  `json:"status"`
	ToolCount           int     `json:"tool_count"`
	LastOK              *string `json:"last_ok"`
	LastError           *string `json:"last_error"`
	LastErrorCode       string  `json:"last_error_code,omitempty"`
	ConsecutiveFailures int     `json:"consecutive_failures"`
	Reconnecting        bool    `json:"reconnecting"`
	ReconnectAttempts   int     `json:"reconnect_attempts"`
	ConnectedSince      *string `json:"connected_since"`
	ToolsChanged        bool    `json:"tools_changed"`
}

// HealthReply is GET /api/mcp/health: status is healthy when every
// enabled server is connected, down when none is (and some are
// configured), degraded otherwise.
type HealthReply struct {
	Status string        `json:"status"`
	Health []HealthEntry `json:"health"`
	Count  int           `json:"count"`
}

func view(d definition, st serverState) ServerView {
	s := d.spec
	v := ServerView{
		Name: s.Name, Transport: s.Transport.Type, Command: s.Transport.Command,
		Args: slices.Clone(s.Transport.Args), URL: s.Transport.URL,
		Connected: st.Status == StatusConnected, Status: st.Status, TemplateID: s.TemplateID,
		TimeoutSecs: int(s.Timeout() / time.Second), Env: []string{}, Headers: []string{},
		Source: d.source, Disabled: s.Disabled, Tools: st.Tools, ToolsChanged: st.ToolsChanged,
		LastError: st.LastError, LastErrorCode: st.LastErrorCode, Pid: st.Pid, ProtocolVersion: st.ProtocolVersion, ServerInfo: st.ServerInfo,
	}
	if v.Status == "" {
		v.Status = StatusConnecting
	}
	v.Node, v.Cluster = d.node, d.clustered
	for _, a := range d.listing {
		v.ListedBy = append(v.ListedBy, a.Node)
	}
	v.SpecDiffers = d.differs
	if v.Tools == nil {
		v.Tools = []ToolInfo{}
	}
	v.ToolCount = len(v.Tools)
	for _, e := range s.Env {
		v.Env = append(v.Env, envName(e))
	}
	for _, h := range s.Headers {
		v.Headers = append(v.Headers, showHeader(h))
	}
	return v
}

// showHeader shows a header entry without its value, except a ${VAR}
// template, which holds no secret.
func showHeader(h string) string {
	name, val, ok := strings.Cut(h, ":")
	name = strings.TrimSpace(name)
	if !ok {
		return name + ": ***"
	}
	if isTemplate(val) {
		return name + ":" + val
	}
	return name + ": ***"
}

func health(name string, st serverState) HealthEntry {
	h := HealthEntry{ID: name, Status: st.Status, ToolCount: len(st.Tools),
		ConsecutiveFailures: st.ConsecutiveFailures, Reconnecting: st.Reconnecting,
		ReconnectAttempts: st.ReconnectAttempts, ToolsChanged: st.ToolsChanged}
	if h.Status == "" {
		h.Status = StatusConnecting
	}
	h.LastOK = timePtr(st.LastOK)
	h.ConnectedSince = timePtr(st.ConnectedSince)
	if st.LastError != "" {
		e := st.LastError
		h.LastError, h.LastErrorCode = &e, st.LastErrorCode
	}
	return h
}

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func aggregate(entries []HealthEntry) string {
	enabled, up := 0, 0
	for _, e := range entries {
		if e.Status == StatusDisabled {
			continue
		}
		enabled++
		if e.Status == StatusConnected {
			up++
		}
	}
	switch {
	case up == enabled:
		return "healthy"
	case up == 0:
		return "down"
	}
	return "degraded"
}
