package http

import (
	"bytes"
	"crypto/subtle"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/auth"
)

// OAuth / OIDC sign-in routes (docs/pairing.md, "Sign-in with OIDC").
// Without [external_auth] the providers list is empty and login and
// callback answer 503 external_auth_disabled, as LibreFang does.

const (
	// SessionCookie holds a signed-in user's session token.
	SessionCookie = "fangd_session"
	// CSRFCookie holds the session's CSRF token for the dashboard's
	// script to send back as X-CSRF-Token on every mutating request.
	CSRFCookie = "fangd_csrf"
	// bindCookie binds a login's state to the browser that started it.
	bindCookie = "fangd_auth_bind"
	csrfHeader = "X-Csrf-Token"
	// userRoleKey carries a session's role from authenticate to authorize.
	userRoleKey = "fangd.role"
)

func (s *Server) oauthRoutes() {
	s.api("GET", "/auth/providers", s.authProviders, public)
	s.api("GET", "/auth/login", s.authLogin, public)
	s.api("GET", "/auth/login/{provider}", s.authLogin, public)
	s.api("GET", "/auth/callback", s.authCallback, public)
	s.api("POST", "/auth/callback", s.authCallback, public)
	s.api("POST", "/auth/logout", s.authLogout)
	s.api("GET", "/auth/userinfo", s.authUserinfo, public)
	s.api("POST", "/auth/introspect", s.authIntrospect)
}

var errAuthDisabled = &apiError{fasthttp.StatusServiceUnavailable, "external_auth_disabled", "external authentication is not configured ([external_auth] enabled = true)"}

// sessionOf finds the session a request carries: a bearer session token,
// else the session cookie. fromCookie says which (CSRF applies to
// cookies only).
func (s *Server) sessionOf(ctx *fasthttp.RequestCtx, presented []byte) (sess *auth.Session, fromCookie bool) {
	if s.deps.Auth == nil {
		return nil, false
	}
	if presented != nil {
		if !bytes.HasPrefix(presented, []byte("fss_")) {
			return nil, false
		}
		sess, _ = s.deps.Auth.Session(string(presented))
		return sess, false
	}
	if c := ctx.Request.Header.Cookie(SessionCookie); len(c) > 0 {
		sess, _ = s.deps.Auth.Session(string(c))
		return sess, sess != nil
	}
	return nil, false
}

var refusedCSRF = &authRefusal{"missing or wrong CSRF token on a cookie-authenticated write", "",
	&apiError{fasthttp.StatusForbidden, "csrf_failed", "a request authenticated by the session cookie must send the session's CSRF token in X-CSRF-Token"}}

// csrfOK is the double-submit check: the header must equal the session's
// CSRF token (kept server-side, so a cookie the attacker planted is no use).
func csrfOK(ctx *fasthttp.RequestCtx, sess *auth.Session) bool {
	h := ctx.Request.Header.Peek(csrfHeader)
	return len(h) > 0 && subtle.ConstantTimeCompare(h, []byte(sess.CSRF)) == 1
}

func (s *Server) secureCookies(ctx *fasthttp.RequestCtx) bool {
	return ctx.IsTLS() || s.cfg.PublicHTTPS
}

func (s *Server) setCookie(ctx *fasthttp.RequestCtx, name, value, path string, maxAge time.Duration, httpOnly bool) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(name)
	c.SetValue(value)
	c.SetPath(path)
	c.SetHTTPOnly(httpOnly)
	c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	c.SetSecure(s.secureCookies(ctx))
	if maxAge > 0 {
		c.SetMaxAge(int(maxAge / time.Second))
	} else {
		c.SetMaxAge(-1) // delete
		c.SetValue("")
	}
	ctx.Response.Header.SetCookie(c)
}

// authProviders serves GET /api/auth/providers.
func (s *Server) authProviders(ctx *fasthttp.RequestCtx) error {
	if s.deps.Auth == nil {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"enabled": false, "providers": []auth.ProviderView{}})
		return nil
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"enabled": true, "providers": s.deps.Auth.Providers()})
	return nil
}

// authLogin serves GET /api/auth/login[/{provider}]: 302 to the provider.
func (s *Server) authLogin(ctx *fasthttp.RequestCtx) error {
	if s.deps.Auth == nil {
		return errAuthDisabled
	}
	provider, _ := ctx.UserValue("provider").(string)
	scheme := "http"
	if s.secureCookies(ctx) {
		scheme = "https"
	}
	ls, err := s.deps.Auth.Login(s.reqCtxWait(ctx), provider, string(ctx.QueryArgs().Peek("return_to")), scheme+"://"+string(ctx.Host())+"/api/auth/callback")
	if err != nil {
		return err
	}
	s.setCookie(ctx, bindCookie, ls.Binding, "/api", auth.StateTTL, true)
	ctx.Response.Header.Set("Location", ls.URL)
	ctx.SetStatusCode(fasthttp.StatusFound)
	return nil
}

type callbackBody struct {
	Code  string `json:"code"`
	State string `json:"state"`
}

