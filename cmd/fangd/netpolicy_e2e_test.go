package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// TestChannelURLFollowsNetworkPolicy is issue 12's report on the real
// binary: with allow_hosts = ["127.0.0.1/32"], a Telegram channel whose
// api_url is on 127.0.0.2 is refused with 400 url_not_allowed naming the
// rule, is not stored, and fangd never connects there (the bot token
// would be in the path); a link-local api_url is refused without
// suggesting the allowlist.
func TestChannelURLFollowsNetworkPolicy(t *testing.T) {
	t.Parallel()
	trapPort, hits := channeltest.Trap(t)
	p := startFangd(t, t.TempDir(), "[network_policy]\nallow_hosts = [\"127.0.0.1/32\"]\n", "FANGD_API_KEY="+e2eKey)
	const token = "4242:AAE-policy-test-token"
	apiURL := "http://127.0.0.2:" + strconv.Itoa(trapPort)
	code, body := p.request(t, "POST", "/api/channels/telegram/configure", `{"token":"`+token+`","api_url":"`+apiURL+`","poll_interval_secs":1}`)
	if code != 400 || !strings.Contains(string(body), `"code":"url_not_allowed"`) || !strings.Contains(string(body), "loopback") ||
		!strings.Contains(string(body), "allow_hosts") || strings.Contains(string(body), token) {
		t.Fatalf("configure with a refused api_url: %d %s", code, body)
	}
	code, body = p.request(t, "POST", "/api/channels/telegram/configure", `{"token":"`+token+`","api_url":"http://169.254.169.254"}`)
	if code != 400 || !strings.Contains(string(body), "never allowed") || strings.Contains(string(body), "add ") {
		t.Fatalf("configure with a link-local api_url: %d %s", code, body)
	}
	if _, ok := channelStates(t, p)["telegram"]; ok {
		t.Fatal("a refused configuration was stored")
	}
	// A refused configuration starts nothing; the requests above are done,
	// so a poller would have connected by the time the list answered.
	if n := hits.Load(); n != 0 {
		t.Fatalf("fangd connected %d times to the refused api_url", n)
	}
}
