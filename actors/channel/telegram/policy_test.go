package telegram_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// The api_url goes through the network policy: with allow_hosts =
// ["127.0.0.1/32"], an api_url on 127.0.0.2 is a 400 naming the rule, is
// not stored, and nothing connects to it (the bot token would travel in
// the path); a link-local one is never allowed; a name that does not
// resolve shows host_not_found in the status, without the token; the
// allowed address works through the pinned dialer.
func TestAPIURLFollowsNetworkPolicy(t *testing.T) {
	guard, err := ssrf.New([]string{"127.0.0.1/32"}, ssrf.WithResolver(ssrftest.Resolver{}))
	if err != nil {
		t.Fatal(err)
	}
	h := channeltest.New(t, channel.Builders{"telegram": telegram.New}, channeltest.WithNetwork(guard))

	// A listener on a loopback address the policy does not allow, counting
	// connections.
	trapPort, hits := channeltest.Trap(t)
	port := strconv.Itoa(trapPort)

	for url, says := range map[string][]string{
		"http://127.0.0.2:" + port:     {"field api_url", "loopback", "allow_hosts"},
		"http://169.254.169.254/":      {"field api_url", "link-local", "never allowed"},
		"ftp://api.telegram.example/x": {"field api_url", "scheme ftp"},
	} {
		_, err := h.Service.Configure(context.Background(), "telegram", map[string]any{"token": token, "api_url": url, "poll_interval_secs": 1})
		de := kernel.AsError(err)
		if de == nil || de.Kind != kernel.KindInvalid || de.Code != "url_not_allowed" {
			t.Fatalf("%s: %v", url, err)
		}
		for _, w := range says {
			if !strings.Contains(de.Msg, w) {
				t.Errorf("%s: %q does not say %q", url, de.Msg, w)
			}
		}
		if strings.Contains(de.Msg, "link-local") && strings.Contains(de.Msg, "add ") {
			t.Errorf("%s: %q suggests allow-listing link-local", url, de.Msg)
		}
		if strings.Contains(de.Msg, token) {
			t.Fatalf("the refusal shows the token: %q", de.Msg)
		}
		if v := h.Get("telegram"); v.Configured {
			t.Fatalf("%s: a refused configuration was stored", url)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d connections reached the refused api_url", n)
	}

	h.Configure("telegram", map[string]any{"token": token, "api_url": "http://bot-api.nowhere.invalid", "poll_interval_secs": 1})
	h.WaitFor("host_not_found in the status", func() bool { return h.Get("telegram").LastErrorCode == "host_not_found" })
	if v := h.Get("telegram"); strings.Contains(v.LastError, token) || !strings.Contains(v.LastError, "does not resolve") {
		t.Fatalf("status: %q", v.LastError)
	}

	fake := channeltest.Cleanup(t, telegramtest.New(token))
	h.Connect("telegram", map[string]any{"token": token, "api_url": fake.URL(), "poll_interval_secs": 1})
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d connections reached the refused api_url", n)
	}
}
