package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/kernel"
	fhttp "github.com/fangd/fangd/transport/http"
)

// A2AConfig is [a2a]: fangd as an A2A server (its agents reachable by any
// A2A client) and client (external agents discovered and called). Keys
// follow LibreFang's where it has them (enabled, name, description,
// external_agents).
type A2AConfig struct {
	Enabled     *bool  `toml:"enabled"`
	Name        string `toml:"name"`
	Description string `toml:"description"`
	// PublicURL is the base URL advertised in agent cards; default
	// http://<api_listen>.
	PublicURL string `toml:"public_url"`
	// DefaultAgent (id or name) takes messages sent to the shared /a2a
	// endpoint that name no agent.
	DefaultAgent string `toml:"default_agent"`
	// TaskRetention is how long finished tasks are kept.
	TaskRetention   string `toml:"task_retention"`
	ResumeOnRestart bool   `toml:"resume_on_restart"`
	TurnTimeout     string `toml:"turn_timeout"`
	SyncWait        string `toml:"sync_wait"`
	Streaming       *bool  `toml:"streaming"`
	MaxBodyBytes    int    `toml:"max_body_bytes"`
	// MaxStreams caps the open JSON-RPC streams (message/stream,
	// tasks/resubscribe and their v1 names) daemon-wide; beyond: 429.
	MaxStreams int `toml:"max_streams"`

	DiscoveryTimeout string `toml:"discovery_timeout"`
	MaxCardBytes     int64  `toml:"max_card_bytes"`
	OutboundTimeout  string `toml:"outbound_timeout"`
	MaxAttempts      int    `toml:"max_attempts"`
	RetryInitial     string `toml:"retry_initial"`
	RetryMax         string `toml:"retry_max"`
	PollInterval     string `toml:"poll_interval"`
	PollMax          string `toml:"poll_max"`

	// Peers are callers admitted to the protocol routes with their own
	// token instead of the API key; each sees only its own tasks.
	Peers []A2APeerConfig `toml:"peers"`
	// ExternalAgents are discovered at start (in the background, retried).
	ExternalAgents []A2AExternalConfig `toml:"external_agents"`
}

// A2APeerConfig is one [[a2a.peers]] entry.
type A2APeerConfig struct {
	Name string `toml:"name"`
	// TokenEnv names the environment variable that holds the peer's token
	// (>= 16 characters); the token itself is never in the file.
	TokenEnv string `toml:"token_env"`
}

// A2AExternalConfig is one [[a2a.external_agents]] entry.
type A2AExternalConfig struct {
	Name string `toml:"name"`
	URL  string `toml:"url"`
	// TokenEnv optionally names the variable holding the bearer token to
	// present to the agent.
	TokenEnv string `toml:"token_env"`
}

func defaultA2AConfig() A2AConfig {
	return A2AConfig{
		Name:             "fangd",
		Description:      "fangd agent daemon: LibreFang-compatible agents reachable over A2A",
		TaskRetention:    "24h",
		TurnTimeout:      "10m",
		SyncWait:         "5m",
		MaxStreams:       fhttp.DefaultMaxA2AStreams,
		MaxBodyBytes:     1 << 20,
		DiscoveryTimeout: "10s",
		MaxCardBytes:     256 << 10,
		OutboundTimeout:  "10m",
		MaxAttempts:      5,
		RetryInitial:     "500ms",
		RetryMax:         "30s",
		PollInterval:     "500ms",
		PollMax:          "10s",
	}
}

// a2aEnabled reports whether the A2A routes and actors run.
func (c *A2AConfig) a2aEnabled() bool { return c.Enabled == nil || *c.Enabled }

// a2aSettings are [a2a] resolved: durations parsed, secrets read from the
// environment. The error names the field.
type a2aSettings struct {
	opts  a2a.Options
	peers []fhttp.PeerToken
}

func a2aDuration(field, v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("a2a.%s %q: not a duration (e.g. \"30s\", \"10m\")", field, v)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("a2a.%s %q: must be between %s and %s", field, v, lo, hi)
	}
	return d, nil
}

