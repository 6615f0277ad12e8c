package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/mcp"
	metering "github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// Config is config.toml. Key names follow LibreFang's where it has them.
type Config struct {
	APIListen           string `toml:"api_listen"`
	APIKey              string `toml:"api_key"`
	MaxRequestBodyBytes int    `toml:"max_request_body_bytes"`
	// AllowedHosts are Host names served besides loopback names (the DNS
	// rebinding check; see docs/config.md for when it applies).
	AllowedHosts []string `toml:"allowed_hosts"`
	// CORSOrigins are browser origins allowed to read answers and write;
	// CORSOrigin is LibreFang's spelling of the same list.
	CORSOrigins []string `toml:"cors_origins"`
	CORSOrigin  []string `toml:"cors_origin"`
	// TrustedProxies are CIDRs of reverse proxies whose X-Forwarded-For /
	// Forwarded headers name the client (LibreFang's key).
	TrustedProxies []string        `toml:"trusted_proxies"`
	RateLimit      RateLimitConfig `toml:"rate_limit"`
	Log            LogConfig       `toml:"log"`
	HTTP           HTTPConfig      `toml:"http"`
	Audit          AuditConfig     `toml:"audit"`

	// NetworkEnabled is LibreFang's switch of the OFP peer network
	// ([network], config_network.go).
	NetworkEnabled bool          `toml:"network_enabled"`
	Network        NetworkConfig `toml:"network"`
	// Cluster is [cluster]: cluster mode (config_cluster.go).
	Cluster ClusterConfig `toml:"cluster"`

	// MinFreeDiskBytes is the free-space reserve of the data directory's
	// filesystem: below it writes answer 507 and start-up refuses (a full
	// disk would otherwise be a SIGBUS in Badger's memory-mapped files).
	MinFreeDiskBytes int64 `toml:"min_free_disk_bytes"`
	// A2A: config_a2a.go.
	A2A A2AConfig `toml:"a2a"`
	// Comms, webhooks, network policy and inbound hooks: config_comms.go.
	Comms           CommsConfig           `toml:"comms"`
	Webhooks        WebhooksConfig        `toml:"webhooks"`
	NetworkPolicy   NetworkPolicyConfig   `toml:"network_policy"`
	WebhookTriggers WebhookTriggersConfig `toml:"webhook_triggers"`
	// MCPServers are LibreFang's [[mcp_servers]] entries (tagged transport
	// object, or the seed's flat form); decoded loosely here and checked
	// by mcp.ParseSpec, which refuses unknown keys.
	MCPServers []map[string]any `toml:"mcp_servers"`
	MCP        MCPConfig        `toml:"mcp"`
	MCPServer  MCPServerConfig  `toml:"mcp_server"`
	// Providers are [providers.<name>] tables (api, base_url, api_key_env);
	// they override or add to llm.WellKnown.
	Providers map[string]llm.ProviderConfig `toml:"providers"`
	// Models are [[models]] tables that extend or override the catalog.
	Models []llm.ModelConfig `toml:"models"`
	LLM    LLMConfig         `toml:"llm"`
	Usage  UsageConfig       `toml:"usage"`
	Agents AgentsConfig      `toml:"agents"`
	// DefaultModel is LibreFang's [default_model]: what an agent manifest's
	// "default" provider and model stand for (POST /api/agents with
	// manifest_toml or template).
	DefaultModel DefaultModelConfig `toml:"default_model"`
	// Approval is [approval]: which tool calls wait for a human, timeouts,
	// the second factor, approvers and the chats requests are posted to.
	Approval approval.Policy `toml:"approval"`
	// Channels are the [channels.<name>] tables: one chat channel each,
	// validated against its adapter's schema when the channels start (and
	// on POST /api/channels/reload). See docs/channels.md.
	Channels map[string]map[string]any `toml:"channels"`
	// ChannelLimits is [channel_limits]: its own table, since every key
	// under [channels] is a channel's name.
	ChannelLimits ChannelLimitsConfig `toml:"channel_limits"`
	// Pairing is [pairing] (docs/pairing.md).
	Pairing PairingConfig `toml:"pairing"`
	// ExternalAuth is [external_auth]: OIDC sign-in (docs/pairing.md).
	ExternalAuth ExternalAuthConfig `toml:"external_auth"`
	// Users are the named API keys with roles ([[users]]).
	Users []UserConfig `toml:"users"`
	// path is the file this config was read from ("" for none).
	path string
}

