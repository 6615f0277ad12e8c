package http

import (
	"encoding/json"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/comms"
)

// An agent's recent activity (LibreFang's routes), read from the comms
// event log: its turns (agent.message / agent.error events) and the
// replies its channels delivered (channel.message.sent events whose
// target is the agent). The log keeps the newest [comms] event_log_size
// events of every kind, so these reach back as far as it does.

func (s *Server) agentActivityRoutes() {
	s.api("GET", "/agents/{id}/events", s.agentEvents)
	s.api("GET", "/agents/{id}/deliveries", s.agentDeliveries)
}

// agentEventsOf returns the agent's events of type typ, newest first.
func (s *Server) agentEventsOf(ctx *fasthttp.RequestCtx, typ string, def, hi int) (string, []comms.Event, error) {
	if err := s.needComms(); err != nil {
		return "", nil, err
	}
	ref, err := agentRef(ctx)
	if err != nil {
		return "", nil, err
	}
	limit, err := intQuery(ctx, def, 1, hi, "limit")
	if err != nil {
		return "", nil, err
	}
	a, err := s.deps.Agents.Get(s.reqCtx(ctx), ref)
	if err != nil {
		return "", nil, err
	}
	r, err := s.deps.Bus.Query(s.reqCtx(ctx), comms.Query{Limit: limit, Type: typ, Target: "agent:" + a.ID})
	if err != nil {
		return "", nil, err
	}
	out := make([]comms.Event, 0, len(r.Events))
	for _, rec := range r.Events {
		var ev comms.Event
		if err := json.Unmarshal(rec.JSON, &ev); err == nil {
			out = append(out, ev)
		}
	}
	return a.ID, out, nil
}

// agentEvents serves GET /api/agents/{id}/events?limit= (default 30,
// max 200): LibreFang's turn rows plus outcome, session and sender.
func (s *Server) agentEvents(ctx *fasthttp.RequestCtx) error {
	id, evs, err := s.agentEventsOf(ctx, "agent.*", 30, 200)
	if err != nil {
		return err
	}
	rows := make([]map[string]any, 0, len(evs))
	for _, ev := range evs {
		if ev.Type != "agent.message" && ev.Type != "agent.error" {
			continue
		}
		var d struct {
			SessionID    string  `json:"session_id"`
			From         string  `json:"from"`
			Outcome      string  `json:"outcome"`
			Model        string  `json:"model"`
			Provider     string  `json:"provider"`
			InputTokens  int64   `json:"input_tokens"`
			OutputTokens int64   `json:"output_tokens"`
			CostUSD      float64 `json:"cost_usd"`
			LatencyMS    int64   `json:"latency_ms"`
			ToolCalls    int     `json:"tool_calls"`
		}
		json.Unmarshal(ev.Detail, &d)
		rows = append(rows, map[string]any{"id": ev.ID, "timestamp": ev.Timestamp, "model": d.Model, "provider": d.Provider,
			"input_tokens": d.InputTokens, "output_tokens": d.OutputTokens, "cost_usd": d.CostUSD, "tool_calls": d.ToolCalls,
			"latency_ms": d.LatencyMS, "outcome": d.Outcome, "session_id": d.SessionID, "from": d.From})
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"agent_id": id, "events": rows, "count": len(rows)})
	return nil
}

// agentDeliveries serves GET /api/agents/{id}/deliveries?limit= (default
// 50, max 500): LibreFang's receipts of replies delivered to chats.
func (s *Server) agentDeliveries(ctx *fasthttp.RequestCtx) error {
	id, evs, err := s.agentEventsOf(ctx, "channel.message.sent", 50, 500)
	if err != nil {
		return err
	}
	receipts := make([]map[string]any, 0, len(evs))
	for _, ev := range evs {
		var d struct {
			Channel   string `json:"channel"`
			Adapter   string `json:"adapter"`
			ChatID    string `json:"chat_id"`
			MessageID string `json:"message_id"`
		}
		json.Unmarshal(ev.Detail, &d)
		receipts = append(receipts, map[string]any{"message_id": d.MessageID, "channel": d.Channel, "adapter": d.Adapter,
			"recipient": d.ChatID, "status": "delivered", "timestamp": ev.Timestamp, "error": nil})
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"agent_id": id, "count": len(receipts), "receipts": receipts})
	return nil
}
