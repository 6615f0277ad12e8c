package main

import (
	"strings"
	"testing"
)

// configDiff names changed keys the way the file spells them, and the
// classification sends only the documented keys to the running daemon.
func TestConfigDiffAndReloadableKeys(t *testing.T) {
	a := defaultConfig()
	b := defaultConfig()
	b.Log.Level, b.Log.RingSize = "debug", 10
	b.Approval.RequireApproval = []string{"x_*"}
	b.Comms.TurnTimeout = "10s"
	b.APIKey = "a-new-secret-key-0123456789"
	b.Channels = map[string]map[string]any{"alerts": {"adapter": "ntfy"}}
	got := configDiff(a, b)
	want := "api_key,approval.require_approval,channels,comms.turn_timeout,log.level,log.ring_size"
	if strings.Join(got, ",") != want {
		t.Fatalf("diff = %v, want %s", got, want)
	}
	for key, reload := range map[string]bool{
		"log.level": true, "log.format": true, "log.ring_size": false,
		"rate_limit.api_requests_per_minute": true, "approval.notify": true,
		"network_policy.allow_hosts": true, "webhook_triggers.enabled": true,
		"channels": true, "mcp_servers": true,
		"api_listen": false, "api_key": false, "comms.turn_timeout": false, "mcp.catalog_dir": false,
		"mcp_server.enabled": false, "a2a.peers": false, "providers": false, "http.security_headers": false,
	} {
		if isReloadable(key) != reload {
			t.Errorf("isReloadable(%s) = %t, want %t", key, !reload, reload)
		}
	}
}