// LLMConfig is [llm].
type LLMConfig struct {
	// TimeoutSecs bounds one provider call (default 120).
	TimeoutSecs int `toml:"timeout_secs"`
	// DefaultInputPerM and DefaultOutputPerM price models the catalog
	// does not know, USD per million tokens (default 1.0 and 3.0).
	DefaultInputPerM  *float64 `toml:"default_input_per_m"`
	DefaultOutputPerM *float64 `toml:"default_output_per_m"`
}

// UsageConfig is [usage].
type UsageConfig struct {
	// RetentionDays keeps raw usage events this long; roll-ups are kept
	// forever. 0 keeps raw events forever too (default 90).
	RetentionDays int `toml:"retention_days"`
}

// MCPConfig is [mcp]: the client side.
type MCPConfig struct {
	// CatalogDir holds the installable server templates; default
	// $FANGD_HOME/mcp/catalog (seeded with fangd's entries on first start).
	CatalogDir string `toml:"catalog_dir"`
	// QuarantineChangedTools refuses calls to a tool whose definition
	// changed since it was first seen, until accepted.
	QuarantineChangedTools bool `toml:"quarantine_changed_tools"`
	// FailureThreshold is how many consecutive failed calls force a
	// reconnect (default 3).
	FailureThreshold int              `toml:"failure_threshold"`
	Sandbox          MCPSandboxConfig `toml:"sandbox"`
	// OAuthRedirectBase is fangd's public base URL for MCP OAuth
	// redirects (behind a reverse proxy); empty: the request's own host.
	OAuthRedirectBase string `toml:"oauth_redirect_base"`
}

// MCPSandboxConfig is [mcp.sandbox] for stdio servers.
type MCPSandboxConfig struct {
	// EnvAllowlist replaces the daemon variables every server inherits
	// (default PATH, HOME, LANG, LC_ALL, LC_CTYPE, TZ, TMPDIR, USER,
	// LOGNAME, SHELL, TERM).
	EnvAllowlist []string `toml:"env_allowlist"`
	CPUSeconds   int      `toml:"cpu_seconds"` // RLIMIT_CPU; 0 = none
	MemoryMB     int      `toml:"memory_mb"`   // RLIMIT_AS; 0 = none
}

// MCPServerConfig is [mcp_server]: fangd as an MCP server at POST /mcp.
type MCPServerConfig struct {
	Enabled            *bool  `toml:"enabled"` // default true
	Stateless          bool   `toml:"stateless"`
	SessionTimeoutSecs int    `toml:"session_timeout_secs"`
	WorkspaceDir       string `toml:"workspace_dir"` // default $FANGD_HOME/workspace
	MaxBodyBytes       int    `toml:"max_body_bytes"`
	// MaxSessions bounds the live /mcp sessions (429 beyond).
	MaxSessions int `toml:"max_sessions"`
}

// AgentsConfig is [agents].
type AgentsConfig struct {
	// MaxAgents bounds how many agents exist (409 agent_limit_reached).
	MaxAgents int `toml:"max_agents"`
	// MaxStreams bounds the open POST /api/agents/{id}/message/stream
	// answers (429 agent_stream_limit beyond).
	MaxStreams int `toml:"max_streams"`
}

// DefaultModelConfig is [default_model].
type DefaultModelConfig struct {
	Provider string `toml:"provider"`
	Model    string `toml:"model"`
}

// route is "provider/model", or "" when unset.
func (d DefaultModelConfig) route() string {
	if d.Provider == "" {
		return ""
	}
	return d.Provider + "/" + d.Model
}

