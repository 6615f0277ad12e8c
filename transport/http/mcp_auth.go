package http

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/mcp"
)

// OAuth for remote MCP servers (LibreFang's routes): status, start (the
// answer's auth_url is opened in a browser), the browser's redirect back,
// and revoke. The flow itself is actors/mcp/oauth.go.

func (s *Server) mcpAuthRoutes() {
	s.api("GET", "/mcp/servers/{id}/auth/status", s.mcpAuthStatus)
	s.api("POST", "/mcp/servers/{id}/auth/start", s.mcpAuthStart)
	s.api("DELETE", "/mcp/servers/{id}/auth/revoke", s.mcpAuthRevoke)
	// The authorization server redirects the user's browser here, which
	// has no API key: the one-time state of a flow started by an
	// authenticated caller is the credential.
	s.api("GET", "/mcp/servers/{id}/auth/callback", s.mcpAuthCallback, public)
	// Taint tracking belongs to the security systems, not built yet: say
	// so by route rather than answer 404 as if the route did not exist.
	s.api("PATCH", "/mcp/servers/{id}/taint", notBuilt("PATCH /api/mcp/servers/{name}/taint", whyNoTaint))
	s.api("GET", "/mcp/taint-rules", notBuilt("GET /api/mcp/taint-rules", whyNoTaint))
}

const whyNoTaint = "MCP taint tracking is part of the security systems, which are not built yet"

// notBuilt answers 501 for a LibreFang route fangd does not implement,
// naming the route and why.
func notBuilt(route, why string) handlerFunc {
	return func(*fasthttp.RequestCtx) error {
		return kernel.Errorf(kernel.KindUnsupported, "not_implemented", "%s is not implemented by fangd: %s", route, why)
	}
}

// mcpAuthCtx bounds an OAuth call: discovery and the code exchange talk to
// the authorization server.
func (s *Server) mcpAuthCtx(ctx *fasthttp.RequestCtx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.reqCtxWait(ctx), 60*time.Second)
}

func (s *Server) mcpAuthStatus(ctx *fasthttp.RequestCtx) error {
	c, cancel := s.mcpAuthCtx(ctx)
	defer cancel()
	st, err := s.deps.MCP.AuthStatus(c, pathID(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"server": pathID(ctx), "auth": st})
	return nil
}

func (s *Server) mcpAuthStart(ctx *fasthttp.RequestCtx) error {
	if len(bytes.TrimSpace(ctx.PostBody())) > 0 {
		var none struct{}
		if err := decodeJSON(ctx, &none); err != nil {
			return err
		}
	}
	c, cancel := s.mcpAuthCtx(ctx)
	defer cancel()
	name := pathID(ctx)
	authURL, err := s.deps.MCP.StartAuth(c, name, s.mcpCallbackURL(ctx, name))
	if err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+name+" oauth started")
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"server": name, "auth_url": authURL, "state": mcp.AuthPending,
		"expires_in_secs": int(mcp.OAuthFlowTimeout / time.Second)})
	return nil
}

func (s *Server) mcpAuthRevoke(ctx *fasthttp.RequestCtx) error {
	c, cancel := s.mcpAuthCtx(ctx)
	defer cancel()
	name := pathID(ctx)
	st, err := s.deps.MCP.RevokeAuth(c, name)
	if err != nil {
		return err
	}
	auditDetails(ctx, "mcp server "+name+" oauth revoked")
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"server": name, "state": st.State, "auth": st})
	return nil
}

// mcpAuthCallback answers the browser in plain text: the person reading
// it closes the tab.
func (s *Server) mcpAuthCallback(ctx *fasthttp.RequestCtx) error {
	q := ctx.QueryArgs()
	p := mcp.CallbackParams{Code: string(q.Peek("code")), State: string(q.Peek("state")), Iss: string(q.Peek("iss")),
		Error: string(q.Peek("error")), ErrorDescription: string(q.Peek("error_description"))}
	c, cancel := s.mcpAuthCtx(ctx)
	defer cancel()
	err := s.deps.MCP.CompleteAuth(c, pathID(ctx), p)
	ctx.SetContentType("text/plain; charset=utf-8")
	if err == nil {
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetBodyString("Authorization complete. fangd is connecting to MCP server " + pathID(ctx) + ".\n\nYou can close this tab.\n")
		return nil
	}
	status := fasthttp.StatusBadGateway
	var ke *kernel.Error
	if errors.As(err, &ke) && ke.Kind == kernel.KindInvalid {
		status = fasthttp.StatusBadRequest
	}
	ctx.SetStatusCode(status)
	ctx.SetBodyString("Authorization failed.\n\n" + kernel.PublicMessage(err) + "\n\nYou can close this tab.\n")
	return nil
}

// mcpCallbackURL is where the authorization server sends the browser
// back: [mcp] oauth_redirect_base when set (a reverse proxy's public
// URL), else this request's own scheme and Host, which the Host check
// has already held to the allowed names.
func (s *Server) mcpCallbackURL(ctx *fasthttp.RequestCtx, name string) string {
	base := strings.TrimRight(s.cfg.MCPOAuthRedirectBase, "/")
	if base == "" {
		scheme := "http"
		if ctx.IsTLS() {
			scheme = "https"
		}
		base = scheme + "://" + string(ctx.Host())
	}
	return base + "/api/mcp/servers/" + name + "/auth/callback"
}
