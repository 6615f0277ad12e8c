package a2a

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2asrv"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// protocolHandler implements the SDK's transport-agnostic RequestHandler
// over the actors. One serves the shared endpoint (agentID empty: the
// message says which agent) and one per local agent.
type protocolHandler struct {
	svc     *Service
	agentID string
}

var _ a2asrv.RequestHandler = (*protocolHandler)(nil)

// Handler returns the protocol handler for one local agent, or for the
// shared endpoint when agentID is empty.
func (s *Service) Handler(agentID string) a2asrv.RequestHandler {
	return &protocolHandler{svc: s, agentID: agentID}
}

func (h *protocolHandler) scope(ctx context.Context) scope {
	return CallerFrom(ctx).scope(Inbound, h.agentID)
}

// GetTask implements a2asrv.RequestHandler.
func (h *protocolHandler) GetTask(ctx context.Context, req *a2a.GetTaskRequest) (*a2a.Task, error) {
	if req.ID == "" {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "id is required")
	}
	if req.HistoryLength != nil && *req.HistoryLength < 0 {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "historyLength must not be negative")
	}
	snap, err := kernel.Ask[*TaskSnapshot](ctx, h.svc.k, h.svc.sup, &getTask{id: string(req.ID), scope: h.scope(ctx)})
	if err != nil {
		return nil, toProtocol(err)
	}
	return snap.A2A(req.HistoryLength), nil
}

// ListTasks implements a2asrv.RequestHandler.
func (h *protocolHandler) ListTasks(ctx context.Context, req *a2a.ListTasksRequest) (*a2a.ListTasksResponse, error) {
	if req.PageSize < 0 || req.PageSize > 100 {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "pageSize must be between 1 and 100")
	}
	if req.HistoryLength != nil && *req.HistoryLength < 0 {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "historyLength must not be negative")
	}
	f := ListFilter{ContextID: req.ContextID, State: req.Status, PageSize: req.PageSize, PageToken: req.PageToken}
	if f.PageSize == 0 {
		f.PageSize = 50
	}
	if req.StatusTimestampAfter != nil {
		f.After = *req.StatusTimestampAfter
	}
	page, err := kernel.Ask[*TaskPage](ctx, h.svc.k, h.svc.sup, &listTasks{filter: f, scope: h.scope(ctx)})
	if err != nil {
		return nil, toProtocol(err)
	}
	resp := &a2a.ListTasksResponse{Tasks: make([]*a2a.Task, 0, len(page.Tasks)), TotalSize: page.Total,
		PageSize: f.PageSize, NextPageToken: page.NextToken}
	for _, s := range page.Tasks {
		t := s.A2A(req.HistoryLength)
		if !req.IncludeArtifacts {
			t.Artifacts = nil
		}
		resp.Tasks = append(resp.Tasks, t)
	}
	return resp, nil
}

// CancelTask implements a2asrv.RequestHandler.
func (h *protocolHandler) CancelTask(ctx context.Context, req *a2a.CancelTaskRequest) (*a2a.Task, error) {
	if req == nil || req.ID == "" {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "id is required")
	}
	snap, err := kernel.Ask[*TaskSnapshot](ctx, h.svc.k, h.svc.sup, &cancelTask{id: string(req.ID), scope: h.scope(ctx)})
	if err != nil {
		return nil, toProtocol(err)
	}
	return snap.A2A(nil), nil
}

// SendMessage implements a2asrv.RequestHandler: it creates a task and, unless
// the client asked to return immediately, waits for its final state.
func (h *protocolHandler) SendMessage(ctx context.Context, req *a2a.SendMessageRequest) (a2a.SendMessageResult, error) {
	immediate := req.Config != nil && req.Config.ReturnImmediately
	sub, _, err := h.svc.startInbound(ctx, h.agentID, req, !immediate)
	if err != nil {
		return nil, toProtocol(err)
	}
	var hl *int
	if req.Config != nil {
		hl = req.Config.HistoryLength
	}
	last, durable, err := h.svc.await(ctx, sub, immediate)
	if err != nil {
		return nil, toProtocol(err)
	}
	if durable != nil {
		// The answer shows the task's final state: it leaves once that is
		// on disk. Under the HTTP layer the wait overlaps the request's
		// audit entry (PendingWrites); elsewhere it is here.
		if pw := pendingWritesFrom(ctx); pw != nil {
			pw.add(durable)
		} else if err := durable.wait(ctx); err != nil && ctx.Err() != nil {
			return nil, toProtocol(ctx.Err())
		}
	}
	if hl != nil {
		last = trimHistory(last, *hl)
	}
	return last, nil
}