// RateLimitConfig is [rate_limit].
type RateLimitConfig struct {
	// APIRequestsPerMinute is the GCRA quota per client IP; 0 turns the
	// limiter off.
	APIRequestsPerMinute int `toml:"api_requests_per_minute"`
	// ExemptLoopback lets direct loopback callers bypass the limiter.
	ExemptLoopback bool `toml:"exempt_loopback"`
}

// LogConfig is [log].
type LogConfig struct {
	Level    string `toml:"level"`     // trace, debug, info, warn, error
	Format   string `toml:"format"`    // json or pretty
	RingSize int    `toml:"ring_size"` // lines kept for GET /api/logs/stream
	// MaxStreams bounds the open GET /api/logs/stream subscribers.
	MaxStreams int `toml:"max_streams"`
	// AccessLog writes one line per HTTP request at info level.
	AccessLog bool `toml:"access_log"`
}

// HTTPConfig is [http].
type HTTPConfig struct {
	SecurityHeaders *bool `toml:"security_headers"`
	// RequestTimeoutSecs bounds a request's domain calls together; the
	// handlers that wait longer by design (agent turns, approval waits,
	// A2A sends, MCP reconnects) keep their own limits.
	RequestTimeoutSecs int `toml:"request_timeout_secs"`
}

// AuditConfig is [audit].
type AuditConfig struct {
	// AnchorPath is the tip anchor file; default $FANGD_HOME/audit.anchor.
	AnchorPath string `toml:"anchor_path"`
	// AuthFailureIntervalSecs is how often failed authentications are
	// written, one auth_failed entry per source address with a count.
	AuthFailureIntervalSecs int `toml:"auth_failure_interval_secs"`
	// OnAnchorMismatch is what start-up does when the anchor and the stored
	// chain disagree: "refuse" (default) or "degraded".
	OnAnchorMismatch string `toml:"on_anchor_mismatch"`
	// RetainEntries keeps the newest N entries (older ones are exported to
	// $FANGD_HOME/audit-archive and trimmed behind a checkpoint); 0 keeps all.
	RetainEntries int64 `toml:"retain_entries"`
	// RetainDays trims, the same way, the entries older than N days; 0
	// keeps entries of any age. Either limit trims.
	RetainDays int `toml:"retain_days"`
}

// ChannelLimitsConfig bounds the chat channels.
type ChannelLimitsConfig struct {
	// MaxChannels caps the configured channels, API and config.toml
	// together; a new one beyond it is 409 too_many_channels.
	MaxChannels int `toml:"max_channels"`
}

func defaultConfig() Config {
	return Config{
		APIListen:           "127.0.0.1:4545",
		MaxRequestBodyBytes: 8 << 20,
		MinFreeDiskBytes:    store.DefaultMinFreeBytes,
		RateLimit:           RateLimitConfig{APIRequestsPerMinute: 500},
		Audit:               AuditConfig{AuthFailureIntervalSecs: 60},
		HTTP:                HTTPConfig{RequestTimeoutSecs: 5},
		Log:                 LogConfig{Level: "info", Format: "json", RingSize: 2000, MaxStreams: fhttp.DefaultMaxLogStreams},
		A2A:                 defaultA2AConfig(),
		Network:             defaultNetworkConfig(),
		Comms:               defaultCommsConfig(),
		Webhooks:            defaultWebhooksConfig(),
		ChannelLimits:       ChannelLimitsConfig{MaxChannels: channel.DefaultMaxChannels},
		WebhookTriggers:     defaultWebhookTriggersConfig(),
		MCP:                 MCPConfig{FailureThreshold: 3},
		MCPServer:           MCPServerConfig{SessionTimeoutSecs: 120, MaxBodyBytes: 1 << 20, MaxSessions: fhttp.DefaultMCPSessions},
		LLM:                 LLMConfig{TimeoutSecs: int(llm.DefaultTimeout / time.Second)},
		Agents:              AgentsConfig{MaxAgents: agent.DefaultMaxAgents, MaxStreams: fhttp.DefaultMaxAgentStreams},
		Usage:               UsageConfig{RetentionDays: int(metering.DefaultRetention / (24 * time.Hour))},
		Approval:            approval.DefaultPolicy(),
		Pairing:             defaultPairingConfig(),
		ExternalAuth:        ExternalAuthConfig{SessionTTLSecs: 86_400, Scopes: []string{"openid", "profile", "email"}},
	}
}

