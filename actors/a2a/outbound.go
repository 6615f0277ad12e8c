package a2a

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2aclient"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/neterr"
)

// OutboundRequest is a task for an external agent (POST /api/a2a/send, the
// a2a_send tool).
type OutboundRequest struct {
	// AgentRef is the external agent's id or name.
	AgentRef string
	Message  *a2a.Message
	// ContextID continues a conversation with the peer (its contextId).
	ContextID string
	// RemoteAgent picks one of the agents the peer serves (a skill of its
	// card, by id or name: a fangd peer lists one per agent) and names it
	// in the message's metadata.agent_id, which a fangd peer's shared
	// endpoint routes by. Empty: the peer picks.
	RemoteAgent string
	// IdempotencyKey and BodyHash make a retried request replay the first
	// answer instead of sending twice.
	IdempotencyKey string
	BodyHash       string
}

// SendReceipt is the immediate answer to an outbound send.
type SendReceipt struct {
	TaskID  string `json:"task_id"`
	Status  string `json:"status"`
	AgentID string `json:"agent_id"`
	// RemoteAgentID is the peer's agent the message was addressed to.
	RemoteAgentID string `json:"remote_agent_id,omitempty"`
}

// SendOutbound creates an outbound task and returns at once; the task's
// actor delivers the message and follows the peer's task to its end.
// replayed is true when the Idempotency-Key was seen with the same body.
func (s *Service) SendOutbound(ctx context.Context, req OutboundRequest) (SendReceipt, bool, error) {
	agent, remote, err := s.outboundTarget(ctx, req.AgentRef, req.RemoteAgent)
	if err != nil {
		return SendReceipt{}, false, err
	}
	if req.Message == nil {
		return SendReceipt{}, false, errInvalidMessage("message is required")
	}
	if err := validateProtocolMessage(req.Message); err != nil {
		return SendReceipt{}, false, err
	}
	now := time.Now().UTC()
	id := newID()
	msg := *req.Message
	msg.ContextID = req.ContextID
	if remote != "" {
		md := make(map[string]any, len(msg.Metadata)+1)
		for k, v := range msg.Metadata {
			md[k] = v
		}
		md["agent_id"] = remote
		msg.Metadata = md
	}
	rec := &taskRecord{
		ID: id, Direction: Outbound, AgentID: agent.ID, AgentName: agent.Name, ContextID: req.ContextID,
		State: a2a.TaskStateSubmitted, History: []*a2a.Message{&msg}, Caller: CallerFrom(ctx).Name,
		CreatedAt: now, UpdatedAt: now, Streaming: agent.Capabilities.Streaming,
	}
	var idem *idemEntry
	if req.IdempotencyKey != "" {
		sum := sha256.Sum256([]byte(req.IdempotencyKey))
		idem = &idemEntry{key: hex.EncodeToString(sum[:]),
			rec: idemRecord{BodyHash: req.BodyHash, TaskID: id, AgentID: agent.ID, State: rec.State, CreatedAt: now}}
	}
	if err := s.clusterRegister(ctx, rec); err != nil {
		return SendReceipt{}, false, err
	}
	res, err := kernel.Ask[any](ctx, s.k, s.sup, &createTask{rec: rec, idem: idem})
	if _, made := res.(*TaskSnapshot); !made {
		s.clusterForget(rec)
	}
	if err != nil {
		return SendReceipt{}, false, err
	}
	switch v := res.(type) {
	case error: // Ask[any] hands error answers back as values
		return SendReceipt{}, false, v
	case *idemReplay:
		return SendReceipt{TaskID: v.TaskID, Status: SeedStatus(v.State), AgentID: v.AgentID, RemoteAgentID: remote}, true, nil
	case *TaskSnapshot:
		s.sent(rec)
		return SendReceipt{TaskID: v.ID(), Status: SeedStatus(v.State()), AgentID: agent.ID, RemoteAgentID: remote}, false, nil
	}
	return SendReceipt{}, false, fmt.Errorf("a2a: unexpected answer %T", res)
}

// OutboundTask returns an outbound task's state as the peer reported it.
func (s *Service) OutboundTask(ctx context.Context, id string) (*TaskSnapshot, error) {
	return kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &getTask{id: id, scope: CallerFrom(ctx).scope(Outbound, "")})
}

// WaitOutbound waits until an outbound task finishes or ctx ends, and
// returns its state then.
func (s *Service) WaitOutbound(ctx context.Context, id string) (*TaskSnapshot, error) {
	sub := newSubscriber()
	snap, err := kernel.Ask[*TaskSnapshot](ctx, s.k, s.sup, &subscribeTask{id: id, scope: CallerFrom(ctx).scope(Outbound, ""), sub: sub})
	if err != nil {
		return nil, err
	}
	if !snap.Terminal() {
		for done := false; !done; {
			select {
			case _, ok := <-sub.C():
				done = !ok
			case <-ctx.Done():
				s.k.Root.Send(s.sup, &unsubscribe{id: id, sub: sub})
				done = true
			}
		}
	}
	return s.OutboundTask(context.WithoutCancel(ctx), id)
}

