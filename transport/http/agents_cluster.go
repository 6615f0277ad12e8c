package http

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// Agents in cluster mode (docs/cluster.md "Request routing"): an agent
// runs on the node it was created on; the etcd agent directory names that
// node, so a request for an agent this node does not have is forwarded
// there (forward.go) and GET /api/agents lists every node's agents. A
// single node has no directory and none of this runs.

// agentDirectory is what the HTTP layer needs of the agent directory
// (fcluster.AgentDir).
type agentDirectory interface {
	NodeName() string
	Register(ctx context.Context, id, name string) error
	Rename(ctx context.Context, id, old, name string) error
	Remove(ctx context.Context, id, name string) error
	Lookup(ctx context.Context, id, name string) ([]fcluster.AgentRecord, error)
	List(ctx context.Context) ([]fcluster.AgentRecord, error)
}

// agentElsewhere says the agent a request names runs on node Node.
// Timeout bounds the forwarded call: an agent turn may take longer than
// the router's default.
type agentElsewhere struct {
	Agent, Node string
	Timeout     time.Duration
	// Stream: the request is a turn's SSE stream, relayed event by
	// event (relay.go) instead of forwarded whole.
	Stream bool
}

func (e *agentElsewhere) Error() string { return "agent " + e.Agent + " is hosted on node " + e.Node }

// Host is hostedElsewhere's.
func (e *agentElsewhere) Host() (what, node string) { return "agent " + e.Agent, e.Node }

// dirTimeout bounds one agent directory call made for a request.
const dirTimeout = 5 * time.Second

// errDirectory is the answer when etcd does not answer a directory call.
func errDirectory(what string) error {
	return &apiError{fasthttp.StatusServiceUnavailable, "cluster_unavailable",
		"the cluster's agent directory (etcd) did not answer; " + what}
}

// isAgentRoute is every route under /api/agents/{id}: each needs the
// running agent (or its node's store), so each is routed to its host.
func isAgentRoute(route string) bool {
	return strings.HasPrefix(route, "/api/agents/{id}") || strings.HasPrefix(route, "/api/v1/agents/{id}")
}

// agentHost turns a handler's "agent not found" into *agentElsewhere when
// the directory says another node hosts the agent: requests under
// /api/agents/{id} and comms/send to agent:<id or name>. A forwarded
// request is never looked up again (the host's 404 is the answer).
func (s *Server) agentHost(ctx *fasthttp.RequestCtx, route string, err error) error {
	if s.agentDir == nil || len(ctx.Request.Header.Peek(forwardedHeader)) > 0 {
		return err
	}
	ke := kernel.AsError(err)
	if ke == nil || ke.Kind != kernel.KindNotFound {
		return err
	}
	var ref agent.Ref
	switch {
	case isAgentRoute(route):
		if ke.Code != "agent_not_found" {
			return err
		}
		r, perr := agentRef(ctx)
		if perr != nil {
			return err
		}
		ref = r
	case route == "/api/comms/send" || route == "/api/v1/comms/send":
		var b struct {
			To        string `json:"to"`
			ToAgentID string `json:"to_agent_id"`
		}
		if json.Unmarshal(ctx.Request.Body(), &b) != nil {
			return err
		}
		if b.To == "" && b.ToAgentID != "" {
			b.To = "agent:" + b.ToAgentID
		}
		target, ok := strings.CutPrefix(b.To, "agent:")
		if !ok {
			return err
		}
		r, perr := agent.ParseRef(target)
		if perr != nil {
			return err
		}
		ref = r
	default:
		return err
	}
	// The request's own context has ended with its handler (endRequest).
	c, cancel := context.WithTimeout(context.Background(), dirTimeout)
	recs, lerr := s.agentDir.Lookup(c, ref.ID, ref.Name)
	cancel()
	if lerr != nil {
		s.log.Warn().Err(lerr).Str("path", string(ctx.Path())).Msg("cluster: agent directory lookup failed")
		return errDirectory("the agent may be hosted on another node; nothing was changed, try again")
	}
	self := s.agentDir.NodeName()
	var remote []fcluster.AgentRecord
	for _, r := range recs {
		if r.Node != self {
			remote = append(remote, r)
		}
	}
	switch len(remote) {
	case 0:
		// Unknown, or an entry naming this node for an agent it does
		// not have (removed at the next start): this node's 404.
		return err
	case 1:
		return &agentElsewhere{Agent: remote[0].Name, Node: remote[0].Node, Timeout: s.turnWait() + 5*time.Second,
			Stream: strings.HasSuffix(route, "/agents/{id}/message/stream")}
	}
	where := make([]string, len(remote))
	for i, r := range remote {
		where[i] = r.ID + " on " + r.Node
	}
	return kernel.Errorf(kernel.KindConflict, "agent_name_ambiguous",
		"this node has no agent named %s and %d other nodes have one (%s); name it by id, or ask one of those nodes", ref.Name, len(remote), strings.Join(where, ", "))
}

