package comms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// MaxMessageChars is the longest message the router accepts (LibreFang's
// limit; longer is 413).
const MaxMessageChars = 100_000

// RouterOptions wire the router to the rest of the daemon.
type RouterOptions struct {
	Bus      *Bus
	Audit    *audit.Log // may be nil in tests
	Agents   Agents     // nil: agent targets answer 503
	Channels Channels   // nil: channel targets answer 404
	// LoopMaxBounces is how many messages may pass between the same two
	// agents within LoopWindow; the next is blocked. 0 turns the guard off.
	LoopMaxBounces int
	LoopWindow     time.Duration
	// TurnTimeout bounds one agent turn (default 120 s).
	TurnTimeout time.Duration
}

// Router is the handle for routing messages, tasks and wakes.
type Router struct {
	k     *kernel.Kernel
	pid   *actor.PID
	opts  RouterOptions
	tasks *store.Collection[Task]
	nodes []NodeSource
	peers Peers // nil: "peer:" targets answer 503 (peers.go)
}

// StartRouter spawns the router as the root actor "comms-router".
func StartRouter(k *kernel.Kernel, db *store.DB, opts RouterOptions) (*Router, error) {
	if opts.Bus == nil {
		return nil, errors.New("comms router needs the bus")
	}
	if opts.TurnTimeout <= 0 {
		opts.TurnTimeout = 120 * time.Second
	}
	if opts.LoopWindow <= 0 {
		opts.LoopWindow = time.Minute
	}
	r := &Router{k: k, opts: opts, tasks: store.NewCollection[Task](db, "comms/tasks")}
	wakes := store.NewCollection[[]string](db, "comms/wakes")
	pid, err := k.SpawnRoot("comms-router", func() actor.Actor {
		return &router{opts: opts, db: db, tasks: r.tasks, wakes: wakes, logger: k.Log.With().Str("component", "comms-router").Logger()}
	})
	if err != nil {
		return nil, err
	}
	r.pid = pid
	k.Security.Register("loop_guard", func() kernel.State {
		if _, alive := k.System.ProcessRegistry.Get(pid); alive && opts.LoopMaxBounces > 0 {
			return kernel.StateActive
		}
		return kernel.StateInactive
	})
	return r, nil
}

// AddNodeSource registers a contributor of topology nodes. Call it while
// wiring the daemon, before serving.
func (r *Router) AddNodeSource(s NodeSource) { r.nodes = append(r.nodes, s) }

// Send routes a message and waits for the outcome.
func (r *Router) Send(ctx context.Context, from, to, content string) (*SendResult, error) {
	if strings.HasPrefix(to, "peer:") {
		return r.sendPeer(ctx, from, to, content)
	}
	reply := make(chan SendOutcome, 1)
	r.k.Root.Send(r.pid, &SendMessage{From: from, To: to, Content: content, Reply: reply})
	select {
	case o := <-reply:
		return o.Result, o.Err
	case <-ctx.Done():
		return nil, kernel.Unavailable("the message was accepted but its delivery did not finish in time")
	}
}

// Dispatch assigns and starts a task; it returns once the task is durable.
func (r *Router) Dispatch(ctx context.Context, t DispatchTask) (*Task, error) {
	reply := make(chan TaskOutcome, 1)
	t.Reply = reply
	r.k.Root.Send(r.pid, &t)
	select {
	case o := <-reply:
		return o.Task, o.Err
	case <-ctx.Done():
		return nil, kernel.Unavailable("task dispatch did not finish in time")
	}
}

// Task returns one task.
func (r *Router) Task(ctx context.Context, id string) (*Task, error) {
	reply := make(chan TaskOutcome, 1)
	r.k.Root.Send(r.pid, &GetTask{ID: id, Reply: reply})
	select {
	case o := <-reply:
		return o.Task, o.Err
	case <-ctx.Done():
		return nil, kernel.Unavailable("comms router did not answer in time")
	}
}

// Wake handles an inbound wake hook.
func (r *Router) Wake(ctx context.Context, w Wake) (*WakeResult, error) {
	reply := make(chan WakeOutcome, 1)
	w.Reply = reply
	r.k.Root.Send(r.pid, &w)
	select {
	case o := <-reply:
		return o.Result, o.Err
	case <-ctx.Done():
		return nil, kernel.Unavailable("wake did not finish in time")
	}
}

// Agents returns the agent runtime (nil when none is wired).
func (r *Router) Agents() Agents { return r.opts.Agents }

// HasChannel reports whether a channel target could be delivered to.
func (r *Router) HasChannel(name string) bool {
	return r.opts.Channels != nil && r.opts.Channels.Has(name)
}

// target is a parsed "agent:<ref>" or "channel:<name>:<chat_id>".
type target struct {
	kind    string // "agent" or "channel"
	ref     string // agent id or name; channel name
	chatID  string
	display string
}

