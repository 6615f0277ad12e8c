package http

import (
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
)

// who is the caller as the domain actors audit it.
func who(ctx *fasthttp.RequestCtx) agent.Who {
	actor, _ := ctx.UserValue(userActor).(string)
	return agent.Who{Actor: actor, SourceIP: clientIP(ctx).String()}
}

// agentRef reads {id}: an agent id (UUID) or name; anything else is a 400.
func agentRef(ctx *fasthttp.RequestCtx) (agent.Ref, error) {
	id, _ := ctx.UserValue("id").(string)
	return agent.ParseRef(id)
}

// listAgents serves GET /api/agents?offset=&limit= in LibreFang's paginated
// envelope, oldest agent first; limit defaults to and is clamped at 100.
func (s *Server) listAgents(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 100)
	if err != nil {
		return err
	}
	all, err := s.deps.Agents.List()
	if err != nil {
		return err
	}
	items := page(all, offset, limit)
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Items  []agent.Agent `json:"items"`
		Total  int           `json:"total"`
		Offset int           `json:"offset"`
		Limit  int           `json:"limit"`
		Next   *int          `json:"next_offset"`
	}{items, len(all), offset, limit, nextOffset(len(all), offset, limit)})
	return nil
}

func (s *Server) createAgent(ctx *fasthttp.RequestCtx) error {
	var spec agent.Spec
	if err := decodeJSON(ctx, &spec); err != nil {
		return err
	}
	a, err := s.deps.Agents.Create(spec, who(ctx))
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) created", a.Name, a.ID))
	writeJSON(ctx, fasthttp.StatusCreated, a)
	return nil
}

func (s *Server) getAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	a, err := s.deps.Agents.Get(ref)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, a)
	return nil
}

func (s *Server) patchAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	var p agent.Patch
	if err := decodeJSON(ctx, &p); err != nil {
		return err
	}
	a, err := s.deps.Agents.Update(ref, p, who(ctx))
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) updated", a.Name, a.ID))
	writeJSON(ctx, fasthttp.StatusOK, a)
	return nil
}

func (s *Server) deleteAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	d, err := s.deps.Agents.Delete(ref, who(ctx))
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) deleted", d.Name, d.ID))
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

type messageBody struct {
	Message   string `json:"message"`
	SessionID string `json:"session_id"`
}

// messageAgent serves POST /api/agents/{id}/message: one LLM turn.
func (s *Server) messageAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	var body messageBody
	if err := decodeJSON(ctx, &body); err != nil {
		return err
	}
	if err := agent.CheckMessage(body.Message); err != nil {
		return err
	}
	if body.SessionID != "" {
		if body.SessionID, err = agent.ParseSessionID(body.SessionID); err != nil {
			return err
		}
	}
	res, err := s.deps.Agents.Send(agent.Send{Ref: ref, Text: body.Message, SessionID: body.SessionID, From: "api", Who: who(ctx)})
	if err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("agent %s answered in session %s", res.AgentID, res.SessionID))
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}
