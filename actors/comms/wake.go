package comms

import (
	"context"
	"errors"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// wakeResolved carries a wake whose agent was looked up.
type wakeResolved struct {
	req   *Wake
	agent *Agent
	err   error
	event uint64
}

// maxPendingWakes bounds the "next" texts held per agent.
const maxPendingWakes = 100

// wake publishes hook.wake durably and, when an agent is named, wakes it:
// mode "now" runs a turn with the text at once (in the background),
// "next" holds the text and prepends it to the agent's next turn routed
// through comms.
func (r *router) wake(c actor.Context, m *Wake) {
	switch m.Mode {
	case "":
		m.Mode = "now"
	case "now", "next":
	case "next_heartbeat":
		m.Mode = "next"
	default:
		m.Reply <- WakeOutcome{Err: kernel.Invalid(`"mode" must be "now" or "next"`)}
		return
	}
	if err := CheckContent("text", m.Text); err != nil {
		m.Reply <- WakeOutcome{Err: err}
		return
	}
	if m.Agent != "" && r.opts.Agents == nil {
		m.Reply <- WakeOutcome{Err: kernel.Unavailable("no agent runtime is wired into this daemon")}
		return
	}
	self, system, agents, bus := c.Self(), c.ActorSystem(), r.opts.Agents, r.opts.Bus
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), kernel.DefaultAskTimeout)
		defer cancel()
		out := &wakeResolved{req: m}
		if m.Agent != "" {
			out.agent, out.err = agents.Resolve(ctx, m.Agent)
			if out.err != nil {
				m.Reply <- WakeOutcome{Err: out.err}
				return
			}
		}
		target := ""
		if out.agent != nil {
			target = "agent:" + out.agent.ID
		}
		out.event, out.err = bus.PublishSync(ctx, "hook.wake", m.Via, target, map[string]any{"mode": m.Mode, "text": m.Text})
		if out.err != nil {
			m.Reply <- WakeOutcome{Err: out.err}
			return
		}
		if out.agent == nil {
			m.Reply <- WakeOutcome{Result: &WakeResult{Status: "accepted", Mode: m.Mode, EventID: out.event}}
			return
		}
		system.Root.Send(self, out)
	}()
}

// wakeAgent runs in the actor once the wake event is durable.
func (r *router) wakeAgent(c actor.Context, m *wakeResolved) {
	res := &WakeResult{Status: "accepted", Mode: m.req.Mode, EventID: m.event, AgentID: m.agent.ID}
	if m.req.Mode == "next" {
		held, err := r.wakes.Get(m.agent.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.req.Reply <- WakeOutcome{Err: err}
			return
		}
		if len(held) >= maxPendingWakes {
			m.req.Reply <- WakeOutcome{Err: kernel.Errorf(kernel.KindRateLimited, "too_many_wakes",
				"agent %s already holds %d pending wakes", m.agent.Name, maxPendingWakes)}
			return
		}
		if err := r.wakes.Put(m.agent.ID, append(held, m.req.Text)); err != nil {
			m.req.Reply <- WakeOutcome{Err: err}
			return
		}
		m.req.Reply <- WakeOutcome{Result: res}
		return
	}
	to := "agent:" + m.agent.ID
	from := m.req.Via
	bus, agents, timeout := r.opts.Bus, r.opts.Agents, r.opts.TurnTimeout
	if err := r.guard(from, to); err != nil {
		m.req.Reply <- WakeOutcome{Err: err}
		return
	}
	bus.PublishRoute(from, to, "hook", map[string]any{"wake_event": m.event})
	content := r.takeWakes(m.agent.ID, "[wake] "+m.req.Text)
	m.req.Reply <- WakeOutcome{Result: res}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := agents.Turn(ctx, m.agent.ID, from, content)
		if err != nil {
			bus.Publish("message.failed", from, to, map[string]any{"wake_event": m.event, "error": err.Error()})
			return
		}
		bus.Publish("message.delivered", from, to, map[string]any{"wake_event": m.event, "status": "delivered",
			"input_tokens": out.InputTokens, "output_tokens": out.OutputTokens})
	}()
}

// takeWakes prepends and forgets the "next" wake texts held for agentID.
// The read and delete are tiny and rare (only after a "next" wake), so
// they run inline.
func (r *router) takeWakes(agentID, content string) string {
	held, err := r.wakes.Get(agentID)
	if err != nil || len(held) == 0 {
		return content
	}
	if err := r.wakes.Delete(agentID); err != nil {
		r.logger.Error().Err(err).Msg("could not clear pending wakes")
		return content
	}
	var b strings.Builder
	for _, t := range held {
		b.WriteString("[wake] ")
		b.WriteString(t)
		b.WriteString("\n")
	}
	b.WriteString("\n")
	b.WriteString(content)
	return b.String()
}
