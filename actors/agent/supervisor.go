package agent

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
)

// deps is what the supervisor and every agent share.
type deps struct {
	k         *kernel.Kernel
	db        *store.DB
	audit     *audit.Log
	llm       *llm.Registry
	meter     *usage.Meter
	manifests *store.Collection[Manifest]
	log       zerolog.Logger
	opts      Options
}

type entry struct {
	m   Manifest
	pid *actor.PID // nil once its supervisor gave up on it
}

// supervisor is the "agents" actor: the registry of manifests by id and
// name, and the parent of every agent/<id>.
type supervisor struct {
	d      *deps
	byID   map[string]*entry
	byName map[string]*entry // lower-cased name
	// stopping: the daemon is shutting down, so children stopping is
	// expected and not an error.
	stopping bool
}

func nameKey(name string) string { return strings.ToLower(name) }

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := s.load(c); err != nil {
			panic(fmt.Errorf("agents: load manifests: %w", err))
		}
	case *Create:
		s.create(c, m)
	case *Get:
		e, err := s.lookup(m.Ref)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(s.view(e))
	case *List:
		c.Respond(s.list())
	case *Update:
		s.update(c, m)
	case *Delete:
		s.delete(c, m)
	case *Send:
		e, err := s.lookup(m.Ref)
		if err != nil {
			c.Respond(err)
			return
		}
		if e.pid == nil {
			c.Respond(kernel.Errorf(kernel.KindUnavailable, "agent_failed", "agent %s failed and was stopped; it starts again with the daemon", e.m.Name))
			return
		}
		if ch, ok := channelOf(m.From); ok && !e.m.AllowsChannel(ch) {
			c.Respond(kernel.Errorf(kernel.KindForbidden, "channel_not_allowed",
				"agent %s does not answer channel %s: it is not in the agent's channels allow-list", e.m.Name, ch))
			return
		}
		c.Forward(e.pid)
	case *actor.Stopping:
		s.stopping = true
	case *actor.Terminated:
		if s.stopping {
			return
		}
		for _, e := range s.byID {
			if e.pid != nil && e.pid.Equal(m.Who) {
				s.d.log.Error().Str("agent_id", e.m.ID).Str("name", e.m.Name).Msg("agent actor stopped by its supervisor")
				e.pid = nil
			}
		}
	}
}

// load re-spawns every stored agent: a supervisor restart and a daemon
// restart land here alike.
func (s *supervisor) load(c actor.Context) error {
	s.byID, s.byName = map[string]*entry{}, map[string]*entry{}
	_, err := s.d.manifests.EachOrQuarantine(func(id string, m Manifest) bool {
		e := &entry{m: m}
		s.byID[id], s.byName[nameKey(m.Name)] = e, e
		pid, err := s.spawn(c, m)
		if err != nil {
			s.d.log.Error().Err(err).Str("agent_id", id).Msg("could not start agent")
		}
		e.pid = pid
		return true
	})
	return err
}

func (s *supervisor) spawn(c actor.Context, m Manifest) (*actor.PID, error) {
	d := s.d
	// Every turn passes through its agent's mailbox twice.
	props := d.k.Props(func() actor.Actor { return newAgent(d, m) }, actor.WithDispatcher(kernel.PinnedDispatcher(300)))
	pid, err := c.SpawnNamed(props, "agent/"+m.ID)
	if err != nil {
		return nil, err
	}
	// A parent hears *actor.Terminated for its children without watching.
	return pid, nil
}

func (s *supervisor) lookup(r Ref) (*entry, error) {
	var e *entry
	if r.ID != "" {
		e = s.byID[r.ID]
	} else {
		e = s.byName[nameKey(r.Name)]
	}
	if e == nil {
		return nil, kernel.Errorf(kernel.KindNotFound, "agent_not_found", "agent %s not found", r.ID+r.Name)
	}
	return e, nil
}

func (s *supervisor) view(e *entry) *Agent {
	a := &Agent{Manifest: e.m, State: "running", DefaultSessionID: defaultSession(e.m.ID)}
	a.Provider, a.ModelID, _ = strings.Cut(e.m.Model, "/")
	if e.pid == nil {
		a.State = "failed"
	}
	for _, l := range []*[]string{&a.Tags, &a.Tools, &a.Capabilities, &a.Channels, &a.MCPServers} {
		if *l == nil {
			*l = []string{}
		}
	}
	return a
}