// SendStreamingMessage implements a2asrv.RequestHandler: the task's updates
// as they happen, starting with the task itself.
func (h *protocolHandler) SendStreamingMessage(ctx context.Context, req *a2a.SendMessageRequest) iter.Seq2[a2a.Event, error] {
	return func(yield func(a2a.Event, error) bool) {
		if !h.svc.opts.Streaming {
			yield(nil, a2a.NewError(a2a.ErrUnsupportedOperation, "streaming is turned off on this server"))
			return
		}
		sub, id, err := h.svc.startInbound(ctx, h.agentID, req, false)
		if err != nil {
			yield(nil, toProtocol(err))
			return
		}
		h.svc.stream(ctx, id, sub, yield)
	}
}

// SubscribeToTask implements a2asrv.RequestHandler.
func (h *protocolHandler) SubscribeToTask(ctx context.Context, req *a2a.SubscribeToTaskRequest) iter.Seq2[a2a.Event, error] {
	return func(yield func(a2a.Event, error) bool) {
		if !h.svc.opts.Streaming {
			yield(nil, a2a.NewError(a2a.ErrUnsupportedOperation, "streaming is turned off on this server"))
			return
		}
		if req == nil || req.ID == "" {
			yield(nil, a2a.NewError(a2a.ErrInvalidParams, "id is required"))
			return
		}
		sub := newSubscriber()
		snap, err := kernel.Ask[*TaskSnapshot](ctx, h.svc.k, h.svc.sup, &subscribeTask{id: string(req.ID), scope: h.scope(ctx), sub: sub})
		if err != nil {
			yield(nil, toProtocol(err))
			return
		}
		if snap.Terminal() {
			yield(nil, a2a.NewError(a2a.ErrUnsupportedOperation,
				fmt.Sprintf("task %s has finished (%s); there is nothing to subscribe to", snap.ID(), SeedStatus(snap.State()))))
			return
		}
		h.svc.stream(ctx, snap.ID(), sub, yield)
	}
}

// stream yields a subscriber's events until the task finishes, the client
// goes away (yield returns false) or the request context ends.
func (s *Service) stream(ctx context.Context, id string, sub *subscriber, yield func(a2a.Event, error) bool) {
	for {
		select {
		case u, ok := <-sub.C():
			if !ok {
				return
			}
			if u.durable != nil && u.durable.wait(ctx) != nil && ctx.Err() != nil {
				s.k.Root.Send(s.sup, &unsubscribe{id: id, sub: sub})
				return
			}
			if !yield(u.Event, nil) {
				s.k.Root.Send(s.sup, &unsubscribe{id: id, sub: sub})
				return
			}
		case <-ctx.Done():
			s.k.Root.Send(s.sup, &unsubscribe{id: id, sub: sub})
			return
		}
	}
}

// await waits for a task's final state (or its first update when
// immediate) within SyncWait, and returns the task as it then is.
// The fence it returns, when not nil, is the write the task is ahead of:
// the caller shows the task to nobody before it is done.
func (s *Service) await(ctx context.Context, sub *subscriber, immediate bool) (*a2a.Task, *fence, error) {
	timer := time.NewTimer(s.opts.SyncWait)
	defer timer.Stop()
	var last *a2a.Task
	var durable *fence
	for {
		select {
		case u, ok := <-sub.C():
			if !ok {
				if last == nil {
					return nil, nil, kernel.Errorf(kernel.KindInternal, "task_lost", "the task ended without any update")
				}
				return last, durable, nil
			}
			last, durable = u.Task, u.durable
			if immediate {
				s.k.Root.Send(s.sup, &unsubscribe{id: string(last.ID), sub: sub})
				return last, durable, nil
			}
		case <-timer.C:
			if last == nil {
				return nil, nil, kernel.Unavailable("the task did not start within %s", s.opts.SyncWait)
			}
			s.k.Root.Send(s.sup, &unsubscribe{id: string(last.ID), sub: sub})
			return last, durable, nil
		case <-ctx.Done():
			if last != nil {
				s.k.Root.Send(s.sup, &unsubscribe{id: string(last.ID), sub: sub})
			}
			return nil, nil, ctx.Err()
		}
	}
}

