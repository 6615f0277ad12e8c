package http

import (
	"bufio"
	"encoding/json"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/transport/sse"
)

// DefaultMaxAgentStreams is [agents] max_streams' default: each open
// stream is a turn in flight, a goroutine and a provider connection.
const DefaultMaxAgentStreams = 64

// streamEventBuffer is how many events a turn may get ahead of its
// client before the turn waits for it.
const streamEventBuffer = 64

// The SSE events of POST /api/agents/{id}/message/stream, as LibreFang's
// send_message_stream names them (routes/agents/messaging.rs): chunk
// {content, done: false} for each piece of text; tool_use {tool} when the
// model begins a tool call and tool_result {tool, input} once its input
// is complete (LibreFang's name, though it carries the input, not the
// tool's output); phase {phase, detail} for the turn's progress
// ("thinking" before each provider call, "tool_use" with the tool's name
// while it runs, "error" on failure); done {done: true, usage:
// {input_tokens, output_tokens}} at the end. fangd adds its own fields
// beside LibreFang's (a superset, never a rename): tool_call_id, the
// iteration of a "thinking" phase, and on done the whole answer of
// POST /message (response, cost_usd, iterations, session_id, …). A
// failure ends the stream with phase "error" and an error event carrying
// the error envelope of the non-streaming call (error, code, request_id)
// and the status it would have had.
type (
	sseChunk struct {
		Content string `json:"content"`
		Done    bool   `json:"done"`
	}
	sseToolUse struct {
		Tool       string `json:"tool"`
		ToolCallID string `json:"tool_call_id"`
	}
	sseToolResult struct {
		Tool       string          `json:"tool"`
		Input      json.RawMessage `json:"input"`
		ToolCallID string          `json:"tool_call_id"`
	}
	ssePhase struct {
		Phase     string  `json:"phase"`
		Detail    *string `json:"detail"`
		Iteration int     `json:"iteration,omitempty"`
	}
	sseUsage struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
	}
	sseDone struct {
		Done  bool     `json:"done"`
		Usage sseUsage `json:"usage"`
		*agent.TurnResult
	}
	sseError struct {
		errorBody
		Status int `json:"status"`
	}
)

// streamEvent maps a turn's event to its SSE event name and data.
func streamEvent(ev agent.StreamEvent) (string, any) {
	switch ev.Type {
	case agent.StreamText:
		return "chunk", sseChunk{Content: ev.Text}
	case agent.StreamToolUse:
		return "tool_use", sseToolUse{Tool: ev.Tool, ToolCallID: ev.ToolCallID}
	case agent.StreamToolInput:
		input := ev.Input
		if len(input) == 0 {
			input = json.RawMessage(`{}`)
		} else if !json.Valid(input) {
			// The model wrote arguments that are not JSON: pass them on
			// as the string they are (the tool is not run with them).
			input, _ = json.Marshal(string(ev.Input))
		}
		return "tool_result", sseToolResult{Tool: ev.Tool, Input: input, ToolCallID: ev.ToolCallID}
	case agent.StreamToolRun:
		tool := ev.Tool
		return "phase", ssePhase{Phase: "tool_use", Detail: &tool}
	case agent.StreamStep:
		return "phase", ssePhase{Phase: "thinking", Iteration: ev.Iteration}
	}
	return "", nil
}

// messageAgentStream serves POST /api/agents/{id}/message/stream: the
// turn of POST /message, its events sent as they happen (SSE). Bad input
// and an unknown agent are answered before the stream begins (400, 404),
// as are too many open streams (429 agent_stream_limit, [agents]
// max_streams); anything after is an error event. A client that goes away
// cancels the turn, and with it the provider call.
func (s *Server) messageAgentStream(ctx *fasthttp.RequestCtx) error {
	send, err := messageSend(ctx)
	if err != nil {
		return err
	}
	ag, err := s.deps.Agents.Get(s.reqCtx(ctx), send.Ref)
	if err != nil {
		return err
	}
	send.Ref = agent.Ref{ID: ag.ID}
	if n := s.agentStreams.Add(1); s.cfg.MaxAgentStreams > 0 && n > int64(s.cfg.MaxAgentStreams) {
		s.agentStreams.Add(-1)
		ctx.Response.Header.Set("Retry-After", "5")
		return &apiError{fasthttp.StatusTooManyRequests, "agent_stream_limit",
			fmt.Sprintf("%d agent streams are open, the most allowed ([agents] max_streams)", s.cfg.MaxAgentStreams)}
	}
	auditDetails(ctx, fmt.Sprintf("agent %s streamed a turn", ag.ID))
	conn, heartbeat, reqID, path := ctx.Conn(), s.cfg.SSEHeartbeat, requestID(ctx), string(ctx.Path())
	agents := s.deps.Agents
	sse.Begin(ctx)
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer s.agentStreams.Add(-1)
		// The turn's context: cancelled when the client is gone (below)
		// and by shutdown, whose turn_cancelled error event ends the
		// stream.
		turnCtx, cancel := s.streamCtx()
		defer cancel()
		events := make(chan agent.StreamEvent, streamEventBuffer)
		type outcome struct {
			res *agent.TurnResult
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := agents.Stream(turnCtx, send, events)
			done <- outcome{res, err}
		}()
		w := sse.NewWriter(bw, conn, s.cfg.StreamWriteTimeout)
		write := func(event string, v any) {
			data, err := json.Marshal(v)
			if err != nil {
				data = []byte(`{}`)
			}
			w.Event(0, event, data)
		}
		// gone ends a stream whose client stopped reading: the turn is
		// cancelled (closing the provider's connection), and the slot is
		// held until it has ended.
		gone := func() {
			cancel()
			<-done
		}
		if w.Flush() != nil {
			gone()
			return
		}
		tick := time.NewTicker(heartbeat)
		defer tick.Stop()
		for {
			select {
			case ev := <-events:
				if name, v := streamEvent(ev); name != "" {
					write(name, v)
				}
			case o := <-done:
				// Whatever the turn sent before it ended is already in
				// the channel: send it first.
				for n := len(events); n > 0; n-- {
					if name, v := streamEvent(<-events); name != "" {
						write(name, v)
					}
				}
				if o.err != nil {
					status, code, msg := s.describeError(o.err, reqID, path)
					write("phase", ssePhase{Phase: "error", Detail: &msg})
					write("error", sseError{errorBody{Error: msg, Code: code, RequestID: reqID}, status})
				} else {
					write("done", sseDone{Done: true, Usage: sseUsage{o.res.InputTokens, o.res.OutputTokens}, TurnResult: o.res})
				}
				w.Flush()
				return
			case <-tick.C:
				w.Comment("keep-alive")
			}
			if w.Flush() != nil {
				gone()
				return
			}
		}
	})
	return nil
}