func (c *Config) a2aSettings() (a2aSettings, error) {
	var s a2aSettings
	a := &c.A2A
	o := a2a.DefaultOptions()
	o.Name, o.Description, o.DefaultAgent, o.ResumeOnRestart = a.Name, a.Description, a.DefaultAgent, a.ResumeOnRestart
	if strings.TrimSpace(o.Name) == "" {
		return s, errors.New("a2a.name must not be empty")
	}
	if a.Streaming != nil {
		o.Streaming = *a.Streaming
	}
	if a.PublicURL != "" {
		if !strings.HasPrefix(a.PublicURL, "http://") && !strings.HasPrefix(a.PublicURL, "https://") {
			return s, fmt.Errorf("a2a.public_url %q: must start with http:// or https://", a.PublicURL)
		}
		o.BaseURL = a.PublicURL
	}
	var err error
	durations := []struct {
		field  string
		v      string
		lo, hi time.Duration
		dst    *time.Duration
	}{
		{"task_retention", a.TaskRetention, time.Second, 365 * 24 * time.Hour, &o.Retention},
		{"turn_timeout", a.TurnTimeout, time.Second, 24 * time.Hour, &o.TurnTimeout},
		{"sync_wait", a.SyncWait, time.Second, time.Hour, &o.SyncWait},
		{"discovery_timeout", a.DiscoveryTimeout, 100 * time.Millisecond, 5 * time.Minute, &o.DiscoveryTimeout},
		{"outbound_timeout", a.OutboundTimeout, time.Second, 7 * 24 * time.Hour, &o.OutboundTimeout},
		{"retry_initial", a.RetryInitial, time.Millisecond, time.Hour, &o.RetryBackoff.Initial},
		{"retry_max", a.RetryMax, time.Millisecond, 24 * time.Hour, &o.RetryBackoff.Max},
		{"poll_interval", a.PollInterval, time.Millisecond, time.Hour, &o.PollInterval},
		{"poll_max", a.PollMax, time.Millisecond, 24 * time.Hour, &o.PollMax},
	}
	for _, d := range durations {
		if *d.dst, err = a2aDuration(d.field, d.v, d.lo, d.hi); err != nil {
			return s, err
		}
	}
	o.SweepInterval = min(o.Retention/4, 10*time.Minute)
	if o.RetryBackoff.Max < o.RetryBackoff.Initial {
		return s, errors.New("a2a.retry_max must not be below a2a.retry_initial")
	}
	if o.PollMax < o.PollInterval {
		return s, errors.New("a2a.poll_max must not be below a2a.poll_interval")
	}
	if a.MaxAttempts < 1 || a.MaxAttempts > 100 {
		return s, errors.New("a2a.max_attempts must be between 1 and 100")
	}
	o.MaxAttempts = a.MaxAttempts
	if a.MaxCardBytes < 1024 || a.MaxCardBytes > 16<<20 {
		return s, errors.New("a2a.max_card_bytes must be between 1024 and 16777216")
	}
	o.MaxCardBytes = a.MaxCardBytes
	if a.MaxBodyBytes < 1024 || a.MaxBodyBytes > c.MaxRequestBodyBytes {
		return s, fmt.Errorf("a2a.max_body_bytes must be between 1024 and max_request_body_bytes (%d)", c.MaxRequestBodyBytes)
	}
	names := map[string]bool{}
	for i, p := range a.Peers {
		if strings.TrimSpace(p.Name) == "" || strings.ContainsAny(p.Name, " :/") {
			return s, fmt.Errorf("a2a.peers[%d].name %q: must be a plain name (no spaces, ':' or '/')", i, p.Name)
		}
		if names[p.Name] {
			return s, fmt.Errorf("a2a.peers[%d].name %q: used twice", i, p.Name)
		}
		names[p.Name] = true
		if p.TokenEnv == "" {
			return s, fmt.Errorf("a2a.peers[%d].token_env is required", i)
		}
		tok := os.Getenv(p.TokenEnv)
		if len(tok) < 16 {
			return s, fmt.Errorf("a2a.peers[%d]: environment variable %s must hold a token of at least 16 characters", i, p.TokenEnv)
		}
		if tok == c.APIKey {
			return s, fmt.Errorf("a2a.peers[%d]: the token in %s is the API key; give each peer its own", i, p.TokenEnv)
		}
		s.peers = append(s.peers, fhttp.PeerToken{Name: p.Name, Token: tok})
	}
	for i, e := range a.ExternalAgents {
		if _, err := a2a.CanonicalURL(e.URL); err != nil {
			return s, fmt.Errorf("a2a.external_agents[%d].url %q: %s", i, e.URL, kernel.PublicMessage(err))
		}
		sa := a2a.StaticAgent{Name: e.Name, URL: e.URL}
		if e.TokenEnv != "" {
			if sa.Token = os.Getenv(e.TokenEnv); sa.Token == "" {
				return s, fmt.Errorf("a2a.external_agents[%d]: environment variable %s is empty", i, e.TokenEnv)
			}
		}
		o.ExternalAgents = append(o.ExternalAgents, sa)
	}
	o.Version = version
	s.opts = o
	return s, nil
}
