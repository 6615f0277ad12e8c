package http

import (
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/usage"
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
	local, err := s.deps.Agents.List(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	if s.agentDir != nil {
		// Cluster mode: every node's agents (agents_cluster.go).
		all, ok := s.clusterAgents(ctx, local)
		writeJSON(ctx, fasthttp.StatusOK, struct {
			Items  []any `json:"items"`
			Total  int   `json:"total"`
			Offset int   `json:"offset"`
			Limit  int   `json:"limit"`
			Next   *int  `json:"next_offset"`
			// RemoteUnavailable: etcd did not answer, only this node's
			// agents are listed.
			RemoteUnavailable bool `json:"remote_unavailable,omitempty"`
		}{page(all, offset, limit), len(all), offset, limit, nextOffset(len(all), offset, limit), !ok})
		return nil
	}
	items := page(local, offset, limit)
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Items  []agent.Agent `json:"items"`
		Total  int           `json:"total"`
		Offset int           `json:"offset"`
		Limit  int           `json:"limit"`
		Next   *int          `json:"next_offset"`
	}{items, len(local), offset, limit, nextOffset(len(local), offset, limit)})
	return nil
}

// createAgentBody is POST /api/agents: the seed's fields (agent.Spec), or
// LibreFang's SpawnRequest (manifest_toml or template, with name; fangd
// also takes model beside them).
type createAgentBody struct {
	agent.Spec
	ManifestTOML   *string `json:"manifest_toml"`
	Template       *string `json:"template"`
	SignedManifest *string `json:"signed_manifest"`
}

// createdAgent is the answer: the agent, and LibreFang's agent_id (its
// SpawnResponse is {agent_id, name}).
type createdAgent struct {
	*agent.Agent
	AgentID string `json:"agent_id"`
}

func (s *Server) createAgent(ctx *fasthttp.RequestCtx) error {
	var body createAgentBody
	if err := decodeJSON(ctx, &body); err != nil {
		return err
	}
	var (
		a    *agent.Agent
		err  error
		from string
	)
	if body.ManifestTOML != nil || body.Template != nil || body.SignedManifest != nil {
		is, err := importSpec(&body)
		if err != nil {
			return err
		}
		if a, err = s.deps.Agents.Import(s.reqCtx(ctx), is, who(ctx)); err != nil {
			return err
		}
		from = " from manifest_toml"
		if strings.TrimSpace(is.ManifestTOML) == "" {
			from = " from template " + is.Template
		}
	} else if a, err = s.deps.Agents.Create(s.reqCtx(ctx), body.Spec, who(ctx)); err != nil {
		return err
	}
	if err := s.registerAgent(ctx, a); err != nil {
		return err
	}
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) created%s", a.Name, a.ID, from))
	writeJSON(ctx, fasthttp.StatusCreated, createdAgent{a, a.ID})
	return nil
}

// importSpec checks a LibreFang-shaped create: besides manifest_toml or
// template only name and model may be given (the manifest says the rest).
func importSpec(b *createAgentBody) (agent.ImportSpec, error) {
	if b.SignedManifest != nil {
		return agent.ImportSpec{}, badRequest("unsupported_field", "signed_manifest is not supported: fangd verifies no manifest signatures; send manifest_toml alone")
	}
	sp := &b.Spec
	for _, f := range []struct {
		name string
		set  bool
	}{{"description", sp.Description != ""}, {"system_prompt", sp.SystemPrompt != ""}, {"max_tokens", sp.MaxTokens != nil},
		{"temperature", sp.Temperature != nil}, {"tags", sp.Tags != nil}, {"tools", sp.Tools != nil}, {"capabilities", sp.Capabilities != nil},
		{"channels", sp.Channels != nil}, {"mcp_servers", sp.MCPServers != nil}} {
		if f.set {
			return agent.ImportSpec{}, badRequest("invalid_input", f.name+" cannot be combined with manifest_toml or template: set it in the manifest")
		}
	}
	is := agent.ImportSpec{Name: sp.Name, Model: sp.Model}
	if b.ManifestTOML != nil {
		is.ManifestTOML = *b.ManifestTOML
	}
	if b.Template != nil {
		is.Template = *b.Template
	}
	return is, nil
}

// pathAgent is the agent {id} names: 400 for a malformed ref, 404 for
// an unknown agent.
func (s *Server) pathAgent(ctx *fasthttp.RequestCtx) (*agent.Agent, error) {
	ref, err := agentRef(ctx)
	if err != nil {
		return nil, err
	}
	return s.deps.Agents.Get(s.reqCtx(ctx), ref)
}

func (s *Server) getAgent(ctx *fasthttp.RequestCtx) error {
	a, err := s.pathAgent(ctx)
	return reply(ctx, a, err)
}

