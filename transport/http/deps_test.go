package http

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ssrf"
)

// The domains a test server's extra funcs start on its kernel and store,
// each the one way the tests start it.

// testVault is a vault on s's store, its key file in a fresh directory.
func testVault(t *testing.T, s *Server) *store.Vault {
	t.Helper()
	v, err := store.OpenVault(s.deps.Store, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fakeRegistry is an LLM registry with the one provider "fake" of api
// ("": OpenAI's) at baseURL.
func fakeRegistry(t *testing.T, api, baseURL string) *llm.Registry {
	t.Helper()
	reg, err := llm.NewRegistry(llm.Options{Providers: map[string]llm.ProviderConfig{"fake": {API: api, BaseURL: baseURL}},
		Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// testAgents starts the usage meter and the agents on reg with opts,
// and sets both (and reg) on s.
func testAgents(t *testing.T, s *Server, reg *llm.Registry, opts agent.Options) {
	t.Helper()
	d := s.deps
	meter, err := usage.Start(d.Kernel, d.Store, d.Audit, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	agents, err := agent.Start(d.Kernel, d.Store, d.Audit, reg, meter, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.deps.Agents, s.deps.LLM, s.deps.Meter = agents, reg, meter
}

// testBus starts the comms bus on s's store.
func testBus(t *testing.T, s *Server, opts comms.BusOptions) *comms.Bus {
	t.Helper()
	bus, err := comms.Start(s.deps.Kernel, s.deps.Store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return bus
}

// testWebhooks starts the webhook engine on bus and vault: receivers on
// loopback allowed, retries after 10 ms; hooks changes the options (nil:
// none).
func testWebhooks(t *testing.T, s *Server, bus *comms.Bus, vault *store.Vault, hooks func(*webhook.Options)) *webhook.Engine {
	t.Helper()
	guard, _ := ssrf.New([]string{"127.0.0.1/32"})
	wo := webhook.Options{Bus: bus, Vault: vault, Guard: guard, Backoff: []time.Duration{10 * time.Millisecond}}
	if hooks != nil {
		hooks(&wo)
	}
	eng, err := webhook.Start(s.deps.Kernel, s.deps.Store, wo)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}
