package main

import (
	"context"
	"net"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// startA2A starts the A2A actors with the daemon's outbound policy.
func startA2A(k *kernel.Kernel, db *store.DB, vault *store.Vault, cfg Config) (*a2a.Service, []fhttp.PeerToken, error) {
	set, err := cfg.a2aSettings()
	if err != nil {
		return nil, nil, err
	}
	guard, err := ssrf.New(cfg.NetworkPolicy.AllowHosts)
	if err != nil {
		return nil, nil, err
	}
	o := set.opts
	o.Guard, o.Permanent, o.Vault = guard, ssrf.IsBlocked, vault
	o.Agents = unwiredAgents{}
	// Each write of a stream pushes the HTTP write deadline forward; the
	// keep-alives must come sooner than it.
	o.StreamKeepAlive = min(o.StreamKeepAlive, cfg.httpConfig().WriteTimeout/2)
	svc, err := a2a.Start(k, db, o)
	if err != nil {
		return nil, nil, err
	}
	return svc, set.peers, nil
}

// a2aBaseURL is the base URL cards advertise when [a2a] public_url is not
// set: the address the daemon listens on.
func a2aBaseURL(ln net.Listener) string { return "http://" + ln.Addr().String() }

// unwiredAgents stands in for the agent runtime, which this build does not
// have yet: there are no local agents, so the A2A server has none to
// offer and says so, while the client side (discover, send) works.
type unwiredAgents struct{}

func (unwiredAgents) Resolve(_ context.Context, ref string) (a2a.Agent, error) {
	return a2a.Agent{}, kernel.Errorf(kernel.KindNotFound, "agent_not_found", "no local agent %q: this fangd has no agent runtime", ref)
}

func (unwiredAgents) List(context.Context) ([]a2a.Agent, error) { return nil, nil }

func (unwiredAgents) Turn(context.Context, a2a.TurnRequest) (a2a.TurnResult, error) {
	return a2a.TurnResult{}, kernel.Errorf(kernel.KindUnsupported, "no_agent_runtime", "this fangd has no agent runtime")
}
