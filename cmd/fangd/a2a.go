package main

import (
	"context"
	"net"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// startA2A starts the A2A actors with the daemon's outbound policy.
// guard is the daemon's one outbound policy, shared with webhooks and MCP
// so that a reload of [network_policy] reaches all three.
func startA2A(k *kernel.Kernel, db *store.DB, vault *store.Vault, cfg Config, guard *ssrf.Guard, agents *agent.Agents, hooks *webhook.Engine, bus *comms.Bus) (*a2a.Service, []fhttp.PeerToken, error) {
	set, err := cfg.a2aSettings()
	if err != nil {
		return nil, nil, err
	}
	o := set.opts
	o.Guard, o.Permanent, o.Vault = guard, ssrf.IsBlocked, vault
	o.Agents = a2aAgents{a: agents}
	if hooks != nil {
		o.Pusher = &a2aPusher{eng: hooks}
	}
	if bus != nil {
		o.Events = a2aEvents{bus: bus}
	}
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

// a2aAgents is the agent runtime as the A2A server sees it.
type a2aAgents struct{ a *agent.Agents }

func toA2AAgent(x *agent.Agent) a2a.Agent {
	return a2a.Agent{ID: x.ID, Name: x.Name, Description: x.Description, Tags: x.Tags, Tools: x.Tools,
		Available: x.State == "running"}
}

func (g a2aAgents) Resolve(_ context.Context, ref string) (a2a.Agent, error) {
	r, err := agent.ParseRef(ref)
	if err != nil {
		return a2a.Agent{}, kernel.Errorf(kernel.KindNotFound, "agent_not_found", "no local agent %q", ref)
	}
	x, err := g.a.Get(context.Background(), r)
	if err != nil {
		return a2a.Agent{}, err
	}
	return toA2AAgent(x), nil
}

func (g a2aAgents) List(context.Context) ([]a2a.Agent, error) {
	all, err := g.a.List(context.Background())
	if err != nil {
		return nil, err
	}
	out := make([]a2a.Agent, 0, len(all))
	for i := range all {
		out = append(out, toA2AAgent(&all[i]))
	}
	return out, nil
}

// a2aSessions names the agent session of each A2A context: a UUID (what
// the agents API uses) derived from the context id, so every task of one
// context continues one conversation.
var a2aSessions = uuid.MustParse("6f1d4c9e-2a3b-5c7d-8e9f-a2a0c0de7e57")

// Turn runs the agent's turn with ctx: cancelling it (A2A CancelTask)
// cancels the provider call.
func (g a2aAgents) Turn(ctx context.Context, req a2a.TurnRequest) (a2a.TurnResult, error) {
	sid := uuid.NewSHA1(a2aSessions, []byte(req.SessionID)).String()
	res, err := g.a.Send(ctx, agent.Send{Ref: agent.Ref{ID: req.AgentID}, Text: req.Text, SessionID: sid,
		From: "a2a:" + req.Caller, Who: agent.Who{Actor: req.Caller}, Ctx: ctx})
	if err != nil {
		return a2a.TurnResult{}, err
	}
	return a2a.TurnResult{Text: res.Response, Model: res.Model, InputTokens: res.InputTokens,
		OutputTokens: res.OutputTokens, CostUSD: res.CostUSD}, nil
}

// a2aPusher sends A2A push notifications through the webhook engine: one
// push endpoint per push target (named by the A2A key for it), created on
// its first update. The client's token signs the deliveries when it can
// serve as a key (8 to 256 characters), so the client can check them with
// what it registered.
type a2aPusher struct {
	eng    *webhook.Engine
	mu     sync.Mutex
	ids    map[string]string // A2A endpoint key -> webhook id
	loaded bool
}

// loadLocked reads the existing push endpoints once (they outlive
// restarts, like the tasks they serve).
func (p *a2aPusher) loadLocked() error {
	if p.loaded {
		return nil
	}
	views, err := p.eng.List(context.Background(), webhook.KindPush)
	if err != nil {
		return err
	}
	p.ids = map[string]string{}
	for _, v := range views {
		p.ids[v.Name] = v.ID
	}
	p.loaded = true
	return nil
}

func (p *a2aPusher) endpoint(ctx context.Context, d a2a.PushDelivery) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.loadLocked(); err != nil {
		return "", err
	}
	if id, ok := p.ids[d.Endpoint]; ok {
		return id, nil
	}
	headers := map[string]string{}
	for k, v := range d.Headers {
		if !strings.EqualFold(k, "Content-Type") {
			headers[k] = v
		}
	}
	secret := d.Headers["A2A-Notification-Token"]
	if len(secret) < 8 || len(secret) > 256 {
		secret = ""
	}
	id, err := p.eng.CreatePush(ctx, d.Endpoint, d.URL, secret, headers)
	if err != nil {
		return "", err
	}
	p.ids[d.Endpoint] = id
	return id, nil
}

func (p *a2aPusher) Push(ctx context.Context, d a2a.PushDelivery) error {
	id, err := p.endpoint(ctx, d)
	if err != nil {
		return err
	}
	return p.eng.Push(ctx, id, d.ID, d.Type, d.Body)
}

func (p *a2aPusher) Forget(ctx context.Context, key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.loadLocked(); err != nil {
		return err
	}
	id, ok := p.ids[key]
	if !ok {
		return nil
	}
	delete(p.ids, key)
	return p.eng.Delete(ctx, webhook.KindPush, id)
}

// a2aEvents publishes A2A routes on the comms bus without holding up the
// task that caused them.
type a2aEvents struct{ bus *comms.Bus }

func (e a2aEvents) Route(typ, source, target, edge string, detail map[string]string) {
	e.bus.PublishEdge(typ, source, target, edge, detail)
}

// a2aNodes lists the discovered external agents as topology nodes
// ("a2a:<id>", the target of a2a.task.sent routes).
type a2aNodes struct{ svc *a2a.Service }

func (n a2aNodes) Nodes(ctx context.Context) ([]comms.Node, error) {
	agents, err := n.svc.ExternalAgents(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]comms.Node, 0, len(agents))
	for _, a := range agents {
		out = append(out, comms.Node{ID: "a2a:" + a.ID, Kind: "a2a_agent", Name: a.Name, State: a.Status})
	}
	return out, nil
}