// outboundTask sends one message to a peer and follows the peer's task.
type outboundTask struct {
	taskBase
	agent *ExternalAgent
}

func (t *outboundTask) Receive(c actor.Context) {
	if t.handleCommon(c) {
		return
	}
	switch m := c.Message().(type) {
	case *actor.Started:
		t.start(c)
	case *actor.Stopping, *actor.Restarting:
		t.stopWork()
	case *remoteEvent:
		if m.gen == t.gen && !t.done {
			t.apply(c, m.event)
		}
	case *remoteAttempt:
		if m.gen == t.gen && !t.done {
			t.rec.Attempts++
			t.rec.LastError = m.err.Error()
			if err := t.persist(); err != nil {
				t.svc.log.Warn().Err(err).Str("task", t.rec.ID).Msg("a2a: could not store an attempt")
			}
		}
	case *remoteDone:
		if m.gen != t.gen || t.done {
			return
		}
		t.cancel = nil
		switch {
		case m.err != nil:
			t.settle(c, a2a.TaskStateFailed, m.err.Error())
		case !t.rec.State.Terminal():
			t.settle(c, a2a.TaskStateFailed, "the peer stopped answering before the task finished")
		}
	case *cancelTask:
		// Outbound tasks are not cancelled through the protocol routes.
		c.Respond(errTaskNotFound(m.id))
	}
}

func (t *outboundTask) start(c actor.Context) {
	if !t.fresh {
		t.reload()
	}
	if t.rec.State.Terminal() {
		t.finish(c)
		return
	}
	if t.agent == nil {
		t.settle(c, a2a.TaskStateFailed, "the external agent "+t.rec.AgentID+" was removed")
		return
	}
	deadline := t.rec.CreatedAt.Add(t.svc.opts.OutboundTimeout)
	if !time.Now().Before(deadline) {
		t.settle(c, a2a.TaskStateFailed, fmt.Sprintf("no final answer from the peer within %s", t.svc.opts.OutboundTimeout))
		return
	}
	t.opening = t.snapshotEvent()
	t.announce() // outbound records are stored before the actor starts
	t.gen++
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.cancel = cancel
	run := &outboundRun{svc: t.svc, self: c.Self(), root: c.ActorSystem().Root, gen: t.gen,
		rec: t.rec.clone(), agent: *t.agent}
	go run.run(ctx)
}

// apply folds a peer's update into the record. State changes are stored;
// streamed artifact chunks only in memory until the next state change
// (a restart re-reads the whole task from the peer).
func (t *outboundTask) apply(c actor.Context, ev a2a.Event) {
	prevState := t.rec.State
	switch e := ev.(type) {
	case *a2a.Task:
		t.rec.RemoteTaskID, t.rec.RemoteContextID = string(e.ID), e.ContextID
		t.rec.State = e.Status.State
		for _, m := range e.History {
			t.addMessage(m)
		}
		t.addMessage(e.Status.Message)
		if len(e.Artifacts) > 0 {
			t.rec.Artifacts = slices.Clone(e.Artifacts)
		}
	case *a2a.TaskStatusUpdateEvent:
		if t.rec.RemoteTaskID == "" {
			t.rec.RemoteTaskID, t.rec.RemoteContextID = string(e.TaskID), e.ContextID
		}
		t.rec.State = e.Status.State
		t.addMessage(e.Status.Message)
	case *a2a.TaskArtifactUpdateEvent:
		t.applyArtifact(e)
	case *a2a.Message:
		// A direct answer without a task: the exchange is complete.
		t.addMessage(e)
		if e.ContextID != "" {
			t.rec.RemoteContextID = e.ContextID
		}
		t.rec.State = a2a.TaskStateCompleted
	}
	if t.rec.State == "" {
		t.rec.State = prevState
	}
	if t.rec.State.Terminal() {
		reason := ""
		if t.rec.State != a2a.TaskStateCompleted {
			reason = "the peer reported " + SeedStatus(t.rec.State)
			if m := t.rec.result(); m != nil {
				if txt := messageText(m); txt != "" {
					reason += ": " + txt
				}
			}
		}
		t.stopWork()
		t.gen++
		t.settle(c, t.rec.State, reason, ev)
		return
	}
	if t.rec.State != prevState {
		if err := t.persist(); err != nil {
			t.svc.log.Warn().Err(err).Str("task", t.rec.ID).Msg("a2a: could not store an outbound update")
		}
	}
	t.emit(ev)
}

