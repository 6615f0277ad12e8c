package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/store"
)

// How a turn uses tools. A turn is a loop: call the model; if it asks for
// tools, run each (a gated one only after a human approves it), give it
// the results, call it again; stop when it answers in text. The provider
// calls and the tool runs happen in goroutines; waiting for a decision is
// a RequestFuture to the approvals supervisor awaited with ReenterAfter,
// so the agent's mailbox keeps serving its other sessions meanwhile.
const (
	// MaxToolRounds bounds the model calls that ask for tools in one turn.
	MaxToolRounds = 8
	// maxToolOutput bounds the text of one tool result given to the model.
	maxToolOutput = 32 << 10
	// toolTimeout bounds one tool run.
	toolTimeout = 2 * time.Minute
	// regateDelay is the pause before asking the approvals supervisor
	// again after it could not answer (restarting).
	regateDelay = 500 * time.Millisecond
)

// progress is what a turn has accumulated; it is persisted with a turn
// that waits for a decision, so a resumed turn reports the whole turn.
type progress struct {
	InputTokens       int64            `json:"input_tokens"`
	CachedInputTokens int64            `json:"cached_input_tokens"`
	OutputTokens      int64            `json:"output_tokens"`
	CostNanos         int64            `json:"cost_nanos"`
	LatencyMS         int64            `json:"latency_ms"`
	Rounds            int              `json:"rounds"`
	Iterations        int              `json:"iterations"`
	Calls             []llm.ToolCall   `json:"calls"` // the model's current tool calls
	Next              int              `json:"next"`  // the index of the call in hand
	Gate              string           `json:"gate"`  // the approval the call in hand waits for
	Records           []ToolCallRecord `json:"records"`
}

// savedTurn is a turn waiting for a human decision, persisted so that a
// restart resumes it instead of losing it (the decision still runs the
// tool and the answer still lands in the session).
type savedTurn struct {
	ID        string        `json:"id"`
	SessionID string        `json:"session_id"`
	Text      string        `json:"text"`
	From      string        `json:"from"`
	Who       Who           `json:"who"`
	User      string        `json:"user,omitempty"`
	Messages  []llm.Message `json:"messages"`
	Started   time.Time     `json:"started"`
	Progress  progress      `json:"progress"`
}

func turnCollection(db *store.DB, agentID string) *store.Collection[savedTurn] {
	return store.NewCollection[savedTurn](db, "agent-turns/"+agentID)
}

