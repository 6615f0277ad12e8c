package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// A2A tasks in cluster mode (docs/cluster.md "A2A tasks across the
// cluster"): a task runs on the node that created it, and the cluster's
// task directory in etcd names that node. A request about a task this node
// does not have (GetTask, CancelTask, SubscribeToTask, the push config
// methods, in JSON-RPC 1.0 and 0.3 and on the REST routes) is forwarded
// to its node; a message in a context another node hosts, or for an agent
// another node hosts, goes to that node. Once a task's node is gone, its
// final entry (or the sweep's "failed") is adopted into this node's store
// and answered here. A single node has no directory and none of this runs.

// a2aDirectory is what the HTTP layer needs of the task directory
// (fcluster.A2ATasks).
type a2aDirectory interface {
	NodeName() string
	Task(ctx context.Context, id string) (a2a.ClusterTask, bool, error)
	ContextNode(ctx context.Context, contextID string) (string, bool, error)
}

// a2aElsewhere says the task, context or agent a request needs is on node.
type a2aElsewhere struct {
	what, node string
	timeout    time.Duration
}

func (e *a2aElsewhere) Error() string { return e.what + " is hosted on node " + e.node }

// Host is hostedElsewhere's.
func (e *a2aElsewhere) Host() (what, node string) { return e.what, e.node }

func (e *a2aElsewhere) forwardTimeout() time.Duration { return e.timeout }

// useA2ACluster picks the task directory up from the cluster member.
func (s *Server) useA2ACluster(c ClusterView) {
	if l, ok := c.(interface{ A2A() *fcluster.A2ATasks }); ok {
		if d := l.A2A(); d != nil {
			s.a2aDir = d
		}
	}
}

// a2aForwardTimeout bounds a forwarded A2A request: a blocking send waits
// up to [a2a] sync_wait on the host.
func (s *Server) a2aForwardTimeout() time.Duration {
	return s.deps.A2A.SyncWait() + 5*time.Second
}

// a2aTarget is what a request says about where it must run.
type a2aTarget struct {
	taskID, contextID, agentRef string
	// stream: the answer is an SSE stream, relayed as it comes.
	stream bool
}