// authCallback serves GET and POST /api/auth/callback.
func (s *Server) authCallback(ctx *fasthttp.RequestCtx) error {
	if s.deps.Auth == nil {
		return errAuthDisabled
	}
	var b callbackBody
	args := ctx.QueryArgs()
	if string(ctx.Method()) == "POST" {
		ct := string(ctx.Request.Header.ContentType())
		if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			args = ctx.PostArgs()
		} else if err := decodeJSON(ctx, &b); err != nil {
			return err
		}
	}
	if e := args.Peek("error"); len(e) > 0 {
		return &apiError{fasthttp.StatusUnauthorized, "idp_error", "the identity provider refused the sign-in: " + clip(string(e)+" "+string(args.Peek("error_description")), 200)}
	}
	if b.Code == "" {
		b.Code, b.State = string(args.Peek("code")), string(args.Peek("state"))
	}
	if b.Code == "" || b.State == "" {
		return badRequest("invalid_input", "code and state are required")
	}
	token, sess, returnTo, err := s.deps.Auth.Callback(s.reqCtxWait(ctx), b.Code, b.State, string(ctx.Request.Header.Cookie(bindCookie)))
	// Sign-ins are audited here, GET callbacks included (the chain
	// audits only mutating methods).
	ctx.SetUserValue(userAuditedBelow, true)
	if err != nil {
		s.appendAuditAsync(audit.Event{EventType: "oidc_sign_in", Outcome: "denied", Actor: "anonymous",
			SourceIP: clientIP(ctx).String(), Details: "sign-in refused: " + errorCode(err)})
		return err
	}
	s.setCookie(ctx, bindCookie, "", "/api", 0, true)
	ctx.SetUserValue(userActor, sess.Identity())
	if err := s.appendAudit(audit.Event{EventType: "oidc_sign_in", Outcome: "ok", Actor: sess.Identity(),
		SourceIP: clientIP(ctx).String(), Details: "signed in with role " + sess.Role}); err != nil {
		// Not shown in the audit log: the session must not be used.
		_ = s.deps.Auth.Logout(s.reqCtx(ctx), token)
		return err
	}
	ttl := time.Until(sess.ExpiresAt)
	s.setCookie(ctx, SessionCookie, token, "/", ttl, true)
	s.setCookie(ctx, CSRFCookie, sess.CSRF, "/", ttl, false)
	if returnTo != "" {
		ctx.Response.Header.Set("Location", returnTo)
		ctx.SetStatusCode(fasthttp.StatusFound)
		return nil
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"token": token, "token_type": "Bearer", "expires_in": int(ttl / time.Second),
		"provider": sess.Provider, "role": sess.Role, "csrf_token": sess.CSRF,
		"user": map[string]string{"sub": sess.Subject, "email": sess.Email, "name": sess.Name}})
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// authLogout serves POST /api/auth/logout: ends the caller's session.
func (s *Server) authLogout(ctx *fasthttp.RequestCtx) error {
	if s.deps.Auth == nil {
		return errAuthDisabled
	}
	token := bearer(ctx)
	if token == nil {
		token = ctx.Request.Header.Cookie(SessionCookie)
	}
	if _, ok := s.deps.Auth.Session(string(token)); !ok {
		return badRequest("not_a_session", "the caller is not signed in with a session")
	}
	if err := s.deps.Auth.Logout(s.reqCtx(ctx), string(token)); err != nil {
		return err
	}
	s.setCookie(ctx, SessionCookie, "", "/", 0, true)
	s.setCookie(ctx, CSRFCookie, "", "/", 0, false)
	auditDetails(ctx, "signed out")
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"ok": true})
	return nil
}

// authUserinfo serves GET /api/auth/userinfo: the session's user, or
// what a provider's userinfo endpoint says of a bearer access token.
func (s *Server) authUserinfo(ctx *fasthttp.RequestCtx) error {
	presented := bearer(ctx)
	if sess, _ := s.sessionOf(ctx, presented); sess != nil {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"auth_method": "external_oauth", "provider": sess.Provider, "sub": sess.Subject,
			"email": sess.Email, "name": sess.Name, "roles": []string{sess.Role}, "groups": sess.Groups, "iss": sess.Issuer,
			"expires_at": sess.ExpiresAt})
		return nil
	}
	if presented != nil && s.cfg.APIKey != "" {
		sum := hashKey(string(presented))
		if subtle.ConstantTimeCompare(sum[:], s.keyHash[:]) == 1 {
			writeJSON(ctx, fasthttp.StatusOK, map[string]any{"auth_method": "api_key", "issuer": ""})
			return nil
		}
	}
	if s.deps.Auth == nil || presented == nil {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="fangd"`)
		return &apiError{fasthttp.StatusUnauthorized, "unauthorized", "sign in first, or send a provider's access token as a bearer"}
	}
	provider, claims, err := s.deps.Auth.UserInfo(s.reqCtxWait(ctx), string(presented))
	if err != nil {
		return err
	}
	claims["provider"] = provider
	claims["auth_method"] = "external_oauth"
	writeJSON(ctx, fasthttp.StatusOK, claims)
	return nil
}

// authIntrospect serves POST /api/auth/introspect (RFC 7662): form body
// token; inactive or unknown answers only {"active": false}.
func (s *Server) authIntrospect(ctx *fasthttp.RequestCtx) error {
	token := string(ctx.PostArgs().Peek("token"))
	if token == "" {
		var b struct {
			Token    string `json:"token"`
			Provider string `json:"provider"`
		}
		if strings.HasPrefix(string(ctx.Request.Header.ContentType()), "application/json") {
			if err := decodeJSON(ctx, &b); err != nil {
				return err
			}
		}
		token = b.Token
	}
	if token == "" {
		return badRequest("invalid_request", "token is required (form field token)")
	}
	if s.deps.Auth == nil {
		writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"active": false})
		return nil
	}
	res := s.deps.Auth.Introspect(s.reqCtxWait(ctx), token)
	if !res.Active {
		writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"active": false})
		return nil
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}
