package llm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

func testGuard(t *testing.T) *ssrf.Guard {
	t.Helper()
	g, err := ssrf.New([]string{"127.0.0.1/32"}, ssrf.WithResolver(ssrftest.Resolver{}))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// A failed call says why: the name does not resolve, nothing listens, the
// certificate is not trusted. Untrusted base URLs go through the network
// policy, trusted ones are dialled directly; only loopback is reached.
func TestProviderNetworkCauses(t *testing.T) {
	targets := ssrftest.Unreachable(t)

	r, err := NewRegistry(Options{Guard: testGuard(t), Metrics: prometheus.NewRegistry(), Timeout: time.Minute,
		Getenv: func(string) string { return testKey },
		Providers: map[string]ProviderConfig{
			"gone":   {BaseURL: "http://llm.nowhere.invalid/v1", APIKeyEnv: "K"},
			"closed": {BaseURL: "http://" + targets.Closed + "/v1", APIKeyEnv: "K"},
			"tls":    {BaseURL: targets.UntrustedTLS + "/v1", APIKeyEnv: "K", Trusted: true},
		}})
	if err != nil {
		t.Fatal(err)
	}
	for prov, code := range map[string]string{"gone": "host_not_found", "closed": "connection_refused", "tls": "tls_failed"} {
		route, err := r.Resolve(prov + "/m")
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Chat(context.Background(), route, Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 10})
		de := kernel.AsError(err)
		if de == nil || de.Code != code || de.Kind != kernel.KindUpstream {
			t.Errorf("%s: got %v, want %s", prov, err, code)
			continue
		}
		if !strings.Contains(de.Msg, "provider "+prov) || strings.Contains(de.Msg, testKey) || strings.Contains(de.Msg, "/v1") {
			t.Errorf("%s: message %q must name the provider and the cause, never the key or the URL", prov, de.Msg)
		}
	}
}

// A configured base_url on an address the policy refuses is a config
// error naming the key and the way out, unless the provider is trusted;
// the built-in Ollama URL (localhost) stays usable.
func TestUntrustedBaseURLFollowsPolicy(t *testing.T) {
	g := testGuard(t)
	err := ValidateConfig(Options{Guard: g, Providers: map[string]ProviderConfig{"lan": {BaseURL: "http://127.0.0.2:4797/v1"}}})
	if err == nil || !strings.Contains(err.Error(), "providers.lan.base_url") || !strings.Contains(err.Error(), "loopback") ||
		!strings.Contains(err.Error(), "trusted = true") {
		t.Fatalf("untrusted loopback base_url: %v", err)
	}
	err = ValidateConfig(Options{Guard: g, Providers: map[string]ProviderConfig{"meta": {BaseURL: "http://169.254.169.254/v1"}}})
	if err == nil || !strings.Contains(err.Error(), "never allowed") {
		t.Fatalf("link-local base_url: %v", err)
	}
	if err := ValidateConfig(Options{Guard: g, Providers: map[string]ProviderConfig{"lan": {BaseURL: "http://127.0.0.2:4797/v1", Trusted: true}}}); err != nil {
		t.Fatalf("trusted provider refused: %v", err)
	}
	r, err := NewRegistry(Options{Guard: g, Metrics: prometheus.NewRegistry(),
		Providers: map[string]ProviderConfig{"ollama": {APIKeyEnv: ""}, "groq": {APIKeyEnv: "MY_KEY"}}})
	if err != nil {
		t.Fatalf("built-in base URLs refused: %v", err)
	}
	for _, p := range r.Providers() {
		if !p.Trusted {
			t.Fatalf("built-in provider %s not trusted", p.Name)
		}
	}
}
