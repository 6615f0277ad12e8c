package a2a

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// Discovery says why a peer could not be reached: a refusal names the
// rule, and a name that does not resolve, a closed port, a peer that never
// answers and an untrusted certificate each have their own code. Only
// loopback is dialled.
func TestDiscoverReportsNetworkCauses(t *testing.T) {
	guard, err := ssrf.New([]string{"127.0.0.1/32"}, ssrf.WithResolver(ssrftest.Resolver{}))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) {
		o.Guard = guard
		o.DiscoveryTimeout = 2 * time.Second
	})
	targets := ssrftest.Unreachable(t)

	cases := []struct {
		url, code string
		kind      kernel.Kind
		says      []string
	}{
		{"http://agent.nowhere.invalid", "host_not_found", kernel.KindUpstream, []string{"does not resolve"}},
		{"http://" + targets.Closed, "connection_refused", kernel.KindUpstream, []string{"refused"}},
		{"http://" + targets.Mute, "upstream_timeout", kernel.KindUnavailable, []string{"time"}},
		{targets.UntrustedTLS, "tls_failed", kernel.KindUpstream, []string{"TLS"}},
		{"http://127.0.0.2:4797", "a2a_ssrf_blocked", kernel.KindInvalid, []string{"loopback", "allow_hosts"}},
		{"http://169.254.169.254", "a2a_ssrf_blocked", kernel.KindInvalid, []string{"link-local", "never allowed"}},
	}
	for _, c := range cases {
		_, _, err := h.svc.Discover(admin(), c.url, nil)
		de := kernel.AsError(err)
		if de == nil || de.Code != c.code || de.Kind != c.kind {
			t.Errorf("%s: got %v, want %s", c.url, err, c.code)
			continue
		}
		for _, w := range c.says {
			if !strings.Contains(de.Msg, w) {
				t.Errorf("%s: %q does not say %q", c.url, de.Msg, w)
			}
		}
		if strings.Contains(de.Msg, "link-local") && strings.Contains(de.Msg, "add ") {
			t.Errorf("%s: %q suggests allow-listing link-local", c.url, de.Msg)
		}
	}
	if list, _ := h.svc.ExternalAgents(context.Background()); len(list) != 0 {
		t.Fatalf("failed discoveries stored agents: %+v", list)
	}
}
