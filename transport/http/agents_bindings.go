package http

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp"
)

// An agent's allow-lists (LibreFang's routes): which channels it answers
// and which MCP servers' tools it is offered. Empty means all; the agent
// runtime enforces both (actors/agent: AllowsChannel, AllowsMCPServer).

func (s *Server) agentBindingRoutes() {
	s.api("GET", "/agents/{id}/channels", s.agentBinding(channelsBinding))
	s.api("PUT", "/agents/{id}/channels", s.setAgentBinding(channelsBinding))
	s.api("GET", "/agents/{id}/mcp_servers", s.agentBinding(mcpBinding))
	s.api("PUT", "/agents/{id}/mcp_servers", s.setAgentBinding(mcpBinding))
}

// binding is one allow-list: its field, where it lives in a manifest and
// what could be put in it.
type binding struct {
	field     string
	list      func(*agent.Manifest) []string
	patch     func(*agent.Patch, []string)
	available func(context.Context, *Server) ([]string, error)
}

var channelsBinding = binding{
	field: "channels",
	list:  func(m *agent.Manifest) []string { return m.Channels },
	patch: func(p *agent.Patch, v []string) { p.Channels = &v },
	available: func(c context.Context, s *Server) ([]string, error) {
		if s.deps.Channels == nil {
			return []string{}, nil
		}
		views, err := s.deps.Channels.List(c, true)
		return namesOf(views, err, func(v channel.View) string { return v.Name })
	},
}

var mcpBinding = binding{
	field: "mcp_servers",
	list:  func(m *agent.Manifest) []string { return m.MCPServers },
	patch: func(p *agent.Patch, v []string) { p.MCPServers = &v },
	available: func(c context.Context, s *Server) ([]string, error) {
		if s.deps.MCP == nil {
			return []string{}, nil
		}
		views, err := s.deps.MCP.Servers(c)
		return namesOf(views, err, func(v mcp.ServerView) string { return v.Name })
	},
}

// namesOf is the name of each view, in order, or err.
func namesOf[T any](views []T, err error, name func(T) string) ([]string, error) {
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(views))
	for _, v := range views {
		out = append(out, name(v))
	}
	return out, nil
}

// bindingView is LibreFang's answer ({assigned, available, mode}) plus
// the agent and the assigned names that name nothing configured now.
func (b binding) view(c context.Context, s *Server, a *agent.Agent) (map[string]any, error) {
	avail, err := b.available(c, s)
	if err != nil {
		return nil, err
	}
	assigned := b.list(&a.Manifest)
	mode := "allowlist"
	if len(assigned) == 0 {
		mode = "all"
	}
	unknown := []string{}
	for _, n := range assigned {
		if !slices.Contains(avail, n) {
			unknown = append(unknown, n)
		}
	}
	return map[string]any{"agent_id": a.ID, "assigned": nonNil(assigned), "available": avail, "mode": mode, "unknown": unknown}, nil
}

func (s *Server) agentBinding(b binding) handlerFunc {
	return func(ctx *fasthttp.RequestCtx) error {
		a, err := s.pathAgent(ctx)
		if err != nil {
			return err
		}
		out, err := b.view(s.reqCtx(ctx), s, a)
		if err != nil {
			return err
		}
		writeJSON(ctx, fasthttp.StatusOK, out)
		return nil
	}
}

// setAgentBinding replaces an allow-list: the body is LibreFang's
// {"<field>": [...]} or a bare JSON array of names; [] allows all.
func (s *Server) setAgentBinding(b binding) handlerFunc {
	return func(ctx *fasthttp.RequestCtx) error {
		ref, err := agentRef(ctx)
		if err != nil {
			return err
		}
		names, err := b.decode(ctx)
		if err != nil {
			return err
		}
		var p agent.Patch
		b.patch(&p, names)
		a, err := s.deps.Agents.Update(s.reqCtx(ctx), ref, p, who(ctx))
		if err != nil {
			return err
		}
		auditDetails(ctx, fmt.Sprintf("agent %s (%s) %s set to [%s]", a.Name, a.ID, b.field, strings.Join(b.list(&a.Manifest), ",")))
		out, err := b.view(s.reqCtx(ctx), s, a)
		if err != nil {
			return err
		}
		out["status"] = "ok"
		out[b.field] = nonNil(b.list(&a.Manifest))
		writeJSON(ctx, fasthttp.StatusOK, out)
		return nil
	}
}

func (b binding) decode(ctx *fasthttp.RequestCtx) ([]string, error) {
	if err := checkJSONContentType(ctx); err != nil {
		return nil, err
	}
	body := bytes.TrimSpace(ctx.PostBody())
	var names []string
	if len(body) > 0 && body[0] == '[' {
		if err := decodeJSONBytes(body, &names); err != nil {
			return nil, err
		}
	} else {
		var obj map[string]*[]string
		if err := decodeJSONBytes(body, &obj); err != nil {
			return nil, err
		}
		for k := range obj {
			if k != b.field {
				return nil, badRequest("unknown_field", fmt.Sprintf("unknown field %q", k))
			}
		}
		v := obj[b.field]
		if v == nil {
			return nil, kernel.Invalid("body must be {\"%s\": [names]} or a JSON array of names", b.field)
		}
		names = *v
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