// a2aRPCTarget reads a JSON-RPC body's task, context and agent (the last
// only on the shared endpoint, agentID empty), and whether it asks for a
// stream.
func a2aRPCTarget(body []byte, agentID string) a2aTarget {
	var rpc struct {
		Method string `json:"method"`
		Params struct {
			ID       string         `json:"id"`
			TaskID   string         `json:"taskId"`
			Tenant   string         `json:"tenant"`
			Metadata map[string]any `json:"metadata"`
			Message  *struct {
				TaskID    string         `json:"taskId"`
				ContextID string         `json:"contextId"`
				Metadata  map[string]any `json:"metadata"`
			} `json:"message"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &rpc) != nil {
		return a2aTarget{}
	}
	p := &rpc.Params
	stream := a2aStreamMethods[rpc.Method]
	switch m := rpc.Method; {
	case m == "SendMessage" || m == "SendStreamingMessage" || m == "message/send" || m == "message/stream":
		if p.Message == nil {
			return a2aTarget{}
		}
		t := a2aTarget{taskID: p.Message.TaskID, contextID: p.Message.ContextID, stream: stream}
		if agentID == "" {
			t.agentRef = firstNonEmpty(p.Tenant, metaStr(p.Metadata, "agent_id"), metaStr(p.Message.Metadata, "agent_id"))
		}
		return t
	case m == "GetTask" || m == "CancelTask" || m == "SubscribeToTask" || m == "tasks/get" || m == "tasks/cancel" ||
		m == "tasks/resubscribe" || strings.Contains(strings.ToLower(m), "pushnotificationconfig"):
		// The push config methods name the task taskId (1.0, 0.3's set)
		// or id (0.3's get, list, delete); the others id.
		return a2aTarget{taskID: firstNonEmpty(p.TaskID, p.ID), stream: stream}
	}
	return a2aTarget{}
}

func metaStr(m map[string]any, key string) string {
	v, _ := m[key].(string)
	return v
}

// a2aRoute sends the request to the node it belongs on. It reports true
// when the answer is written (forwarded); an error is the answer instead;
// false with no error: this node answers. Cluster mode only (the caller
// checks s.a2aDir), never for a request that was forwarded already.
func (s *Server) a2aRoute(ctx *fasthttp.RequestCtx, t a2aTarget) (bool, error) {
	if s.a2aDir == nil || s.hosts == nil || len(ctx.Request.Header.Peek(forwardedHeader)) > 0 {
		return false, nil
	}
	// The request's own context ends with its handler; these lookups
	// may outlive a forward's answer.
	c, cancel := context.WithTimeout(context.Background(), dirTimeout)
	defer cancel()
	self := s.a2aDir.NodeName()
	switch {
	case t.taskID != "":
		if s.deps.A2A.HasTask(c, t.taskID) {
			return false, nil
		}
		e, ok, err := s.a2aDir.Task(c, t.taskID)
		if err != nil {
			s.log.Warn().Err(err).Str("task", t.taskID).Msg("cluster: A2A task directory lookup failed")
			return false, &apiError{fasthttp.StatusServiceUnavailable, "cluster_unavailable",
				"the cluster's A2A task directory (etcd) did not answer; the task may be hosted on another node, try again"}
		}
		if !ok || e.Node == self {
			return false, nil
		}
		rerr := s.a2aForward(ctx, t, &a2aElsewhere{what: "A2A task " + t.taskID, node: e.Node, timeout: s.a2aForwardTimeout()})
		if rerr == nil {
			return true, nil
		}
		// The host is not reachable: a finished task (or one the sweep
		// failed) is answered here from its entry.
		if e.Terminal() {
			if aerr := s.deps.A2A.AdoptClusterTask(e); aerr == nil {
				return false, nil
			} else {
				s.log.Warn().Err(aerr).Str("task", t.taskID).Msg("cluster: A2A task entry not adopted")
			}
		}
		return false, &apiError{fasthttp.StatusServiceUnavailable, "host_unreachable",
			fmt.Sprintf("A2A task %s runs on cluster node %s, which is not reachable now; if that node has left the cluster the task is marked failed within about %s and then answered by every node", t.taskID, e.Node, (fcluster.A2ALostAfter).Round(time.Second))}
	case t.contextID != "":
		node, ok, err := s.a2aDir.ContextNode(c, t.contextID)
		if err != nil || !ok || node == self {
			// Unknown or unreadable: a context starts (or goes on) here.
			break
		}
		rerr := s.a2aForward(ctx, t, &a2aElsewhere{what: "A2A context " + t.contextID, node: node, timeout: s.a2aForwardTimeout()})
		if rerr == nil {
			return true, nil
		}
		// Its node is gone with the context's session: it goes on here.
		s.log.Info().Str("context", t.contextID).Str("node", node).Msg("cluster: A2A context's node unreachable; the message starts a new session here")
	}
	if t.agentRef != "" && s.agentDir != nil {
		return s.a2aRouteAgent(ctx, c, t)
	}
	return false, nil
}

// a2aForward forwards the request to e's node: a stream through the
// incremental relay (relay.go), anything else through the router
// (forward.go).
func (s *Server) a2aForward(ctx *fasthttp.RequestCtx, t a2aTarget, e *a2aElsewhere) error {
	if t.stream {
		return s.relayStream(ctx, relayedStream{what: e.what, node: e.node, lost: a2aStreamLost(ctx.Request.Body())})
	}
	return s.hosts.route(ctx, e)
}

// a2aRouteAgent forwards a message for an agent this node does not have
// to the one node whose agent it is (the agent directory).
func (s *Server) a2aRouteAgent(ctx *fasthttp.RequestCtx, c context.Context, t a2aTarget) (bool, error) {
	ref := t.agentRef
	if s.agentDir == nil || s.hosts == nil || len(ctx.Request.Header.Peek(forwardedHeader)) > 0 {
		return false, nil
	}
	_, err := s.deps.A2A.LocalAgent(c, ref)
	if ke := kernel.AsError(err); err == nil || ke == nil || ke.Kind != kernel.KindNotFound {
		return false, nil
	}
	r, perr := agent.ParseRef(ref)
	if perr != nil {
		return false, nil
	}
	recs, lerr := s.agentDir.Lookup(c, r.ID, r.Name)
	if lerr != nil {
		return false, errDirectory("the agent may be hosted on another node; nothing was changed, try again")
	}
	self := s.agentDir.NodeName()
	var remote []fcluster.AgentRecord
	for _, r := range recs {
		if r.Node != self {
			remote = append(remote, r)
		}
	}
	if len(remote) != 1 {
		// None: this node's own answer; several: name it by id (the
		// local answer says the agent is unknown here).
		return false, nil
	}
	err = s.a2aForward(ctx, t, &a2aElsewhere{what: "agent " + remote[0].Name, node: remote[0].Node, timeout: s.a2aForwardTimeout()})
	if err == nil {
		return true, nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return false, err
	}
	return false, nil
}

// a2aStreamLost ends a relayed A2A stream whose host broke off: a
// JSON-RPC error (internal error, -32603) for the request's id, the way a
// stream's failure is told on the host.
func a2aStreamLost(body []byte) func(w *sse.Writer, msg string) {
	var rpc struct {
		ID json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(body, &rpc)
	if len(rpc.ID) == 0 {
		rpc.ID = json.RawMessage("null")
	}
	return func(w *sse.Writer, msg string) {
		data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": rpc.ID,
			"error": map[string]any{"code": -32603, "message": msg}})
		w.Event(0, "", data)
	}
}