// loadConfig reads path over the defaults. A missing file is fine unless
// it was named explicitly; an unknown key is an error that names it.
func loadConfig(path string, explicit bool) (Config, error) {
	cfg := defaultConfig()
	md, err := toml.DecodeFile(path, &cfg)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		cfg.path = path // it may be created later and reloaded
		return cfg, nil
	}
	cfg.path = path
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var keys []string
	for _, k := range md.Undecoded() {
		// [[mcp_servers]] entries are decoded loosely, so the keys of a
		// nested table (LibreFang's transport = { type = ... }) count as
		// undecoded here; mcp.ParseSpec refuses their unknown keys itself.
		if len(k) > 1 && k[0] == "mcp_servers" {
			continue
		}
		keys = append(keys, k.String())
	}
	if len(keys) > 0 {
		return cfg, fmt.Errorf("config %s: unknown key(s): %s", path, strings.Join(keys, ", "))
	}
	return cfg, nil
}

// applyEnv lets FANGD_LISTEN and FANGD_API_KEY override the file.
func (c *Config) applyEnv() {
	if v := os.Getenv("FANGD_LISTEN"); v != "" {
		c.APIListen = v
	}
	if v := os.Getenv("FANGD_API_KEY"); v != "" {
		c.APIKey = v
	}
}