// ParseTarget parses a message address.
func ParseTarget(to string) (target, error) {
	kind, rest, ok := strings.Cut(to, ":")
	if !ok || rest == "" {
		return target{}, kernel.Invalid(`"to" must be "agent:<id or name>", "channel:<name>:<chat_id>" or "peer:<node>/agent:<id or name>"`)
	}
	switch kind {
	case "agent":
		return target{kind: "agent", ref: rest, display: to}, nil
	case "channel":
		name, chat, ok := strings.Cut(rest, ":")
		if !ok || name == "" || chat == "" {
			return target{}, kernel.Invalid(`a channel target is "channel:<name>:<chat_id>"`)
		}
		return target{kind: "channel", ref: name, chatID: chat, display: to}, nil
	}
	return target{}, kernel.Invalid(`"to" must start with "agent:" or "channel:", got %q`, kind+":")
}

// CheckContent validates a message body.
func CheckContent(field, content string) error {
	if strings.TrimSpace(content) == "" {
		return kernel.Invalid("%q must not be empty", field)
	}
	if !utf8.ValidString(content) {
		return kernel.Invalid("%q must be valid UTF-8", field)
	}
	if utf8.RuneCountInString(content) > MaxMessageChars {
		return kernel.Errorf(kernel.KindTooLarge, "message_too_large", "%q is longer than %d characters", field, MaxMessageChars)
	}
	return nil
}

// router is the actor behind Router. Lookups and turns run in goroutines
// that report back; the actor itself only keeps the loop guard's windows
// and answers.
type router struct {
	opts   RouterOptions
	db     *store.DB
	tasks  *store.Collection[Task]
	wakes  *store.Collection[[]string]
	logger zerolog.Logger
	// bounces holds, per unordered pair of agent ids, when messages passed
	// between them within the loop window.
	bounces map[[2]string][]time.Time
}

// taskDone is sent by a task's goroutine when its turn ends.
type taskDone struct{ task *Task }

func (r *router) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		r.bounces = map[[2]string][]time.Time{}
		r.failInterrupted()
	case *SendMessage:
		r.send(c, m)
	case *resolved:
		r.route(c, m)
	case *DispatchTask:
		r.dispatch(c, m)
	case *GetTask:
		t, err := r.tasks.Get(m.ID)
		if errors.Is(err, store.ErrNotFound) {
			m.Reply <- TaskOutcome{Err: kernel.NotFound("task %s not found", m.ID)}
			return
		}
		m.Reply <- TaskOutcome{Task: &t, Err: err}
	case *Wake:
		r.wake(c, m)
	case *wakeResolved:
		r.wakeAgent(c, m)
	case *claimHookID:
		r.claim(m)
	case *taskDone:
		r.logger.Error().Str("task", m.task.ID).Msg("task finished but its result could not be stored")
	}
}

// failInterrupted marks tasks whose turn was running when the daemon (or
// this actor) stopped: the turn's outcome is unknown and re-running an LLM
// turn could repeat its side effects, so they fail and can be re-submitted.
func (r *router) failInterrupted() {
	var stale []Task
	_ = r.tasks.Each(func(_ string, t Task) bool {
		if t.Status == TaskRunning {
			stale = append(stale, t)
		}
		return true
	})
	for _, t := range stale {
		t.Status, t.Error, t.UpdatedAt = TaskFailed, "interrupted: the daemon stopped while the task was running; re-submit it", now()
		if err := r.tasks.Put(t.ID, t); err != nil {
			r.logger.Error().Err(err).Str("task", t.ID).Msg("could not mark interrupted task")
			continue
		}
		r.opts.Bus.Publish("task.failed", "comms", "agent:"+t.AssignedTo, map[string]any{"task_id": t.ID, "error": t.Error})
	}
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (r *router) send(c actor.Context, m *SendMessage) {
	tgt, err := ParseTarget(m.To)
	if err == nil {
		err = CheckContent("content", m.Content)
	}
	if err == nil && len(m.From) > 256 {
		err = kernel.Invalid(`"from" is longer than 256 characters`)
	}
	if err != nil {
		m.Reply <- SendOutcome{Err: err}
		return
	}
	if m.From == "" {
		m.From = "system"
	}
	if tgt.kind == "channel" {
		if r.opts.Channels == nil || !r.opts.Channels.Has(tgt.ref) {
			m.Reply <- SendOutcome{Err: kernel.NotFound("channel %q is not configured", tgt.ref)}
			return
		}
		c.Send(c.Self(), &resolved{req: m, target: tgt})
		return
	}
	if r.opts.Agents == nil {
		m.Reply <- SendOutcome{Err: kernel.Unavailable("no agent runtime is wired into this daemon")}
		return
	}
	self, system, agents := c.Self(), c.ActorSystem(), r.opts.Agents
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), kernel.DefaultAskTimeout)
		defer cancel()
		out := &resolved{req: m, target: tgt}
		out.agent, out.err = agents.Resolve(ctx, tgt.ref)
		if out.err == nil {
			if fromRef, ok := strings.CutPrefix(m.From, "agent:"); ok {
				from, err := agents.Resolve(ctx, fromRef)
				if err != nil {
					out.err = kernel.NotFound("sender %q is not a known agent", m.From)
				} else {
					m.From = "agent:" + from.ID
				}
			}
		}
		system.Root.Send(self, out)
	}()
}