// routeHosted forwards a request whose entity another node hosts (err
// says which, see hostRouter.route): an agent turn's stream through the
// incremental relay, anything else through the router.
func (s *Server) routeHosted(ctx *fasthttp.RequestCtx, err error) error {
	var ae *agentElsewhere
	if errors.As(err, &ae) && ae.Stream {
		return s.relayStream(ctx, relayedStream{what: "agent " + ae.Agent, node: ae.Node,
			idle: agentRelayIdle(s.cfg.SSEHeartbeat), lost: agentStreamLost(requestID(ctx))})
	}
	return s.hosts.route(ctx, err)
}

// agentRelayIdle is how long a relayed turn stream may go without a byte
// from its host: the host sends a keep-alive comment every heartbeat
// (the same on every node), so three missed ones mean it is
// gone.
func agentRelayIdle(heartbeat time.Duration) time.Duration {
	return 3 * heartbeat
}

// agentStreamLost ends a relayed turn stream whose host broke off the way
// a turn's failure ends one on its host: phase "error", then an error
// event with the envelope (code host_stream_lost, status 502).
func agentStreamLost(reqID string) func(w *sse.Writer, msg string) {
	return func(w *sse.Writer, msg string) {
		for _, ev := range []struct {
			name string
			v    any
		}{
			{"phase", ssePhase{Phase: "error", Detail: &msg}},
			{"error", sseError{errorBody{Error: msg, Code: "host_stream_lost", RequestID: reqID}, fasthttp.StatusBadGateway}},
		} {
			data, _ := json.Marshal(ev.v)
			w.Event(0, ev.name, data)
		}
	}
}

// registerAgent records a just-created agent in the directory before the
// create is answered; when etcd does not answer, the local agent is
// deleted again and the create fails (503, nothing kept).
func (s *Server) registerAgent(ctx *fasthttp.RequestCtx, a *agent.Agent) error {
	if s.agentDir == nil {
		return nil
	}
	c, cancel := context.WithTimeout(s.reqCtx(ctx), dirTimeout)
	err := s.agentDir.Register(c, a.ID, a.Name)
	cancel()
	if err == nil {
		return nil
	}
	if _, derr := s.deps.Agents.Delete(s.reqCtx(ctx), agent.Ref{ID: a.ID}, who(ctx)); derr != nil {
		s.log.Error().Err(derr).Str("agent", a.ID).Msg("cluster: agent not registered in the directory and not deleted again")
	}
	s.log.Warn().Err(err).Msg("cluster: agent directory register failed")
	return errDirectory("the agent was not created")
}

// renameAgent moves a renamed agent's directory entry; when etcd does not
// answer, the local rename is undone and the PATCH fails (503).
func (s *Server) renameAgent(ctx *fasthttp.RequestCtx, a *agent.Agent, old string) error {
	if s.agentDir == nil || a.Name == old {
		return nil
	}
	c, cancel := context.WithTimeout(s.reqCtx(ctx), dirTimeout)
	err := s.agentDir.Rename(c, a.ID, old, a.Name)
	cancel()
	if err == nil {
		return nil
	}
	if _, uerr := s.deps.Agents.Update(s.reqCtx(ctx), agent.Ref{ID: a.ID}, agent.Patch{Name: &old}, who(ctx)); uerr != nil {
		s.log.Error().Err(uerr).Str("agent", a.ID).Msg("cluster: agent rename not undone after the directory failed")
	}
	s.log.Warn().Err(err).Msg("cluster: agent directory rename failed")
	return errDirectory("the agent was not renamed")
}

// unregisterAgent removes a deleted agent's entry. The delete is done
// and is answered 200 even if etcd does not answer: the stale entry only
// routes requests here, which answer 404, and the node removes it at its
// next start.
func (s *Server) unregisterAgent(ctx *fasthttp.RequestCtx, d *agent.Deleted) {
	if s.agentDir == nil {
		return
	}
	c, cancel := context.WithTimeout(s.reqCtx(ctx), dirTimeout)
	defer cancel()
	if err := s.agentDir.Remove(c, d.ID, d.Name); err != nil {
		s.log.Warn().Err(err).Str("agent", d.ID).Msg("cluster: deleted agent left in the agent directory until this node restarts")
	}
}

// remoteAgent is GET /api/agents' entry for an agent another node hosts:
// what the directory has (no model, status, created_at...; GET
// /api/agents/{id} through any node answers with the host's full view).
type remoteAgent struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Node   string `json:"node"`
	Remote bool   `json:"remote"`
}

// clusterAgents adds the other nodes' agents to this node's: the local
// ones first (oldest first), then the remote ones by name. remoteOK is
// false when the directory did not answer (the local ones only).
func (s *Server) clusterAgents(ctx *fasthttp.RequestCtx, local []agent.Agent) (all []any, remoteOK bool) {
	all = make([]any, 0, len(local))
	for _, a := range local {
		all = append(all, a)
	}
	c, cancel := context.WithTimeout(s.reqCtx(ctx), dirTimeout)
	recs, err := s.agentDir.List(c)
	cancel()
	if err != nil {
		s.log.Warn().Err(err).Msg("cluster: agent directory list failed; listing this node's agents only")
		return all, false
	}
	self := s.agentDir.NodeName()
	for _, r := range recs {
		if r.Node != self {
			all = append(all, remoteAgent{r.ID, r.Name, r.Node, true})
		}
	}
	return all, true
}