// validate checks the whole config before anything starts (and before a
// reload applies anything). It reports every bad key it finds, one error
// each, so that a user fixes them in one pass.
// within is the error of a setting name whose value v is outside
// [lo, hi], nil when it is inside.
func within[T ~int | ~int64](name string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s must be between %d and %d", name, lo, hi)
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if host, _, err := net.SplitHostPort(c.APIListen); err != nil {
		bad(fmt.Errorf("api_listen %q: %w", c.APIListen, err))
	} else if c.APIKey == "" && !isLoopbackHost(host) {
		bad(fmt.Errorf("api_listen %q is not a loopback address and no api_key is set: refusing to serve the API to the network without authentication (set api_key or FANGD_API_KEY)", c.APIListen))
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		bad(errors.New("api_key must be at least 16 characters"))
	}
	if c.MaxRequestBodyBytes <= 0 {
		bad(errors.New("max_request_body_bytes must be positive"))
	}
	if c.MinFreeDiskBytes < 0 {
		bad(errors.New("min_free_disk_bytes must be >= 0 (0 turns the free-space guard off)"))
	}
	if c.RateLimit.APIRequestsPerMinute < 0 {
		bad(errors.New("rate_limit.api_requests_per_minute must be >= 0 (0 turns it off)"))
	}
	bad(c.httpConfig().ValidateEdge())
	bad(c.Cluster.validate())
	bad(within("http.request_timeout_secs", c.HTTP.RequestTimeoutSecs, 1, 3600))
	bad(within("audit.auth_failure_interval_secs", c.Audit.AuthFailureIntervalSecs, 1, 3600))
	if _, err := zerolog.ParseLevel(c.Log.Level); err != nil || c.Log.Level == "" {
		bad(fmt.Errorf("log.level %q: want trace, debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "json" && c.Log.Format != "pretty" {
		bad(fmt.Errorf("log.format %q: want json or pretty", c.Log.Format))
	}
	bad(within("log.ring_size", c.Log.RingSize, 1, 1_000_000))
	bad(within("log.max_streams", c.Log.MaxStreams, 1, 10_000))
	if m := c.Audit.OnAnchorMismatch; m != "" && m != audit.OnMismatchRefuse && m != audit.OnMismatchDegraded {
		bad(fmt.Errorf("audit.on_anchor_mismatch %q: want %q or %q", m, audit.OnMismatchRefuse, audit.OnMismatchDegraded))
	}
	if c.Audit.RetainEntries < 0 {
		bad(errors.New("audit.retain_entries must be >= 0 (0 keeps every entry)"))
	}
	if c.Audit.RetainDays < 0 || c.Audit.RetainDays > 36_500 {
		bad(errors.New("audit.retain_days must be between 0 and 36500 (0 keeps entries of any age)"))
	}
	_, err := c.a2aSettings()
	bad(err)
	_, err = c.networkSettings()
	bad(err)
	_, err = c.mcpSpecs()
	bad(err)
	if b := c.MCP.OAuthRedirectBase; b != "" {
		if u, err := url.Parse(b); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(fmt.Errorf("mcp.oauth_redirect_base %q must be an absolute http(s) URL without query or fragment", b))
		}
	}
	bad(within("mcp.failure_threshold", c.MCP.FailureThreshold, 1, 1000))
	if c.MCP.Sandbox.CPUSeconds < 0 || c.MCP.Sandbox.MemoryMB < 0 {
		bad(errors.New("mcp.sandbox.cpu_seconds and mcp.sandbox.memory_mb must be >= 0 (0 = no limit)"))
	}
	for _, name := range c.MCP.Sandbox.EnvAllowlist {
		if name == "" || strings.ContainsAny(name, "= \x00") {
			bad(fmt.Errorf("mcp.sandbox.env_allowlist: %q is not a variable name", name))
		}
	}
	if c.MCPServer.SessionTimeoutSecs < 1 {
		bad(errors.New("mcp_server.session_timeout_secs must be at least 1"))
	}
	bad(within("mcp_server.max_sessions", c.MCPServer.MaxSessions, 1, 100_000))
	bad(within("agents.max_agents", c.Agents.MaxAgents, 1, 1_000_000))
	bad(within("agents.max_streams", c.Agents.MaxStreams, 1, 100_000))
	if dm := c.DefaultModel; (dm.Provider == "") != (dm.Model == "") || strings.ContainsAny(dm.Provider, "/ \t") {
		bad(errors.New(`default_model needs both provider (a [providers] name) and model (the provider's model id)`))
	} else if p := dm.Provider; p != "" {
		if _, ok := c.llmOptions().Providers[p]; !ok {
			if _, ok := llm.WellKnown[p]; !ok {
				bad(fmt.Errorf("default_model.provider %q is not a configured or well-known provider", p))
			}
		}
	}
	if c.MCPServer.MaxBodyBytes < 1024 {
		bad(errors.New("mcp_server.max_body_bytes must be at least 1024"))
	}
	bad(within("llm.timeout_secs", c.LLM.TimeoutSecs, 1, 3600))
	if c.Usage.RetentionDays < 0 || c.Usage.RetentionDays > 36500 {
		bad(errors.New("usage.retention_days must be between 0 (keep forever) and 36500"))
	}
	bad(c.Approval.Validate())
	bad(llm.ValidateConfig(c.llmOptions()))
	bad(c.validateComms())
	bad(within("a2a.max_streams", c.A2A.MaxStreams, 1, 100_000))
	bad(within("channel_limits.max_channels", c.ChannelLimits.MaxChannels, 1, 100_000))
	bad(within("comms.max_streams", c.Comms.MaxStreams, 1, 100_000))
	if c.Pairing.Enabled {
		_, _, err := c.pairingSettings()
		bad(err)
	}
	_, err = c.users()
	bad(err)
	if c.ExternalAuth.Enabled {
		_, _, err := c.authSettings()
		bad(err)
	}
	return errors.Join(errs...)
}

// llmOptions maps [providers], [[models]] and [llm] onto the registry's options.
// An untrusted base_url goes through [network_policy] like every other
// URL fangd dials (a bad allow_hosts is reported by validateComms).
func (c *Config) llmOptions() llm.Options {
	o := llm.Options{Providers: c.Providers, Models: c.Models, Timeout: time.Duration(c.LLM.TimeoutSecs) * time.Second,
		DefaultInputPerM: c.LLM.DefaultInputPerM, DefaultOutputPerM: c.LLM.DefaultOutputPerM}
	if g, err := ssrf.New(c.NetworkPolicy.AllowHosts); err == nil {
		o.Guard = g
	}
	return o
}

// mcpSpecs turns [[mcp_servers]] into checked specs, naming the entry at
// fault.
func (c *Config) mcpSpecs() ([]mcp.Spec, error) {
	var out []mcp.Spec
	seen := map[string]bool{}
	for i, raw := range c.MCPServers {
		j, err := json.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("mcp_servers[%d]: %v", i, err)
		}
		spec, err := mcp.ParseSpec(j)
		if err == nil {
			err = spec.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("mcp_servers[%d] (%v): %v", i, raw["name"], err)
		}
		if seen[spec.Name] {
			return nil, fmt.Errorf("mcp_servers[%d]: name %q is used twice", i, spec.Name)
		}
		seen[spec.Name] = true
		out = append(out, spec)
	}
	return out, nil
}

