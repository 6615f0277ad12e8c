package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/transport/ssrf"
)

// CommsConfig is [comms]: the event bus and the message router.
type CommsConfig struct {
	// EventLogSize is how many events the persisted log keeps for
	// GET /api/comms/events and SSE resume.
	EventLogSize int `toml:"event_log_size"`
	// MaxStreamsPerKey caps concurrent SSE streams per credential (429).
	MaxStreamsPerKey int `toml:"max_streams_per_key"`
	// MaxStreams caps concurrent SSE streams daemon-wide, every credential
	// and loopback address together (429 comms_stream_limit).
	MaxStreams int `toml:"max_streams"`
	// LoopGuardMaxBounces is how many messages may pass between the same
	// two agents within LoopGuardWindow; 0 turns the loop guard off.
	LoopGuardMaxBounces int    `toml:"loop_guard_max_bounces"`
	LoopGuardWindow     string `toml:"loop_guard_window"`
	// TurnTimeout bounds one agent turn started by comms (send, task, hooks).
	TurnTimeout string `toml:"turn_timeout"`
}

func defaultCommsConfig() CommsConfig {
	return CommsConfig{EventLogSize: 10000, MaxStreamsPerKey: 64, MaxStreams: comms.DefaultMaxStreams, LoopGuardMaxBounces: 8, LoopGuardWindow: "60s", TurnTimeout: "120s"}
}

// WebhooksConfig is [webhooks]: the outbound delivery engine.
type WebhooksConfig struct {
	// RetryBackoff is the delay before each retry; when used up the
	// message is dead-lettered.
	RetryBackoff []string `toml:"retry_backoff"`
	// Timeout bounds one delivery attempt.
	Timeout string `toml:"timeout"`
	// DisableAfter disables an endpoint after this many consecutive
	// dead-lettered messages (0 = never).
	DisableAfter int `toml:"disable_after"`
	// MaxPending caps one endpoint's outbox (beyond: dead letters).
	MaxPending int `toml:"max_pending"`
	// MaxEndpoints bounds the outbound and event webhooks (409 beyond).
	MaxEndpoints int `toml:"max_endpoints"`
}

func defaultWebhooksConfig() WebhooksConfig {
	return WebhooksConfig{RetryBackoff: []string{"5s", "30s", "2m", "10m", "1h", "6h"}, Timeout: "15s", DisableAfter: 3, MaxPending: 100_000, MaxEndpoints: webhook.MaxEndpoints}
}

// NetworkPolicyConfig is [network_policy]: what outbound requests to
// user-supplied URLs (webhooks; later A2A and MCP) may reach.
type NetworkPolicyConfig struct {
	// AllowHosts lists CIDRs ("192.168.1.0/24"), host names ("hooks.lan")
	// and globs ("*.lan") that may be reached even though they are
	// loopback or private. Link-local addresses are never allowed.
	AllowHosts []string `toml:"allow_hosts"`
}

// WebhookTriggersConfig is [webhook_triggers]: inbound /hooks/*.
type WebhookTriggersConfig struct {
	Enabled bool `toml:"enabled"`
	// TokenEnv names the environment variable holding the bearer token
	// (>= 32 characters).
	TokenEnv string `toml:"token_env"`
	// SecretEnv names the environment variable holding a Standard Webhooks
	// signing secret ("whsec_..." or raw), accepted instead of the token.
	SecretEnv       string `toml:"secret_env"`
	MaxPayloadBytes int    `toml:"max_payload_bytes"`
}

func defaultWebhookTriggersConfig() WebhookTriggersConfig {
	return WebhookTriggersConfig{TokenEnv: "FANGD_WEBHOOK_TOKEN", MaxPayloadBytes: 64 << 10}
}

func parseDuration(field, v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a duration (e.g. \"30s\", \"2m\")", field, v)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("%s %q: must be between %s and %s", field, v, lo, hi)
	}
	return d, nil
}

