package http

import "github.com/valyala/fasthttp"

// LibreFang's dashboard sign-in routes (server.rs, routes/passkey.rs).
// fangd has no dashboard accounts: callers hold an API key ([http]
// api_key or a [[users]] key) or sign in with OIDC ([external_auth]). The
// mode check answers what is true here; the password and passkey routes
// answer 501 naming the route, so a LibreFang client is told why rather
// than getting a 404 as if its daemon were missing a route by accident.

const whyNoDashboardAccounts = "fangd has no dashboard username/password accounts or passkeys; authenticate with an API key ([http] api_key or [[users]]) or sign in with OIDC (GET /api/auth/login, [external_auth])"

func (s *Server) authLibreFangRoutes() {
	s.api("GET", "/auth/dashboard-check", s.dashboardCheck, public)
	// Public like LibreFang's: a client that has no credential yet gets
	// the 501 (and its reason), not a 401 that suggests a key would help.
	for _, r := range []struct{ method, path string }{
		{"POST", "/auth/dashboard-login"}, {"POST", "/auth/change-password"},
		{"POST", "/auth/passkey/registration-options"}, {"POST", "/auth/passkey/registration-verify"},
		{"POST", "/auth/passkey/authentication-options"}, {"POST", "/auth/passkey/authentication-verify"},
		{"GET", "/auth/passkey/credentials"}, {"DELETE", "/auth/passkey/credentials/{id}"},
	} {
		s.api(r.method, r.path, notBuilt(r.method+" /api"+r.path, whyNoDashboardAccounts), public)
	}
}

// dashboardCheck serves GET /api/auth/dashboard-check (public): LibreFang's
// {mode, username} for the dashboard's login form. mode is "api_key" when
// a key is required (the shared key or [[users]] keys), else "none"; never
// "credentials" or "hybrid" (no password accounts). username is always
// empty, as LibreFang's. fangd adds oidc: whether OIDC sign-in is on.
func (s *Server) dashboardCheck(ctx *fasthttp.RequestCtx) error {
	mode := "none"
	if s.cfg.APIKey != "" || len(s.cfg.Users) > 0 {
		mode = "api_key"
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"mode": mode, "username": "", "oidc": s.deps.Auth != nil})
	return nil
}
