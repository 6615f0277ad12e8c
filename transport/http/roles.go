package http

import (
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"github.com/valyala/fasthttp"
)

// Roles. Every identity has one (docs/pairing.md, "Roles"): the API key
// and loopback callers without a key are admin; a paired device is
// device; a [[users]] key or a signed-in user has the role configured for
// it. authorize is the one place a role is checked against a route.
const (
	RoleAdmin    = "admin"    // everything
	RoleOperator = "operator" // agents, channels, approvals, comms; no config, keys or audit export
	RoleViewer   = "viewer"   // reads
	RoleDevice   = "device"   // notifications, approvals, its own record
)

// ValidRole reports whether r is a role fangd knows.
func ValidRole(r string) bool {
	switch r {
	case RoleAdmin, RoleOperator, RoleViewer, RoleDevice:
		return true
	}
	return false
}

// User is a named API key of [[users]] with its role.
type User struct {
	Name string
	Role string
	// KeyHash is the SHA-256 of the key (LibreFang's "$sha256$<hex>").
	KeyHash [32]byte
}

// ParseKeyHash reads LibreFang's "$sha256$<hex>" key hash.
func ParseKeyHash(s string) ([32]byte, bool) {
	var h [32]byte
	rest, ok := strings.CutPrefix(s, "$sha256$")
	if !ok {
		return h, false
	}
	b, err := hex.DecodeString(rest)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// userKey finds the [[users]] entry whose key was presented, visiting
// every entry in constant time.
func (s *Server) userKey(sum [32]byte) (User, bool) {
	var found User
	ok := false
	for _, u := range s.cfg.Users {
		if subtle.ConstantTimeCompare(sum[:], u.KeyHash[:]) == 1 {
			found, ok = u, true
		}
	}
	return found, ok
}

// roleOf is the role of an authenticated actor string.
func (s *Server) roleOf(actor string) string {
	switch {
	case strings.HasPrefix(actor, "device:"):
		return RoleDevice
	case strings.HasPrefix(actor, "user:"):
		name := actor[len("user:"):]
		for _, u := range s.cfg.Users {
			if u.Name == name {
				return u.Role
			}
		}
		return RoleViewer
	}
	// api_key, loopback (no key configured), anonymous on public routes,
	// peer:<name> on the A2A routes that admit peers.
	return RoleAdmin
}

// operatorDenied are the routes an operator may not use: configuration,
// keys and credentials, and the audit log's export and acceptance.
func operatorDenied(method, route string) bool {
	switch {
	case strings.HasPrefix(route, "/admin/"),
		route == "/audit/export", route == "/audit/accept",
		route == "/pairing/request", strings.HasPrefix(route, "/pairing/devices") && method != "GET",
		strings.HasPrefix(route, "/approvals/totp") && method != "GET",
		strings.HasPrefix(route, "/budget") && method != "GET",
		route == "/logs/level" && method != "GET",
		strings.HasPrefix(route, "/mcp/servers") && method != "GET",
		route == "/mcp/reload":
		return true
	}
	return false
}

// deviceAllowed are the routes a paired device may use.
func deviceAllowed(method, route string) bool {
	switch method {
	case "GET", "HEAD":
		switch route {
		case "/approvals", "/approvals/{id}", "/approvals/count", "/pairing/me":
			return true
		}
	case "POST":
		switch route {
		case "/approvals/{id}/approve", "/approvals/{id}/reject":
			return true
		}
	}
	return false
}

// allowed decides one request of role on a route pattern (as registered,
// "/api/v1" and "/api" taken off).
func allowed(role, method, route string) bool {
	route = strings.TrimPrefix(route, "/api/v1")
	route = strings.TrimPrefix(route, "/api")
	read := method == "GET" || method == "HEAD"
	switch role {
	case RoleAdmin:
		return true
	case RoleOperator:
		return !operatorDenied(method, route)
	case RoleViewer:
		if method == "POST" && (route == "/auth/introspect" || route == "/auth/logout") {
			return true // reads in all but method
		}
		return read && !operatorDenied(method, route) && route != "/logs/stream"
	case RoleDevice:
		return deviceAllowed(method, route)
	}
	return false
}

// authorize answers 403 when the caller's role does not allow the route.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, actor, route string) error {
	role, ok := ctx.UserValue(userRoleKey).(string)
	if !ok {
		role = s.roleOf(actor)
	}
	if role == RoleAdmin {
		return nil // the common case, without converting the method
	}
	if allowed(role, string(ctx.Method()), route) {
		return nil
	}
	return &apiError{fasthttp.StatusForbidden, "forbidden",
		"role '" + role + "' is not allowed to " + string(ctx.Method()) + " " + string(ctx.Path())}
}