func (s *Server) patchAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	var p patchAgentBody
	if err := decodeJSON(ctx, &p); err != nil {
		return err
	}
	if p.Provider != nil {
		// LibreFang's {"model": "<id>", "provider": "<name>"}: fangd's
		// model is "<provider>/<id>".
		if p.Model == nil || *p.Model == "" || strings.TrimSpace(*p.Provider) == "" {
			return badRequest("invalid_input", `"provider" needs "model" beside it (or give "model" as "<provider>/<model id>" alone)`)
		}
		if !strings.HasPrefix(*p.Model, *p.Provider+"/") {
			m := *p.Provider + "/" + *p.Model
			p.Model = &m
		}
	}
	var old *agent.Agent
	if s.agentDir != nil && p.Name != nil {
		// Cluster mode: a rename moves the directory entry too.
		if old, err = s.deps.Agents.Get(s.reqCtx(ctx), ref); err != nil {
			return err
		}
	}
	a, err := s.deps.Agents.Update(s.reqCtx(ctx), ref, p.Patch, who(ctx))
	if err != nil {
		return err
	}
	if old != nil {
		if err := s.renameAgent(ctx, a, old.Name); err != nil {
			return err
		}
	}
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) updated", a.Name, a.ID))
	// LibreFang answers {status: "ok", agent_id, name}; fangd the agent.
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Status string `json:"status"`
		*agent.Agent
		AgentID string `json:"agent_id"`
	}{"ok", a, a.ID})
	return nil
}

// patchAgentBody is fangd's Patch plus LibreFang's provider, which
// qualifies a bare model id.
type patchAgentBody struct {
	agent.Patch
	Provider *string `json:"provider"`
}

func (s *Server) deleteAgent(ctx *fasthttp.RequestCtx) error {
	ref, err := agentRef(ctx)
	if err != nil {
		return err
	}
	d, err := s.deps.Agents.Delete(s.reqCtx(ctx), ref, who(ctx))
	if err != nil {
		return err
	}
	s.unregisterAgent(ctx, d)
	auditDetails(ctx, fmt.Sprintf("agent %s (%s) deleted", d.Name, d.ID))
	// LibreFang's answer (kill_agent): 200 {status: "killed", agent_id,
	// identity_purged}; fangd removes the manifest and the sessions, so
	// the id is purged too. LibreFang's ?confirm=true is accepted (the
	// query is not read: a DELETE is the confirmation here).
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "killed", "agent_id": d.ID, "name": d.Name, "identity_purged": true})
	return nil
}

type messageBody struct {
	Message   string `json:"message"`
	SessionID string `json:"session_id"`
	// LibreFang's sender fields name the user the message is from, whose
	// budget the turn's LLM calls count against (see turnUser).
	SenderID    string `json:"sender_id"`
	ChannelType string `json:"channel_type"`
}

// turnUser is on whose behalf a message runs, for per-user budgets: the
// sender the caller names ("<channel_type>:<sender_id>", or sender_id
// alone), else the caller's own credential ("api_key", "loopback",
// "peer:<name>"). fangd
// has no user accounts; a caller holding the API key may name any sender,
// as it may spend the whole global budget.
func turnUser(ctx *fasthttp.RequestCtx, b *messageBody) (string, error) {
	if b.SenderID == "" {
		if b.ChannelType != "" {
			return "", badRequest("invalid_input", "channel_type needs sender_id")
		}
		return who(ctx).Actor, nil
	}
	user := b.SenderID
	if b.ChannelType != "" {
		user = b.ChannelType + ":" + b.SenderID
	}
	if err := usage.CheckScopeID("sender_id", user); err != nil {
		return "", err
	}
	return user, nil
}

// messageSend reads POST /api/agents/{id}/message[/stream]'s request.
func messageSend(ctx *fasthttp.RequestCtx) (agent.Send, error) {
	ref, err := agentRef(ctx)
	if err != nil {
		return agent.Send{}, err
	}
	var body messageBody
	if err := decodeJSON(ctx, &body); err != nil {
		return agent.Send{}, err
	}
	if err := agent.CheckMessage(body.Message); err != nil {
		return agent.Send{}, err
	}
	if body.SessionID != "" {
		if body.SessionID, err = agent.ParseSessionID(body.SessionID); err != nil {
			return agent.Send{}, err
		}
	}
	user, err := turnUser(ctx, &body)
	if err != nil {
		return agent.Send{}, err
	}
	return agent.Send{Ref: ref, Text: body.Message, SessionID: body.SessionID, From: "api", Who: who(ctx), User: user}, nil
}

// messageAgent serves POST /api/agents/{id}/message: one LLM turn.
func (s *Server) messageAgent(ctx *fasthttp.RequestCtx) error {
	send, err := messageSend(ctx)
	if err != nil {
		return err
	}
	res, err := s.deps.Agents.Send(s.reqCtxWait(ctx), send)
	return replyAudited(ctx, res, err, func() string { return fmt.Sprintf("agent %s answered in session %s", res.AgentID, res.SessionID) })
}