// route runs after the target (and an agent sender) are resolved: loop
// guard, then delivery in a goroutine.
func (r *router) route(c actor.Context, m *resolved) {
	req := m.req
	if m.err != nil {
		req.Reply <- SendOutcome{Err: m.err}
		return
	}
	msgID := "msg-" + uuid.NewString()
	bus := r.opts.Bus
	if m.target.kind == "channel" {
		channels := r.opts.Channels
		bus.PublishRoute(req.From, m.target.display, "channel_message", map[string]any{"message_id": msgID, "chars": utf8.RuneCountInString(req.Content)})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.opts.TurnTimeout)
			defer cancel()
			if err := channels.Send(ctx, m.target.ref, m.target.chatID, req.Content); err != nil {
				// A channel another cluster node hosts has not failed:
				// the HTTP layer forwards the send to its host, which
				// reports the outcome on its own bus.
				if de := kernel.AsError(err); de == nil || de.Code != "hosted_elsewhere" {
					bus.Publish("message.failed", req.From, m.target.display, map[string]any{"message_id": msgID, "error": err.Error()})
				}
				req.Reply <- SendOutcome{Err: err}
				return
			}
			bus.Publish("message.delivered", req.From, m.target.display, map[string]any{"message_id": msgID, "status": "queued"})
			req.Reply <- SendOutcome{Result: &SendResult{MessageID: msgID, Status: "queued", To: m.target.display}}
		}()
		return
	}
	to := "agent:" + m.agent.ID
	if err := r.guard(req.From, to); err != nil {
		req.Reply <- SendOutcome{Err: err}
		return
	}
	kind := "agent_message"
	if strings.HasPrefix(req.From, "hook:") {
		kind = "hook"
	}
	bus.PublishRoute(req.From, to, kind, map[string]any{"message_id": msgID, "chars": utf8.RuneCountInString(req.Content)})
	content := r.takeWakes(m.agent.ID, req.Content)
	agents, timeout := r.opts.Agents, r.opts.TurnTimeout
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		res, err := agents.Turn(ctx, m.agent.ID, req.From, content)
		if err != nil {
			bus.Publish("message.failed", req.From, to, map[string]any{"message_id": msgID, "error": err.Error()})
			req.Reply <- SendOutcome{Err: err}
			return
		}
		bus.Publish("message.delivered", req.From, to, map[string]any{"message_id": msgID, "status": "delivered",
			"input_tokens": res.InputTokens, "output_tokens": res.OutputTokens})
		resp := res.Response
		req.Reply <- SendOutcome{Result: &SendResult{MessageID: msgID, Status: "delivered", To: to, AgentID: m.agent.ID,
			Response: &resp, InputTokens: res.InputTokens, OutputTokens: res.OutputTokens, CostUSD: res.CostUSD}}
	}()
}

// guard is the loop guard: messages between the same two agents (either
// direction) are counted in a sliding window; the one past the limit is
// refused, audited and published as loop.blocked.
func (r *router) guard(from, to string) error {
	if r.opts.LoopMaxBounces <= 0 || !strings.HasPrefix(from, "agent:") || from == to {
		return nil
	}
	pair := [2]string{from, to}
	if pair[1] < pair[0] {
		pair[0], pair[1] = pair[1], pair[0]
	}
	t := time.Now()
	cutoff := t.Add(-r.opts.LoopWindow)
	hits := r.bounces[pair]
	i := 0
	for i < len(hits) && hits[i].Before(cutoff) {
		i++
	}
	hits = hits[i:]
	if len(hits) >= r.opts.LoopMaxBounces {
		r.bounces[pair] = hits
		detail := fmt.Sprintf("loop guard blocked %s -> %s: %d messages between them within %s", from, to, len(hits), r.opts.LoopWindow)
		r.opts.Bus.Publish("loop.blocked", from, to, map[string]any{"agents": pair, "messages": len(hits),
			"limit": r.opts.LoopMaxBounces, "window_seconds": r.opts.LoopWindow.Seconds()})
		if a := r.opts.Audit; a != nil {
			agentID := strings.TrimPrefix(from, "agent:")
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
				defer cancel()
				if _, err := a.Append(ctx, audit.Event{EventType: "loop_blocked", AgentID: agentID, Details: detail, Outcome: "denied", Actor: "comms"}); err != nil {
					r.logger.Error().Err(err).Msg("loop block could not be audited")
				}
			}()
		}
		r.logger.Warn().Str("from", from).Str("to", to).Int("messages", len(hits)).Msg("loop guard blocked a message")
		return kernel.Errorf(kernel.KindRateLimited, "loop_blocked",
			"loop guard: %d messages between %s and %s within %s; this one is blocked", len(hits), from, to, r.opts.LoopWindow)
	}
	r.bounces[pair] = append(hits, t)
	if len(r.bounces) > 10000 {
		r.sweep(cutoff)
	}
	return nil
}

// sweep forgets pairs with no message inside the window.
func (r *router) sweep(cutoff time.Time) {
	for k, v := range r.bounces {
		if len(v) == 0 || v[len(v)-1].Before(cutoff) {
			delete(r.bounces, k)
		}
	}
}