func trimHistory(t *a2a.Task, n int) *a2a.Task {
	c := *t
	switch {
	case n <= 0:
		c.History = []*a2a.Message{}
	case n < len(c.History):
		c.History = c.History[len(c.History)-n:]
	}
	return &c
}

// startInbound validates a SendMessage request, picks the agent and
// creates the task with a subscriber attached. blocking says the caller
// shows the task to nobody before its final state (createTask.blocking).
func (s *Service) startInbound(ctx context.Context, agentID string, req *a2a.SendMessageRequest, blocking bool) (*subscriber, string, error) {
	if req == nil || req.Message == nil {
		return nil, "", errInvalidMessage("message is required")
	}
	msg := req.Message
	if err := validateProtocolMessage(msg); err != nil {
		return nil, "", err
	}
	if req.Config != nil && len(req.Config.AcceptedOutputModes) > 0 && !acceptsText(req.Config.AcceptedOutputModes) {
		return nil, "", errUnsupportedContent("fangd's agents answer in text/plain, which acceptedOutputModes %v excludes", req.Config.AcceptedOutputModes)
	}
	if msg.TaskID != "" {
		return nil, "", s.continueTask(ctx, agentID, msg)
	}
	agent, err := s.target(ctx, agentID, req)
	if err != nil {
		return nil, "", err
	}
	caller := CallerFrom(ctx)
	rec := newInboundRecord(agent, caller, msg)
	if req.Config != nil && req.Config.PushConfig != nil {
		p := pushFromProtocol(req.Config.PushConfig)
		if err := s.validatePushTarget(ctx, &p); err != nil {
			return nil, "", err
		}
		tb := taskBase{svc: s, rec: *rec}
		if err := tb.storePushSecret(p); err != nil {
			return nil, "", err
		}
		p.Token, p.Credentials = "", ""
		rec.Push = []PushTarget{p}
	}
	if err := s.clusterRegister(ctx, rec); err != nil {
		return nil, "", err
	}
	sub := newSubscriber()
	if _, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &createTask{rec: rec, sub: sub, blocking: blocking}); err != nil {
		s.clusterForget(rec)
		return nil, "", err
	}
	s.received(rec)
	return sub, rec.ID, nil
}

func newInboundRecord(agent Agent, caller Caller, msg *a2a.Message) *taskRecord {
	id := newID()
	contextID := msg.ContextID
	if contextID == "" {
		contextID = newID()
	}
	m := *msg
	m.TaskID, m.ContextID = a2a.TaskID(id), contextID
	if m.ID == "" {
		m.ID = uuid.NewString()
	}
	now := time.Now().UTC()
	return &taskRecord{
		ID: id, Direction: Inbound, AgentID: agent.ID, AgentName: agent.Name, ContextID: contextID,
		State: a2a.TaskStateSubmitted, History: []*a2a.Message{&m}, Caller: caller.Name,
		CreatedAt: now, UpdatedAt: now,
	}
}

// newID is a time-ordered UUID (v7): stored tasks then list in creation order.
func newID() string { return uuid.Must(uuid.NewV7()).String() }

// continueTask answers a message that names an existing task. fangd's
// agents finish a task in one turn (follow-ups share the context instead),
// so a task never waits for more input.
func (s *Service) continueTask(ctx context.Context, agentID string, msg *a2a.Message) error {
	snap, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: string(msg.TaskID), scope: CallerFrom(ctx).scope(Inbound, agentID)})
	if err != nil {
		return err
	}
	if snap.Terminal() {
		return errUnsupportedOperation("task %s has finished (%s) and accepts no more messages; send a new message with contextId %q to continue the conversation",
			snap.ID(), SeedStatus(snap.State()), snap.rec.ContextID)
	}
	return errUnsupportedOperation("task %s is still working and does not take more input; wait for it or cancel it", snap.ID())
}