// commsSettings are the parsed durations and secrets of the sections above.
type commsSettings struct {
	loopWindow, turnTimeout, webhookTimeout time.Duration
	backoff                                 []time.Duration
	hookToken, hookSecret                   string
}

func (c *Config) validateComms() error {
	_, err := c.commsSettings()
	return err
}

func (c *Config) commsSettings() (commsSettings, error) {
	var s commsSettings
	var err error
	cc := c.Comms
	if cc.EventLogSize < 100 || cc.EventLogSize > 1_000_000 {
		return s, errors.New("comms.event_log_size must be between 100 and 1000000")
	}
	if cc.MaxStreamsPerKey < 1 || cc.MaxStreamsPerKey > 100_000 {
		return s, errors.New("comms.max_streams_per_key must be between 1 and 100000")
	}
	if cc.LoopGuardMaxBounces < 0 {
		return s, errors.New("comms.loop_guard_max_bounces must be >= 0 (0 turns the loop guard off)")
	}
	if s.loopWindow, err = parseDuration("comms.loop_guard_window", cc.LoopGuardWindow, time.Second, 24*time.Hour); err != nil {
		return s, err
	}
	if s.turnTimeout, err = parseDuration("comms.turn_timeout", cc.TurnTimeout, time.Second, time.Hour); err != nil {
		return s, err
	}
	w := c.Webhooks
	if len(w.RetryBackoff) > 50 {
		return s, errors.New("webhooks.retry_backoff may hold at most 50 delays")
	}
	for i, v := range w.RetryBackoff {
		d, err := parseDuration(fmt.Sprintf("webhooks.retry_backoff[%d]", i), v, time.Millisecond, 7*24*time.Hour)
		if err != nil {
			return s, err
		}
		s.backoff = append(s.backoff, d)
	}
	if s.webhookTimeout, err = parseDuration("webhooks.timeout", w.Timeout, 100*time.Millisecond, 5*time.Minute); err != nil {
		return s, err
	}
	if w.DisableAfter < 0 {
		return s, errors.New("webhooks.disable_after must be >= 0 (0 = never disable)")
	}
	if w.MaxEndpoints < 1 || w.MaxEndpoints > 10_000 {
		return s, errors.New("webhooks.max_endpoints must be between 1 and 10000")
	}
	if w.MaxPending < 1 || w.MaxPending > 10_000_000 {
		return s, errors.New("webhooks.max_pending must be between 1 and 10000000")
	}
	if _, err := ssrf.New(c.NetworkPolicy.AllowHosts); err != nil {
		return s, fmt.Errorf("network_policy.%w", err)
	}
	t := c.WebhookTriggers
	if t.MaxPayloadBytes < 1024 || t.MaxPayloadBytes > 8<<20 {
		return s, errors.New("webhook_triggers.max_payload_bytes must be between 1024 and 8388608")
	}
	if t.Enabled {
		if t.TokenEnv != "" {
			s.hookToken = os.Getenv(t.TokenEnv)
			if s.hookToken != "" && len(s.hookToken) < 32 {
				return s, fmt.Errorf("webhook_triggers.token_env: $%s must hold at least 32 characters", t.TokenEnv)
			}
		}
		if t.SecretEnv != "" {
			s.hookSecret = os.Getenv(t.SecretEnv)
			if s.hookSecret != "" {
				if _, err := webhook.NewSigner(s.hookSecret); err != nil || len(s.hookSecret) < 24 {
					return s, fmt.Errorf("webhook_triggers.secret_env: $%s must be a whsec_ secret or at least 24 characters", t.SecretEnv)
				}
			}
		}
		if s.hookToken == "" && s.hookSecret == "" {
			return s, fmt.Errorf("webhook_triggers.enabled is true but neither $%s (token_env) nor a secret_env variable is set", t.TokenEnv)
		}
	}
	return s, nil
}
