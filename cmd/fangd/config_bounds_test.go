package main

import (
	"strings"
	"testing"
)

// [comms] max_streams, [a2a] max_streams, [agents] max_streams, [channel_limits] max_channels
// and [audit] retain_days are validated with the other keys: every bad key is
// reported, not only the first.
func TestConfigBoundsValidated(t *testing.T) {
	c := defaultConfig()
	if err := c.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.Comms.MaxStreams = 0
	c.MaxRequestBodyBytes = 0
	c.ChannelLimits.MaxChannels = -1
	c.Audit.RetainDays = -1
	c.A2A.MaxStreams = 0
	c.Agents.MaxStreams = 0
	err := c.validate()
	if err == nil || !strings.Contains(err.Error(), "comms.max_streams must be") || !strings.Contains(err.Error(), "max_request_body_bytes") ||
		!strings.Contains(err.Error(), "channel_limits.max_channels must be") || !strings.Contains(err.Error(), "audit.retain_days must be") ||
		!strings.Contains(err.Error(), "a2a.max_streams must be") || !strings.Contains(err.Error(), "agents.max_streams must be") {
		t.Fatalf("bad keys: %v", err)
	}
}