func (t *outboundTask) addMessage(m *a2a.Message) {
	if m == nil || m.Role != a2a.MessageRoleAgent {
		return
	}
	for _, h := range t.rec.History {
		if h.ID != "" && h.ID == m.ID {
			return
		}
	}
	t.rec.History = append(t.rec.History, m)
}

func (t *outboundTask) applyArtifact(e *a2a.TaskArtifactUpdateEvent) {
	if e.Artifact == nil {
		return
	}
	for i, a := range t.rec.Artifacts {
		if a.ID != e.Artifact.ID {
			continue
		}
		if e.Append {
			merged := *a
			merged.Parts = append(slices.Clone(a.Parts), e.Artifact.Parts...)
			t.rec.Artifacts[i] = &merged
		} else {
			t.rec.Artifacts[i] = e.Artifact
		}
		return
	}
	t.rec.Artifacts = append(t.rec.Artifacts, e.Artifact)
}

func messageText(m *a2a.Message) string {
	var parts []string
	for _, p := range m.Parts {
		if s := p.Text(); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "\n")
}

// outboundRun is the goroutine side of an outbound task: it owns the SDK
// client and reports everything it learns to the actor.
type outboundRun struct {
	svc   *Service
	self  *actor.PID
	root  *actor.RootContext
	gen   int
	rec   taskRecord
	agent ExternalAgent

	remoteID string
	terminal bool
}

func (r *outboundRun) send(msg any) { r.root.Send(r.self, msg) }

func (r *outboundRun) run(ctx context.Context) {
	client, err := r.svc.newClient(ctx, r.agent)
	if err != nil {
		r.send(&remoteDone{gen: r.gen, err: fmt.Errorf("no way to talk to %s: %w", r.agent.Name, err)})
		return
	}
	defer client.Destroy()
	ctx = r.svc.withAgentToken(ctx, r.agent)
	r.remoteID = r.rec.RemoteTaskID
	attempts := r.rec.Attempts
	if r.remoteID == "" {
		for {
			err := r.deliver(ctx, client)
			if err == nil || r.remoteID != "" {
				break
			}
			attempts++
			shown := remoteError(err)
			r.send(&remoteAttempt{gen: r.gen, err: shown})
			if !r.svc.transient(err) || attempts >= r.svc.opts.MaxAttempts || ctx.Err() != nil {
				r.send(&remoteDone{gen: r.gen, err: fmt.Errorf("%s after %d attempt(s)", shown.Error(), attempts)})
				return
			}
			if !kernel.Sleep(ctx, r.svc.opts.RetryBackoff.Jittered(attempts)) {
				r.send(&remoteDone{gen: r.gen, err: errors.New("gave up: " + ctx.Err().Error())})
				return
			}
		}
	}
	if !r.terminal {
		if err := r.follow(ctx, client, attempts); err != nil {
			r.send(&remoteDone{gen: r.gen, err: err})
			return
		}
	}
	r.send(&remoteDone{gen: r.gen})
}

// remoteError is what a task's last_error and status say about a failed
// attempt: for a network failure its code and cause (the SDK's text
// carries the peer's full URL), otherwise the error as it is.
func remoteError(err error) error {
	if !neterr.Network(err) {
		return err
	}
	code, cause := neterr.Cause(err)
	return fmt.Errorf("%s: %s", code, cause)
}

// deliver sends the message once: streaming when the peer streams.
func (r *outboundRun) deliver(ctx context.Context, client *a2aclient.Client) error {
	req := &a2a.SendMessageRequest{Message: r.rec.History[0]}
	if r.agent.Capabilities.Streaming && r.svc.opts.Streaming {
		for ev, err := range client.SendStreamingMessage(ctx, req) {
			if err != nil {
				return err
			}
			r.observe(ev)
		}
		if !r.terminal && r.remoteID == "" {
			return errors.New("the peer's stream ended before it created a task")
		}
		return nil
	}
	res, err := client.SendMessage(ctx, req)
	if err != nil {
		return err
	}
	r.observe(res)
	return nil
}

func (r *outboundRun) observe(ev a2a.Event) {
	switch e := ev.(type) {
	case *a2a.Task:
		r.remoteID = string(e.ID)
		r.terminal = e.Status.State.Terminal()
	case *a2a.TaskStatusUpdateEvent:
		r.remoteID = string(e.TaskID)
		r.terminal = e.Status.State.Terminal()
	case *a2a.Message:
		r.terminal = true
	}
	r.send(&remoteEvent{gen: r.gen, event: ev})
}

