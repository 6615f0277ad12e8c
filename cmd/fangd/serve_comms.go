package main

import (
	"context"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	metering "github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/ssrf"
)

type commsParts struct {
	router   *comms.Router
	webhooks *webhook.Engine
	// guard is the outbound network policy (SSRF), shared with MCP.
	guard *ssrf.Guard
}

// startBus starts the event bus and subscribes it to what other actors
// publish on the actor system's EventStream (agents, budgets).
func startBus(k *kernel.Kernel, db *store.DB, cfg Config) (*comms.Bus, error) {
	bus, err := comms.Start(k, db, comms.BusOptions{LogSize: cfg.Comms.EventLogSize, MaxStreamsPerKey: cfg.Comms.MaxStreamsPerKey,
		MaxStreams: cfg.Comms.MaxStreams})
	if err != nil {
		return nil, err
	}
	k.System.EventStream.Subscribe(func(evt any) { forwardEvent(bus, evt) })
	return bus, nil
}

// forwardEvent turns a domain event from the EventStream into a bus event.
// It runs in the publisher's goroutine and only sends a message.
func forwardEvent(bus *comms.Bus, evt any) {
	switch e := evt.(type) {
	case *agent.AgentSpawned:
		bus.Publish("agent.spawned", "agent:"+e.AgentID, "", map[string]any{"agent_id": e.AgentID, "name": e.Name, "model": e.Model})
	case *agent.AgentTerminated:
		bus.Publish("agent.terminated", "agent:"+e.AgentID, "", map[string]any{"agent_id": e.AgentID, "name": e.Name})
	case *agent.AgentMessage:
		typ := "agent.message"
		if e.Outcome != "ok" {
			typ = "agent.error"
		}
		bus.Publish(typ, e.From, "agent:"+e.AgentID, map[string]any{"agent_id": e.AgentID, "name": e.Name,
			"session_id": e.SessionID, "from": e.From, "outcome": e.Outcome, "message_chars": e.MessageChars,
			"response_chars": e.ResponseChars, "input_tokens": e.InputTokens, "output_tokens": e.OutputTokens, "cost_usd": e.CostUSD,
			"model": e.Model, "provider": e.Provider, "latency_ms": e.LatencyMS, "tool_calls": e.ToolCalls})
	case *metering.BudgetWarning:
		bus.Publish("budget.warning", "usage", budgetTarget(e.BudgetAlert), budgetDetail(e.BudgetAlert))
	case *metering.BudgetExceeded:
		bus.Publish("budget.exceeded", "usage", budgetTarget(e.BudgetAlert), budgetDetail(e.BudgetAlert))
	}
}

func budgetTarget(a metering.BudgetAlert) string {
	if a.Scope == "agent" {
		return "agent:" + a.AgentID
	}
	return "global"
}

func budgetDetail(a metering.BudgetAlert) map[string]any {
	return map[string]any{"scope": a.Scope, "agent_id": a.AgentID, "agent_name": a.AgentName, "limit": a.Limit,
		"window": a.Window, "spent": a.Spent, "max": a.Max, "refused": a.Refused}
}

// startComms starts the message router (wired to the agent runtime) and
// the webhook engine (which watches the bus); shutdown runs in reverse.
func startComms(k *kernel.Kernel, db *store.DB, vault *store.Vault, auditLog *audit.Log, bus *comms.Bus, agents *agent.Agents,
	channels *channel.Service, guard *ssrf.Guard, cfg Config, cs commsSettings) (*commsParts, error) {
	router, err := comms.StartRouter(k, db, comms.RouterOptions{Bus: bus, Audit: auditLog, Agents: agentRuntime{agents},
		Channels: channels, LoopMaxBounces: cfg.Comms.LoopGuardMaxBounces, LoopWindow: cs.loopWindow, TurnTimeout: cs.turnTimeout})
	if err != nil {
		return nil, err
	}
	router.AddNodeSource(channelNodes{channels})
	eng, err := webhook.Start(k, db, webhook.Options{Bus: bus, Vault: vault, Guard: guard, Backoff: cs.backoff,
		Timeout: cs.webhookTimeout, DisableAfter: cfg.Webhooks.DisableAfter, MaxPending: cfg.Webhooks.MaxPending,
		MaxEndpoints: cfg.Webhooks.MaxEndpoints, UserAgent: "fangd-webhook/" + version, Clustered: cfg.Cluster.enabled()})
	if err != nil {
		return nil, err
	}
	return &commsParts{router: router, webhooks: eng, guard: guard}, nil
}

// channelBus lets channels publish on the comms bus; an inbound message
// handed to an agent is also an observed route (channel -> agent).
type channelBus struct{ bus *comms.Bus }

func (b channelBus) Publish(ev channel.Event) {
	edge := ""
	if ev.Type == channel.EventReceived && ev.Source != "" && ev.Target != "" {
		edge = "channel_message"
	}
	b.bus.PublishEdge(ev.Type, ev.Source, ev.Target, edge, ev.Detail)
}

// channelNodes lists configured channels as topology nodes.
type channelNodes struct{ s *channel.Service }

func (c channelNodes) Nodes(ctx context.Context) ([]comms.Node, error) {
	views, err := c.s.List(ctx, true)
	if err != nil {
		return nil, err
	}
	out := make([]comms.Node, 0, len(views))
	for _, v := range views {
		out = append(out, comms.Node{ID: "channel:" + v.Name, Kind: "channel", Name: v.Name, State: v.State})
	}
	return out, nil
}

// agentRuntime adapts the agent runtime to what comms needs.
type agentRuntime struct{ a *agent.Agents }

func toCommsAgent(a *agent.Agent) *comms.Agent {
	return &comms.Agent{ID: a.ID, Name: a.Name, Description: a.Description, State: a.State, Model: a.Model, Tags: a.Tags}
}

func (r agentRuntime) Resolve(_ context.Context, ref string) (*comms.Agent, error) {
	rf, err := agent.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	a, err := r.a.Get(context.Background(), rf)
	if err != nil {
		return nil, err
	}
	return toCommsAgent(a), nil
}

func (r agentRuntime) List(context.Context) ([]comms.Agent, error) {
	all, err := r.a.List(context.Background())
	if err != nil {
		return nil, err
	}
	out := make([]comms.Agent, len(all))
	for i := range all {
		out[i] = *toCommsAgent(&all[i])
	}
	return out, nil
}

// Turn runs in the agent's default session; the agent runtime bounds it
// with its own timeout (provider, ledger and audit included).
func (r agentRuntime) Turn(ctx context.Context, agentID, from, message string) (*comms.TurnResult, error) {
	res, err := r.a.Send(ctx, agent.Send{Ref: agent.Ref{ID: agentID}, Text: message, From: from, Who: agent.Who{Actor: "comms"}})
	if err != nil {
		return nil, err
	}
	return &comms.TurnResult{Response: res.Response, InputTokens: int(res.InputTokens), OutputTokens: int(res.OutputTokens), CostUSD: res.CostUSD}, nil
}