func (s *supervisor) list() []Agent {
	out := make([]Agent, 0, len(s.byID))
	for _, e := range s.byID {
		out = append(out, *s.view(e))
	}
	slices.SortFunc(out, func(a, b Agent) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out
}

func (s *supervisor) create(c actor.Context, m *Create) {
	man := m.Spec.manifest()
	if err := validate(s.d.llm, &man); err != nil {
		c.Respond(err)
		return
	}
	if _, taken := s.byName[nameKey(man.Name)]; taken {
		c.Respond(kernel.Errorf(kernel.KindConflict, "agent_name_taken", "an agent named %s already exists", man.Name))
		return
	}
	if len(s.byID) >= s.d.opts.MaxAgents {
		c.Respond(kernel.Errorf(kernel.KindConflict, "agent_limit_reached",
			"%d agents exist, the most this daemon allows ([agents] max_agents); delete one or raise the limit", len(s.byID)))
		return
	}
	now := time.Now().UTC()
	man.ID, man.CreatedAt, man.UpdatedAt = uuid.NewString(), now, now
	if err := s.d.manifests.Put(man.ID, man); err != nil {
		c.Respond(err)
		return
	}
	e := &entry{m: man}
	s.byID[man.ID], s.byName[nameKey(man.Name)] = e, e
	pid, err := s.spawn(c, man)
	if err != nil {
		// Stored but not started: drop it so the caller's 5xx is the truth.
		delete(s.byID, man.ID)
		delete(s.byName, nameKey(man.Name))
		_ = s.d.manifests.Delete(man.ID)
		c.Respond(err)
		return
	}
	e.pid = pid
	c.ActorSystem().EventStream.Publish(&AgentSpawned{AgentID: man.ID, Name: man.Name, Model: man.Model, At: now})
	s.auditThenRespond(c, audit.Event{EventType: "agent_spawned", AgentID: man.ID, Actor: m.Who.Actor, SourceIP: m.Who.SourceIP,
		Details: fmt.Sprintf("name=%s model=%s max_tokens=%d", man.Name, man.Model, man.MaxTokens)}, s.view(e))
}

func (s *supervisor) update(c actor.Context, m *Update) {
	e, err := s.lookup(m.Ref)
	if err != nil {
		c.Respond(err)
		return
	}
	if m.Patch.empty() {
		c.Respond(kernel.Invalid("the patch changes nothing: give at least one of name, description, model, system_prompt, max_tokens, tags, tools, capabilities"))
		return
	}
	next := m.Patch.apply(e.m)
	if err := validate(s.d.llm, &next); err != nil {
		c.Respond(err)
		return
	}
	if other, taken := s.byName[nameKey(next.Name)]; taken && other != e {
		c.Respond(kernel.Errorf(kernel.KindConflict, "agent_name_taken", "an agent named %s already exists", next.Name))
		return
	}
	next.UpdatedAt = time.Now().UTC()
	if err := s.d.manifests.Put(next.ID, next); err != nil {
		c.Respond(err)
		return
	}
	delete(s.byName, nameKey(e.m.Name))
	e.m = next
	s.byName[nameKey(next.Name)] = e
	if e.pid != nil {
		c.Send(e.pid, &manifestChanged{m: next})
	}
	c.Respond(s.view(e))
}

func (s *supervisor) delete(c actor.Context, m *Delete) {
	e, err := s.lookup(m.Ref)
	if err != nil {
		c.Respond(err)
		return
	}
	if err := s.d.manifests.Delete(e.m.ID); err != nil {
		c.Respond(err)
		return
	}
	delete(s.byID, e.m.ID)
	delete(s.byName, nameKey(e.m.Name))
	if e.pid != nil {
		// The agent answers its waiting callers, deletes its sessions and
		// stops itself.
		c.Send(e.pid, &terminate{})
	} else {
		if err := deleteSessions(s.d.db, e.m.ID); err != nil {
			s.d.log.Error().Err(err).Str("agent_id", e.m.ID).Msg("could not delete a failed agent's sessions")
		}
	}
	now := time.Now().UTC()
	c.ActorSystem().EventStream.Publish(&AgentTerminated{AgentID: e.m.ID, Name: e.m.Name, At: now})
	meter, id := s.d.meter, e.m.ID
	go func() {
		if err := meter.ForgetAgent(context.Background(), id); err != nil {
			s.d.log.Warn().Err(err).Str("agent_id", id).Msg("could not drop a deleted agent's budget")
		}
	}()
	s.auditThenRespond(c, audit.Event{EventType: "agent_terminated", AgentID: e.m.ID, Actor: m.Who.Actor, SourceIP: m.Who.SourceIP,
		Details: "name=" + e.m.Name + " deleted"}, &Deleted{ID: e.m.ID, Name: e.m.Name})
}

// auditThenRespond answers the caller once the audit entry is durable (in
// a goroutine: the mailbox does not wait for the audit log). If the entry
// cannot be written the caller gets the error, not a success the audit
// log does not show.
func (s *supervisor) auditThenRespond(c actor.Context, ev audit.Event, reply any) {
	sender, system, log := c.Sender(), c.ActorSystem(), s.d.audit
	go func() {
		if log != nil {
			ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
			defer cancel()
			if _, err := log.Append(ctx, ev); err != nil {
				reply = err
			}
		}
		if sender != nil {
			system.Root.Send(sender, reply)
		}
	}()
}

// channelOf reads the channel name out of a chat message's sender,
// "channel:<name>:<chat id>" (actors/channel).
func channelOf(from string) (string, bool) {
	rest, ok := strings.CutPrefix(from, "channel:")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, ":")
	return name, name != ""
}