// follow waits for the peer's task to finish: resubscribing when the peer
// streams, polling GetTask with a growing interval otherwise (or when the
// subscription breaks). Transient poll failures are tolerated up to
// MaxAttempts in a row.
func (r *outboundRun) follow(ctx context.Context, client *a2aclient.Client, attempts int) error {
	delay := r.svc.opts.PollInterval
	failures := 0
	for !r.terminal {
		if r.agent.Capabilities.Streaming && r.svc.opts.Streaming {
			for ev, err := range client.SubscribeToTask(ctx, &a2a.SubscribeToTaskRequest{ID: a2a.TaskID(r.remoteID)}) {
				if err != nil {
					break
				}
				r.observe(ev)
			}
			if r.terminal {
				return nil
			}
		}
		task, err := client.GetTask(ctx, &a2a.GetTaskRequest{ID: a2a.TaskID(r.remoteID)})
		if err == nil {
			failures = 0
			r.observe(task)
			if r.terminal {
				return nil
			}
		} else {
			failures++
			r.send(&remoteAttempt{gen: r.gen, err: err})
			if !r.svc.transient(err) || failures >= r.svc.opts.MaxAttempts {
				return fmt.Errorf("lost track of the peer's task %s: %s", r.remoteID, err.Error())
			}
		}
		if !kernel.Sleep(ctx, delay) {
			return fmt.Errorf("no final answer from the peer within %s", r.svc.opts.OutboundTimeout)
		}
		delay = min(delay*2, r.svc.opts.PollMax)
	}
	return nil
}

// newClient builds an SDK client for the agent's card: JSON-RPC and
// HTTP+JSON, 1.0 and 0.3, every request through the SSRF guard's client.
// The task's context bounds each call, so the client has no timeout of its
// own (a stream may last as long as the task).
func (s *Service) newClient(ctx context.Context, agent ExternalAgent) (*a2aclient.Client, error) {
	if agent.Card == nil {
		return nil, errors.New("no agent card stored; discover the agent again")
	}
	hc := *s.guard.Client(s.opts.OutboundTimeout)
	hc.Timeout = 0
	f := a2aclient.NewFactory(
		a2aclient.WithJSONRPCTransport(&hc),
		a2aclient.WithRESTTransport(&hc),
		a2aclient.WithCompatTransport(a2av0.Version, a2a.TransportProtocolJSONRPC, a2av0.NewJSONRPCTransportFactory(a2av0.JSONRPCTransportConfig{Client: &hc})),
		a2aclient.WithCompatTransport(a2av0.Version, a2a.TransportProtocolHTTPJSON, a2av0.NewRESTTransportFactory(a2av0.RESTTransportConfig{Client: &hc})),
	)
	return f.CreateFromCard(ctx, agent.Card)
}

// withAgentToken attaches the agent's bearer token (from the vault) to
// every call made with ctx.
func (s *Service) withAgentToken(ctx context.Context, agent ExternalAgent) context.Context {
	if !agent.HasToken || s.vault == nil {
		return ctx
	}
	var header string
	err := s.vault.With(agentTokenName(agent.ID), func(secret []byte) error {
		header = "Bearer " + string(secret)
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("agent", agent.ID).Msg("a2a: the agent's token is unreadable; calling without it")
		return ctx
	}
	return a2aclient.AttachServiceParams(ctx, a2aclient.ServiceParams{"authorization": {header}})
}

// permanentA2A are protocol errors that retrying cannot fix.
var permanentA2A = []error{a2a.ErrParseError, a2a.ErrInvalidRequest, a2a.ErrMethodNotFound, a2a.ErrInvalidParams,
	a2a.ErrTaskNotFound, a2a.ErrTaskNotCancelable, a2a.ErrPushNotificationNotSupported, a2a.ErrUnsupportedOperation,
	a2a.ErrUnsupportedContentType, a2a.ErrExtendedCardNotConfigured, a2a.ErrExtensionSupportRequired,
	a2a.ErrVersionNotSupported, a2a.ErrUnauthenticated, a2a.ErrUnauthorized}

// transient reports whether a failed call to a peer is worth retrying:
// network trouble, timeouts, 5xx, 408 and 429 are; protocol errors, other
// 4xx and refused addresses are not.
func (s *Service) transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if s.opts.Permanent != nil && s.opts.Permanent(err) {
		return false
	}
	for _, p := range permanentA2A {
		if errors.Is(err, p) {
			return false
		}
	}
	msg := err.Error()
	if i := strings.Index(msg, "unexpected HTTP status: "); i >= 0 {
		code := msg[i+len("unexpected HTTP status: "):]
		return strings.HasPrefix(code, "5") || strings.HasPrefix(code, "408") || strings.HasPrefix(code, "429")
	}
	return !strings.Contains(msg, "no compatible transports")
}