// offeredTools is what a turn offers the model: the toolbox's tools the
// manifest names (exact names or globs). None when the agent lists none.
func (a *agentActor) offeredTools() []llm.Tool {
	if a.d.opts.Tools == nil || len(a.m.Tools) == 0 {
		return nil
	}
	var out []llm.Tool
	for _, t := range a.d.opts.Tools.Tools() {
		if !a.m.AllowsMCPServer(t.Server) {
			continue
		}
		for _, want := range a.m.Tools {
			if ok, _ := path.Match(want, t.Name); ok {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

// current reports whether t is still its session's turn in hand (a turn
// whose caller was answered because the agent stopped, restarted or was
// deleted is not, and whatever comes back for it is dropped).
func (a *agentActor) current(t *turn) bool {
	st := a.index[t.sessionID]
	return st != nil && st.current == t
}

// bindCaller ties t to its caller's context (Send.Ctx, set by A2A's
// CancelTask and by callers that give up): cancelling it cancels the
// provider call or tool run in flight, withdraws an approval the turn
// waits for, and ends the turn with an error at once.
func (a *agentActor) bindCaller(c actor.Context, t *turn) {
	t.ctx = a.ctx
	if t.w.send == nil || t.w.send.Ctx == nil {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	self, system := c.Self(), c.ActorSystem()
	stop := context.AfterFunc(t.w.send.Ctx, func() {
		cancel()
		system.Root.Send(self, &turnCancelled{t: t})
	})
	t.ctx, t.release = ctx, func() { stop(); cancel() }
}

// cancelled ends a turn whose caller cancelled it.
func (a *agentActor) cancelled(c actor.Context, t *turn) {
	if !a.current(t) {
		return
	}
	if t.p.Gate != "" && a.d.opts.Gate != nil {
		c.Send(a.d.opts.Gate.PID(), &approval.Cancel{ID: t.p.Gate, Reason: "the turn was cancelled"})
		t.p.Gate = ""
	}
	a.finish(c, t, "", kernel.Errorf(kernel.KindUnavailable, "turn_cancelled", "the turn was cancelled by its caller"))
}

// step runs the next provider call of t in a goroutine.
func (a *agentActor) step(c actor.Context, t *turn) {
	req := t.req
	req.Messages = append([]llm.Message(nil), t.req.Messages...)
	self, system, d, ctx, n := c.Self(), c.ActorSystem(), a.d, t.ctx, t.p.Iterations+1
	go func() {
		if err := t.emit(ctx, StreamEvent{Type: StreamStep, Iteration: n}); err != nil {
			system.Root.Send(self, &stepDone{t: t, err: err})
			return
		}
		res, err := d.runStep(ctx, t, req)
		system.Root.Send(self, &stepDone{t: t, step: res, err: err})
	}()
}

// stepped handles a provider answer: finish on text, or run its tool calls.
func (a *agentActor) stepped(c actor.Context, m *stepDone) {
	t := m.t
	if !a.current(t) {
		return
	}
	if m.err != nil {
		a.finish(c, t, "", m.err)
		return
	}
	t.p.add(m.step)
	t.settles = append(t.settles, m.step.settled)
	resp := m.step.resp
	if len(resp.ToolCalls) == 0 || len(t.req.Tools) == 0 {
		a.finish(c, t, resp.Text, nil)
		return
	}
	t.p.Rounds++
	if t.p.Rounds > MaxToolRounds+1 {
		// It was told the limit and still asks: end with what it said.
		a.finish(c, t, resp.Text, nil)
		return
	}
	t.req.Messages = append(t.req.Messages, llm.Message{Role: llm.RoleAssistant, Content: resp.Text, ToolCalls: resp.ToolCalls})
	t.p.Calls, t.p.Next, t.p.Gate = resp.ToolCalls, 0, ""
	a.nextCall(c, t)
}

// nextCall runs the turn's next tool call, or the next provider call once
// every call of the round has its result.
func (a *agentActor) nextCall(c actor.Context, t *turn) {
	for t.p.Next < len(t.p.Calls) {
		call := t.p.Calls[t.p.Next]
		switch {
		case t.p.Rounds > MaxToolRounds:
			a.toolResult(t, call, fmt.Sprintf("Not run: this turn already used %d rounds of tool calls. Answer the user with what you have.", MaxToolRounds), true, "limit", "")
			continue
		case !t.offered(call.Name):
			a.toolResult(t, call, fmt.Sprintf("Not run: there is no tool named %q available to you.", call.Name), true, "unknown_tool", "")
			continue
		case !validArguments(call.Arguments):
			a.toolResult(t, call, "Not run: the arguments are not a JSON object.", true, "invalid_arguments", "")
			continue
		case a.d.opts.Gate != nil && a.d.opts.Gate.Gated(call.Name):
			a.requestApproval(c, t, call)
			return
		}
		a.runTool(c, t, call, "")
		return
	}
	a.step(c, t)
}

func (t *turn) offered(name string) bool {
	for _, tool := range t.req.Tools {
		if tool.Name == name {
			return true
		}
	}
	return false
}

func validArguments(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || (json.Valid(raw) && strings.HasPrefix(s, "{"))
}

// toolResult gives the model the result of the call in hand and moves on.
func (a *agentActor) toolResult(t *turn, call llm.ToolCall, text string, isError bool, outcome, approvalID string) {
	if utf8.RuneCountInString(text) > maxToolOutput {
		text = string([]rune(text)[:maxToolOutput]) + "\n[output truncated]"
	}
	t.req.Messages = append(t.req.Messages, llm.Message{Role: llm.RoleTool, ToolCallID: call.ID, Content: text, IsError: isError})
	t.p.Records = append(t.p.Records, ToolCallRecord{Tool: call.Name, Outcome: outcome, ApprovalID: approvalID})
	t.p.Next++
	t.p.Gate = ""
}

// runTool calls the tool in a goroutine.
func (a *agentActor) runTool(c actor.Context, t *turn, call llm.ToolCall, approvalID string) {
	args := call.Arguments
	if len(strings.TrimSpace(string(args))) == 0 {
		args = json.RawMessage("{}")
	}
	inv := ToolInvocation{AgentID: t.agentID, AgentName: t.agentName, SessionID: t.sessionID, Tool: call.Name,
		Arguments: args, ApprovalID: approvalID, Who: t.who()}
	self, system, box, base := c.Self(), c.ActorSystem(), a.d.opts.Tools, t.ctx
	go func() {
		ctx, cancel := context.WithTimeout(base, toolTimeout)
		defer cancel()
		if err := t.emit(ctx, StreamEvent{Type: StreamToolRun, Tool: call.Name, ToolCallID: call.ID}); err != nil {
			system.Root.Send(self, &toolDone{t: t, err: err})
			return
		}
		out, err := box.Call(ctx, inv)
		system.Root.Send(self, &toolDone{t: t, out: out, err: err})
	}()
}

func (a *agentActor) toolRan(c actor.Context, m *toolDone) {
	t := m.t
	if !a.current(t) {
		return
	}
	call := t.p.Calls[t.p.Next]
	gate := t.p.Gate
	switch {
	case m.err != nil:
		msg := "the tool could not be called"
		if de := kernel.AsError(m.err); de != nil {
			msg = de.Msg
		}
		a.toolResult(t, call, "Error: "+msg, true, "error", gate)
	case m.out.IsError:
		a.toolResult(t, call, m.out.Text, true, "tool_error", gate)
	default:
		a.toolResult(t, call, m.out.Text, false, "ok", gate)
	}
	a.nextCall(c, t)
}

// requestApproval persists the turn under a fresh approval id, then asks
// for the decision.
func (a *agentActor) requestApproval(c actor.Context, t *turn, call llm.ToolCall) {
	if len(call.Arguments) > approval.MaxPayloadBytes {
		a.toolResult(t, call, "Not run: this tool needs human approval and its arguments are too large to show to a person (over 64 KiB).", true, "error", "")
		a.nextCall(c, t)
		return
	}
	t.p.Gate = uuid.NewString()
	if t.id == "" {
		t.id = uuid.NewString()
	}
	self, system := c.Self(), c.ActorSystem()
	a.turns.PutAsync(t.id, t.saved(), func(err error) {
		system.Root.Send(self, &turnRecorded{t: t, call: call, err: err})
	})
}

// turnRecorded asks for the decision once the turn's record is durable,
// so a restart finds every turn whose approval was asked for.
func (a *agentActor) turnRecorded(c actor.Context, m *turnRecorded) {
	t := m.t
	if !a.current(t) {
		return
	}
	if m.err != nil {
		a.d.log.Error().Err(m.err).Str("agent_id", t.agentID).Msg("could not record a turn waiting for approval")
		a.toolResult(t, m.call, "Not run: this tool needs human approval and the request could not be recorded.", true, "error", "")
		a.nextCall(c, t)
		return
	}
	a.awaitDecision(c, t)
}

// dropTurnRecord deletes a turn's record without waiting (No synced
// write in Receive); a failure is logged.
func (a *agentActor) dropTurnRecord(id, agentID, what string) {
	log := a.d.log
	a.turns.DeleteAsync(id, func(err error) {
		if err != nil {
			log.Warn().Err(err).Str("agent_id", agentID).Msg("could not drop " + what + " record")
		}
	})
}

// awaitDecision asks the approvals supervisor for the decision on the
// call in hand (creating the request if it does not exist yet) and waits
// for it without blocking the mailbox.
func (a *agentActor) awaitDecision(c actor.Context, t *turn) {
	call := t.p.Calls[t.p.Next]
	gate := a.d.opts.Gate
	args := call.Arguments
	if len(strings.TrimSpace(string(args))) == 0 {
		args = json.RawMessage("{}")
	}
	req := approval.Request{ID: t.p.Gate, AgentID: t.agentID, AgentName: t.agentName, Action: call.Name,
		Description: fmt.Sprintf("Agent %s wants to call the tool %s.", t.agentName, call.Name),
		Payload:     args, SessionID: t.sessionID, RequestedBy: "agent:" + t.agentID, SourceIP: t.who().SourceIP}
	f := c.RequestFuture(gate.PID(), &approval.Gate{Req: req}, gate.MaxWait()+time.Minute)
	c.ReenterAfter(f, func(res any, err error) { a.decided(c, t, res, err) })
}

// decided continues a turn once its approval is decided (or the ask failed).
func (a *agentActor) decided(c actor.Context, t *turn, res any, err error) {
	if !a.current(t) || t.p.Gate == "" {
		return
	}
	if err != nil || isUnavailable(res) {
		// Timed out or the approvals actor was restarting: the request is
		// durable and Gate is idempotent, so ask again.
		self, system := c.Self(), c.ActorSystem()
		time.AfterFunc(regateDelay, func() { system.Root.Send(self, &regate{t: t}) })
		return
	}
	// The decision is made: the wait is over, whatever happens next. The
	// record goes first, durably, so a restart from here on does not run
	// the tool twice.
	if t.id == "" {
		a.applyDecision(c, t, res)
		return
	}
	self, system := c.Self(), c.ActorSystem()
	a.turns.DeleteAsync(t.id, func(derr error) {
		if derr != nil {
			// The decision still stands; a restart before the record
			// goes could ask for it again (and find it decided).
			a.d.log.Warn().Err(derr).Str("agent_id", t.agentID).Msg("could not drop a resumed turn record")
		}
		system.Root.Send(self, &decisionRecorded{t: t, res: res})
	})
}

// applyDecision runs the tool, or tells the model why not.
func (a *agentActor) applyDecision(c actor.Context, t *turn, res any) {
	call, id := t.p.Calls[t.p.Next], t.p.Gate
	switch v := res.(type) {
	case *approval.Approval:
		switch v.Status {
		case approval.StatusApproved:
			a.runTool(c, t, call, id)
			return
		case approval.StatusRejected:
			why := ""
			if v.Reason != "" {
				why = " Reason given: " + v.Reason
			}
			a.toolResult(t, call, fmt.Sprintf("Not run: a human rejected this tool call (approval %s, decided by %s).%s Do not retry it; tell the user it was rejected.", id, v.DecidedBy, why), true, "rejected", id)
		case approval.StatusModified:
			a.toolResult(t, call, fmt.Sprintf("Not run: a human sent this tool call back for changes (approval %s, decided by %s). Feedback: %s Change the call as the feedback asks and try again.", id, v.DecidedBy, v.Reason), true, "modified", id)
		case approval.StatusExpired:
			a.toolResult(t, call, fmt.Sprintf("Not run: nobody approved this tool call in time (approval %s expired). Tell the user it needs approval.", id), true, "expired", id)
		default:
			a.toolResult(t, call, fmt.Sprintf("Not run: the approval request %s was %s.", id, v.Status), true, v.Status, id)
		}
	case error:
		msg := "the request could not be made"
		if de := kernel.AsError(v); de != nil {
			msg = de.Msg
		}
		a.toolResult(t, call, "Not run: this tool needs human approval and "+msg, true, "error", id)
	default:
		a.toolResult(t, call, "Not run: the approval answer was not understood.", true, "error", id)
	}
	a.nextCall(c, t)
}

func isUnavailable(res any) bool {
	err, ok := res.(error)
	if !ok {
		return false
	}
	de := kernel.AsError(err)
	return de != nil && de.Kind == kernel.KindUnavailable
}

func (t *turn) who() Who {
	if t.w.send != nil {
		return t.w.send.Who
	}
	return Who{}
}

func (t *turn) saved() savedTurn {
	return savedTurn{ID: t.id, SessionID: t.sessionID, Text: t.w.send.Text, From: t.w.send.From, Who: t.w.send.Who, User: t.w.send.User,
		Messages: t.req.Messages, Started: t.started, Progress: t.p}
}

// resume restarts the turns that were waiting for a decision when the
// agent stopped: each takes its session again and asks for its decision.
func (a *agentActor) resume(c actor.Context) error {
	var saved []savedTurn
	if err := a.turns.Each(func(_ string, s savedTurn) bool { saved = append(saved, s); return true }); err != nil {
		return err
	}
	for _, s := range saved {
		st := a.index[s.SessionID]
		if st == nil {
			st = &sessionState{}
			a.index[s.SessionID] = st
		}
		if st.current != nil || a.d.opts.Gate == nil || s.Progress.Gate == "" || s.Progress.Next >= len(s.Progress.Calls) || a.routeErr != nil {
			// Nothing to resume with (approvals switched off, the model
			// gone, or a second turn on the session): drop it.
			a.d.log.Warn().Str("agent_id", a.m.ID).Str("turn", s.ID).Msg("dropping a turn that cannot be resumed")
			a.dropTurnRecord(s.ID, a.m.ID, "an unresumable turn's")
			continue
		}
		h, err := a.history(s.SessionID, st)
		if err != nil {
			return err
		}
		send := &Send{Ref: Ref{ID: a.m.ID}, Text: s.Text, SessionID: s.SessionID, From: s.From, Who: s.Who, User: s.User}
		t := &turn{id: s.ID, sessionID: s.SessionID, w: waiter{send: send}, agentID: a.m.ID, agentName: a.m.Name,
			route: a.route, history: h, started: s.Started, p: s.Progress, ctx: a.ctx}
		t.req = llm.Request{System: a.m.SystemPrompt, Messages: s.Messages, MaxTokens: a.m.MaxTokens, Temperature: a.m.Temperature,
			Tools: a.offeredTools()}
		st.current = t
		a.d.log.Info().Str("agent_id", a.m.ID).Str("approval_id", s.Progress.Gate).Msg("resuming a turn that waits for approval")
		a.awaitDecision(c, t)
	}
	return nil
}