func (c *Config) mcpServerEnabled() bool { return c.MCPServer.Enabled == nil || *c.MCPServer.Enabled }

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpConfig maps the file's keys onto the HTTP layer's options.
func (c *Config) httpConfig() fhttp.Config {
	h := fhttp.DefaultConfig()
	h.APIKey = c.APIKey
	h.MaxBodyBytes = c.MaxRequestBodyBytes
	h.RateLimitPerMinute = c.RateLimit.APIRequestsPerMinute
	h.RateLimitExemptLoopback = c.RateLimit.ExemptLoopback
	if c.HTTP.SecurityHeaders != nil {
		h.SecurityHeaders = *c.HTTP.SecurityHeaders
	}
	h.AllowedHosts = c.AllowedHosts
	h.CORSOrigins = append(append([]string(nil), c.CORSOrigins...), c.CORSOrigin...)
	h.TrustedProxies = c.TrustedProxies
	h.AuthFailureInterval = time.Duration(c.Audit.AuthFailureIntervalSecs) * time.Second
	h.RequestTimeout = time.Duration(c.HTTP.RequestTimeoutSecs) * time.Second
	h.Version = version
	h.A2AMaxBodyBytes = c.A2A.MaxBodyBytes
	h.MaxLogStreams = c.Log.MaxStreams
	h.AccessLog = c.Log.AccessLog
	h.MaxA2AStreams = c.A2A.MaxStreams
	h.MaxAgentStreams = c.Agents.MaxStreams
	h.MCPOAuthRedirectBase = c.MCP.OAuthRedirectBase
	h.Users, _ = c.users() // validated
	h.PairingPerMinute = c.Pairing.AttemptsPerMinute
	h.PublicHTTPS = c.publicHTTPS()
	h.MCP = fhttp.MCPConfig{
		Stateless:      c.MCPServer.Stateless,
		SessionTimeout: time.Duration(c.MCPServer.SessionTimeoutSecs) * time.Second,
		MaxSessions:    c.MCPServer.MaxSessions,
		MaxBodyBytes:   c.MCPServer.MaxBodyBytes,
	}
	return h
}

// resolveHome picks the home directory (homePath) and creates it.
func resolveHome(flagValue string) (string, error) {
	abs, err := homePath(flagValue)
	if err != nil {
		return "", err
	}
	return abs, os.MkdirAll(abs, 0o700)
}

// homePath picks the home directory: flag, then FANGD_HOME, then ~/.fangd.
func homePath(flagValue string) (string, error) {
	home := flagValue
	if home == "" {
		home = os.Getenv("FANGD_HOME")
	}
	if home == "" {
		userHome, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --home, no FANGD_HOME and no user home: %w", err)
		}
		home = filepath.Join(userHome, ".fangd")
	}
	return filepath.Abs(home)
}
