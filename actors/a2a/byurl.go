package a2a

import (
	"context"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// LibreFang's client names an external agent by its discovery URL (POST
// /api/a2a/send {"url"}, POST /api/a2a/agents/{url}/approve); fangd's
// agent id is derived from the canonical URL, so the URL finds it.

// ExternalAgentByURL returns the discovered agent at rawURL (any spelling
// with the same canonical form); found is false when none was discovered
// there.
func (s *Service) ExternalAgentByURL(ctx context.Context, rawURL string) (a ExternalAgent, found bool, err error) {
	canon, err := CanonicalURL(rawURL)
	if err != nil {
		return a, false, err
	}
	if err := ctx.Err(); err != nil {
		return a, false, err
	}
	x, err := kernel.Ask[*ExternalAgent](ctx, s.k, s.sup, &getAgent{id: agentIDFor(canon)})
	if err != nil {
		if de := kernel.AsError(err); de != nil && de.Kind == kernel.KindNotFound {
			return a, false, nil
		}
		return a, false, err
	}
	return *x, true, nil
}

// LibreFangTask is a task in LibreFang's A2aTask shape ({id, sessionId,
// status: {state, message?}, messages, artifacts, agentId}).
type LibreFangTask = lfTask

// LibreFang returns the task in LibreFang's shape.
func (s *TaskSnapshot) LibreFang() LibreFangTask { return s.libreFang() }

// SyncWait is how long a blocking send waits for its task ([a2a] sync_wait).
func (s *Service) SyncWait() time.Duration { return s.opts.SyncWait }

// outboundTarget resolves an outbound send's recipient: the external agent ref
// names (id or name) and, when remote is set, the one of its agents remote
// names (a skill of its card, by id or name; the answer is the skill's
// id). With no remote and no external agent named ref, ref may name one
// agent served by exactly one discovered peer: then that peer and that
// agent.
func (s *Service) outboundTarget(ctx context.Context, ref, remote string) (ExternalAgent, string, error) {
	agent, err := s.ExternalAgent(ctx, ref)
	if err == nil {
		if remote == "" {
			return agent, "", nil
		}
		if id, ok := skillOf(agent, remote); ok {
			return agent, id, nil
		}
		names := make([]string, 0, len(agent.Skills))
		for i, sk := range agent.Skills {
			if i == 10 {
				names = append(names, "...")
				break
			}
			names = append(names, sk.Name+" ("+sk.ID+")")
		}
		return agent, "", kernel.Errorf(kernel.KindInvalid, "a2a_unknown_remote_agent",
			"%s serves no agent %q; its card lists: %s", agent.Name, remote, strings.Join(names, ", "))
	}
	if remote != "" {
		return agent, "", err
	}
	de := kernel.AsError(err)
	if de == nil || de.Kind != kernel.KindNotFound {
		return agent, "", err
	}
	all, lerr := kernel.Ask[[]ExternalAgent](ctx, s.k, s.sup, &listAgents{})
	if lerr != nil {
		return agent, "", err
	}
	var hits []ExternalAgent
	var id string
	for _, x := range all {
		if sid, ok := skillOf(x, ref); ok {
			hits, id = append(hits, x), sid
		}
	}
	switch len(hits) {
	case 0:
		return agent, "", err
	case 1:
		return hits[0], id, nil
	}
	peers := make([]string, len(hits))
	for i, h := range hits {
		peers[i] = h.Name + " (" + h.ID + ")"
	}
	return agent, "", kernel.Errorf(kernel.KindConflict, "a2a_ambiguous_agent",
		"several discovered peers serve an agent %q: %s; give the peer's url with the agent as agent_id", ref, strings.Join(peers, ", "))
}

// skillOf finds the card skill id or name names (a fangd peer lists one
// skill per agent, id = the agent's id).
func skillOf(a ExternalAgent, name string) (string, bool) {
	for _, sk := range a.Skills {
		if sk.ID == name || strings.EqualFold(sk.Name, name) {
			return sk.ID, true
		}
	}
	return "", false
}