// validateProtocolMessage checks what fangd's agents can read.
func validateProtocolMessage(msg *a2a.Message) error {
	if msg.Role != a2a.MessageRoleUser {
		return errInvalidMessage("message role must be ROLE_USER, not %q", msg.Role)
	}
	if len(msg.Parts) == 0 {
		return errInvalidMessage("message has no parts")
	}
	size := 0
	for i, p := range msg.Parts {
		if p == nil {
			return errInvalidMessage("part %d is empty", i)
		}
		switch v := p.Content.(type) {
		case a2a.Text:
			size += len(v)
		case a2a.Data:
		case a2a.URL, a2a.Raw:
			return errUnsupportedContent("part %d is a file; fangd's agents read text and JSON data only", i)
		default:
			return errInvalidMessage("part %d has no content", i)
		}
	}
	if size > maxMessageBytes {
		return kernelTooLarge()
	}
	return nil
}

func acceptsText(modes []string) bool {
	for _, m := range modes {
		switch strings.ToLower(strings.TrimSpace(m)) {
		case "text", "text/plain", "text/*", "*/*", "*":
			return true
		}
	}
	return false
}

// target picks the local agent a message is for: the per-agent endpoint's,
// else the request's tenant or metadata "agent_id", else the configured
// default agent, else the only agent there is.
func (s *Service) target(ctx context.Context, agentID string, req *a2a.SendMessageRequest) (Agent, error) {
	ref := agentID
	if ref == "" {
		ref = req.Tenant
	}
	if ref == "" {
		ref = metaString(req.Metadata, "agent_id")
	}
	if ref == "" {
		ref = metaString(req.Message.Metadata, "agent_id")
	}
	if ref == "" {
		ref = s.opts.DefaultAgent
	}
	if ref == "" {
		all, err := s.agents.List(ctx)
		if err != nil {
			return Agent{}, err
		}
		switch len(all) {
		case 0:
			return Agent{}, errInvalidMessage("this fangd has no agents to take the message")
		case 1:
			return checkAvailable(all[0])
		}
		return Agent{}, errInvalidMessage("this fangd serves %d agents: address one at /a2a/agents/<id>, or name it in params.metadata.agent_id", len(all))
	}
	a, err := s.agents.Resolve(ctx, ref)
	if err != nil {
		if de := kernel.AsError(err); de != nil && de.Kind == kernel.KindNotFound {
			return Agent{}, errInvalidMessage("no local agent %q", ref)
		}
		return Agent{}, err
	}
	return checkAvailable(a)
}

func checkAvailable(a Agent) (Agent, error) {
	if !a.Available {
		return Agent{}, kernel.Errorf(kernel.KindInvalid, "agent_unavailable", "agent %s is not taking work (suspended or terminated)", a.Name)
	}
	return a, nil
}

func metaString(m map[string]any, key string) string {
	if v, ok := m[key].(string); ok {
		return v
	}
	return ""
}

func pushFromProtocol(c *a2a.PushConfig) PushTarget {
	p := PushTarget{ID: c.ID, URL: c.URL, Token: c.Token}
	if c.Auth != nil {
		p.AuthScheme, p.Credentials = c.Auth.Scheme, c.Auth.Credentials
	}
	return p
}

func pushToProtocol(taskID string, p *PushTarget) *a2a.PushConfig {
	c := &a2a.PushConfig{TaskID: a2a.TaskID(taskID), ID: p.ID, URL: p.URL}
	if p.AuthScheme != "" {
		// The credentials themselves are never sent back.
		c.Auth = &a2a.PushAuthInfo{Scheme: p.AuthScheme}
	}
	return c
}

// GetTaskPushConfig implements a2asrv.RequestHandler.
func (h *protocolHandler) GetTaskPushConfig(ctx context.Context, req *a2a.GetTaskPushConfigRequest) (*a2a.PushConfig, error) {
	if h.svc.pusher == nil {
		return nil, toProtocol(errPushUnsupported)
	}
	p, err := kernel.Ask[*PushTarget](ctx, h.svc.k, h.svc.sup, &getPush{id: string(req.TaskID), configID: req.ID, scope: h.scope(ctx)})
	if err != nil {
		return nil, toProtocol(err)
	}
	return pushToProtocol(string(req.TaskID), p), nil
}

// ListTaskPushConfigs implements a2asrv.RequestHandler.
func (h *protocolHandler) ListTaskPushConfigs(ctx context.Context, req *a2a.ListTaskPushConfigRequest) (*a2a.ListTaskPushConfigResponse, error) {
	if h.svc.pusher == nil {
		return nil, toProtocol(errPushUnsupported)
	}
	ps, err := kernel.Ask[[]PushTarget](ctx, h.svc.k, h.svc.sup, &listPush{id: string(req.TaskID), scope: h.scope(ctx)})
	if err != nil {
		return nil, toProtocol(err)
	}
	resp := &a2a.ListTaskPushConfigResponse{Configs: make([]*a2a.PushConfig, 0, len(ps))}
	for i := range ps {
		resp.Configs = append(resp.Configs, pushToProtocol(string(req.TaskID), &ps[i]))
	}
	return resp, nil
}

// CreateTaskPushConfig implements a2asrv.RequestHandler.
func (h *protocolHandler) CreateTaskPushConfig(ctx context.Context, req *a2a.PushConfig) (*a2a.PushConfig, error) {
	if h.svc.pusher == nil {
		return nil, toProtocol(errPushUnsupported)
	}
	if req == nil || req.TaskID == "" {
		return nil, a2a.NewError(a2a.ErrInvalidParams, "taskId is required")
	}
	p := pushFromProtocol(req)
	if err := h.svc.validatePushTarget(ctx, &p); err != nil {
		return nil, toProtocol(err)
	}
	saved, err := kernel.Ask[*PushTarget](ctx, h.svc.k, h.svc.sup, &setPush{id: string(req.TaskID), scope: h.scope(ctx), target: p})
	if err != nil {
		return nil, toProtocol(err)
	}
	return pushToProtocol(string(req.TaskID), saved), nil
}

// DeleteTaskPushConfig implements a2asrv.RequestHandler.
func (h *protocolHandler) DeleteTaskPushConfig(ctx context.Context, req *a2a.DeleteTaskPushConfigRequest) error {
	if h.svc.pusher == nil {
		return toProtocol(errPushUnsupported)
	}
	_, err := kernel.Ask[*ack](ctx, h.svc.k, h.svc.sup, &deletePush{id: string(req.TaskID), configID: req.ID, scope: h.scope(ctx)})
	return toProtocol(err)
}

// GetExtendedAgentCard implements a2asrv.RequestHandler: fangd has no
// extended card (the public card says everything).
func (h *protocolHandler) GetExtendedAgentCard(context.Context, *a2a.GetExtendedAgentCardRequest) (*a2a.AgentCard, error) {
	return nil, a2a.NewError(a2a.ErrExtendedCardNotConfigured, "fangd publishes no extended agent card")
}

// The seed's REST routes.

// SendSeed serves POST /a2a/tasks/send: it creates a task for the agent
// (id or name) and waits for its final state within SyncWait.
func (s *Service) SendSeed(ctx context.Context, agentRef string, msg *a2a.Message, contextID string) (*TaskSnapshot, error) {
	if strings.TrimSpace(agentRef) == "" {
		return nil, kernel.Errorf(kernel.KindInvalid, "missing_agent_id", "agent_id is required")
	}
	agent, err := s.agents.Resolve(ctx, agentRef)
	if err != nil {
		return nil, err
	}
	if agent, err = checkAvailable(agent); err != nil {
		return nil, err
	}
	msg.ContextID = contextID
	rec := newInboundRecord(agent, CallerFrom(ctx), msg)
	if err := s.clusterRegister(ctx, rec); err != nil {
		return nil, err
	}
	sub := newSubscriber()
	if _, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &createTask{rec: rec, sub: sub, blocking: true}); err != nil {
		s.clusterForget(rec)
		return nil, err
	}
	s.received(rec)
	// The task's own answer below waits for its final write (deferred
	// while it is in flight), so await's fence needs no wait here.
	if _, _, err := s.await(ctx, sub, false); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: rec.ID, scope: CallerFrom(ctx).scope(Inbound, "")})
}

// InboundTask serves GET /a2a/tasks/{id}.
func (s *Service) InboundTask(ctx context.Context, id string) (*TaskSnapshot, error) {
	return kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: id, scope: CallerFrom(ctx).scope(Inbound, "")})
}

// CancelInbound serves POST /a2a/tasks/{id}/cancel.
func (s *Service) CancelInbound(ctx context.Context, id string) (*TaskSnapshot, error) {
	return kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &cancelTask{id: id, scope: CallerFrom(ctx).scope(Inbound, "")})
}
