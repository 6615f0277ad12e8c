package http

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
)

// The edge of the server: which Host names it answers to (DNS rebinding),
// which browser origins may read its answers (CORS), and which peers are
// reverse proxies whose forwarding headers name the real client.

// edge is the checked form of Config.AllowedHosts, CORSOrigins and
// TrustedProxies.
type edge struct {
	allowedHosts map[string]bool
	corsOrigins  map[string]bool
	proxies      []netip.Prefix
}

// ValidateEdge checks allowed_hosts, cors_origins and trusted_proxies,
// naming the key and the entry at fault (config check and New use it).
func (c Config) ValidateEdge() error {
	_, err := newEdge(c)
	return err
}

func newEdge(c Config) (edge, error) {
	e := edge{allowedHosts: map[string]bool{}, corsOrigins: map[string]bool{}}
	for _, h := range c.AllowedHosts {
		name := strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
		if name == "" || strings.ContainsAny(name, "/ \t*@?#") || (strings.Contains(name, ":") && !isIPv6(name)) {
			return e, fmt.Errorf("allowed_hosts: %q is not a host name or IP address (no scheme, port, path or wildcard)", h)
		}
		e.allowedHosts[name] = true
	}
	for _, o := range c.CORSOrigins {
		origin, err := parseOrigin(o)
		if err != nil {
			return e, fmt.Errorf("cors_origins: %q: %v", o, err)
		}
		e.corsOrigins[origin] = true
	}
	for _, p := range c.TrustedProxies {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return e, fmt.Errorf("trusted_proxies: %q is not a CIDR (\"127.0.0.1/32\") or an IP address", p)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		e.proxies = append(e.proxies, prefix.Masked())
	}
	return e, nil
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// parseOrigin accepts scheme://host[:port] and returns it lower-cased, as
// browsers send it in the Origin header. "*" and "null" are refused: the
// API's only protection from a web page, with no API key set, is that the
// page cannot read its answers.
func parseOrigin(o string) (string, error) {
	o = strings.ToLower(strings.TrimSuffix(o, "/"))
	scheme, rest, ok := strings.Cut(o, "://")
	switch {
	case o == "*" || o == "null":
		return "", errors.New("wildcard and null origins are not allowed; list each origin")
	case !ok || (scheme != "http" && scheme != "https"):
		return "", errors.New("want scheme://host[:port] with scheme http or https")
	case rest == "" || strings.ContainsAny(rest, "/?#@ \t*"):
		return "", errors.New("want scheme://host[:port] with no path, query, user or wildcard")
	}
	return o, nil
}

// ---- Host check ----

// hostChecked says whether the Host check applies to a request. With no
// API key, a loopback listener answers anyone who can reach it, including a
// web page whose name was rebound to 127.0.0.1: the Host header is then
// the only sign of the attack. With a key, such a page has no credentials,
// so the check applies only when the operator lists allowed_hosts. /mcp
// keeps the MCP SDK's rule on top: on a loopback listener its Host must be
// loopback even with a key (the check fangd folded in from the SDK).
func (s *Server) hostChecked(ctx *fasthttp.RequestCtx, o routeOpts) bool {
	if s.cfg.APIKey == "" || len(s.edge.allowedHosts) > 0 {
		return true
	}
	if o.loopbackHost {
		if a, ok := ctx.LocalAddr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
			return true
		}
	}
	return false
}

var errHostNotAllowed = &apiError{fasthttp.StatusForbidden, "host_not_allowed",
	"the Host header names neither a loopback address nor a name in allowed_hosts (DNS rebinding protection)"}

// checkHost refuses a request whose Host is not a loopback name or
// address and not in allowed_hosts, when the check applies.
func (s *Server) checkHost(ctx *fasthttp.RequestCtx, o routeOpts) error {
	if !s.hostChecked(ctx, o) {
		return nil
	}
	name := hostName(ctx.Host())
	if loopbackName(name) || s.edge.allowedHosts[string(name)] {
		return nil
	}
	s.metrics.hostRefused.Inc()
	return errHostNotAllowed
}

// hostName lower-cases a Host value and strips its port, the brackets of
// an IPv6 literal and a trailing dot.
func hostName(host []byte) []byte {
	h := bytes.ToLower(host)
	if len(h) > 0 && h[0] == '[' {
		if end := bytes.IndexByte(h, ']'); end > 0 {
			return h[1:end]
		}
		return nil
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return bytes.TrimSuffix(h, []byte("."))
}

// loopbackName is localhost, a name under .localhost (RFC 6761 §6.3: they
// resolve to loopback and no one can register them, so a rebinding page
// cannot live there), or a loopback IP literal (any of 127.0.0.0/8, ::1).
func loopbackName(name []byte) bool {
	if string(name) == "localhost" || bytes.HasSuffix(name, []byte(".localhost")) {
		return true
	}
	a, err := netip.ParseAddr(string(name))
	return err == nil && a.Unmap().IsLoopback()
}

// ---- CORS ----

var (
	corsAllowHeaders  = []byte("Authorization, X-API-Key, Content-Type, X-Request-Id, Last-Event-ID, Mcp-Session-Id, MCP-Protocol-Version")
	corsExposeHeaders = []byte("X-Request-Id, Retry-After, WWW-Authenticate, Mcp-Session-Id")
)

// cors adds the CORS answer headers when the request's Origin is in
// cors_origins, and reports whether it was. Other origins get no CORS
// headers at all, so browsers keep the answer from the page.
func (s *Server) cors(ctx *fasthttp.RequestCtx) bool {
	if len(s.edge.corsOrigins) == 0 {
		return false
	}
	h := &ctx.Response.Header
	// The answer depends on Origin whenever CORS is configured, also for
	// requests without one, so caches must key on it.
	h.Set("Vary", "Origin")
	origin := ctx.Request.Header.Peek("Origin")
	if len(origin) == 0 || !s.edge.corsOrigins[strings.ToLower(string(origin))] {
		return false
	}
	h.SetBytesV("Access-Control-Allow-Origin", origin)
	h.SetBytesV("Access-Control-Expose-Headers", corsExposeHeaders)
	return true
}

// preflightFor is the method a CORS preflight asks about, when the request
// is one and the path has a route for that method. Other preflights go on
// through the chain, to their 404 or 405.
func (s *Server) preflightFor(ctx *fasthttp.RequestCtx) (string, bool) {
	method := string(ctx.Request.Header.Peek("Access-Control-Request-Method"))
	if !ctx.IsOptions() || method == "" {
		return "", false
	}
	h, _ := s.router.Lookup(method, string(ctx.Path()), ctx)
	return method, h != nil
}

// answerPreflight answers a listed origin's preflight: 204 with the
// requested method and the headers the API reads.
func answerPreflight(ctx *fasthttp.RequestCtx, method string) {
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Methods", method)
	h.SetBytesV("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", "600")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

var errOriginNotAllowed = &apiError{fasthttp.StatusForbidden, "origin_not_allowed",
	"cross-origin requests that change state are refused unless the origin is in cors_origins"}

// checkOrigin refuses a state-changing request a browser sent from another
// origin that cors_origins does not list. CORS only keeps the answer from
// the page: a "simple" cross-origin POST (no body, or a form) is still sent
// and runs, and with no API key a loopback fangd would run it for any web
// page the user visits. Browsers mark such requests with Sec-Fetch-Site
// or, older ones, with an Origin that differs from the Host; clients that
// are not browsers send neither. Routes that authenticate by their own
// token or signature (hooks, platform callbacks) are not cookie- or
// address-authenticated, so the rule does not apply to them.
func (s *Server) checkOrigin(ctx *fasthttp.RequestCtx, o routeOpts, listed bool) error {
	if listed || o.ownAuth || o.platformCallback || !isMutating(ctx) {
		return nil
	}
	h := &ctx.Request.Header
	if site := h.Peek("Sec-Fetch-Site"); len(site) > 0 {
		if string(site) == "same-origin" || string(site) == "none" {
			return nil
		}
		return errOriginNotAllowed
	}
	origin := h.Peek("Origin")
	if len(origin) == 0 {
		return nil
	}
	if _, host, ok := bytes.Cut(origin, []byte("://")); ok && bytes.EqualFold(host, ctx.Host()) {
		return nil
	}
	return errOriginNotAllowed
}

// ---- client address behind trusted proxies ----

const userClient = "fangd.client"

// forwardedClient is the client a trusted proxy named.
type forwardedClient struct {
	ip       net.IP
	loopback bool
}

// clientIP is the request's client: the TCP peer, or, when the peer is a
// trusted proxy, the address its forwarding headers name (resolveClient).
func clientIP(ctx *fasthttp.RequestCtx) net.IP {
	if c, ok := ctx.UserValue(userClient).(*forwardedClient); ok {
		return c.ip
	}
	return ctx.RemoteIP()
}

// loopbackClient is the loopback rule (no API key: loopback callers only;
// exempt_loopback): a proxied request counts as loopback only when the
// client its trusted proxy names is on loopback.
func loopbackClient(ctx *fasthttp.RequestCtx) bool {
	if c, ok := ctx.UserValue(userClient).(*forwardedClient); ok {
		return c.loopback
	}
	return directLoopback(ctx)
}

// directLoopback is a loopback peer that is not a reverse proxy relaying
// someone else: a loopback request with forwarding headers from a peer
// that is not a trusted proxy is treated as remote (LibreFang issue #3558).
func directLoopback(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	return ctx.RemoteIP().IsLoopback() && len(h.Peek("X-Forwarded-For")) == 0 &&
		len(h.Peek("X-Real-Ip")) == 0 && len(h.Peek("Forwarded")) == 0
}

// resolveClient, when the TCP peer is a trusted proxy that sent
// X-Forwarded-For or Forwarded, records the client those name for
// clientIP and loopbackClient. Untrusted peers' headers are ignored.
func (s *Server) resolveClient(ctx *fasthttp.RequestCtx) {
	if len(s.edge.proxies) == 0 {
		return
	}
	peer := ctx.RemoteIP()
	if !s.trusted(peer) {
		return
	}
	h := &ctx.Request.Header
	var hops []string
	// X-Forwarded-For first: nginx, Caddy, Traefik and HAProxy append to
	// it by default and pass Forwarded through untouched; Forwarded only
	// when no proxy set X-Forwarded-For.
	if xff := h.PeekAll("X-Forwarded-For"); len(xff) > 0 {
		for _, v := range xff {
			for _, hop := range strings.Split(string(v), ",") {
				hops = append(hops, strings.TrimSpace(hop))
			}
		}
	} else if fwd := h.PeekAll("Forwarded"); len(fwd) > 0 {
		for _, v := range fwd {
			hops = append(hops, forwardedFor(string(v))...)
		}
	} else {
		return
	}
	ctx.SetUserValue(userClient, s.rightmostUntrusted(peer, hops))
}

// rightmostUntrusted walks the hops from the nearest one back and returns
// the first address that is not a trusted proxy: everything to its left
// was written by that client and may be forged. A hop that is not an
// address ("unknown", an obfuscated name) ends the walk: the client is
// then not known, is keyed by the last proxy that spoke, and is never
// treated as loopback.
func (s *Server) rightmostUntrusted(peer net.IP, hops []string) *forwardedClient {
	last := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return &forwardedClient{ip: last}
		}
		ip := net.IP(a.AsSlice())
		if !s.trusted(ip) {
			return &forwardedClient{ip: ip, loopback: a.IsLoopback()}
		}
		last = ip
	}
	// Every hop is a trusted proxy: the leftmost is the client.
	return &forwardedClient{ip: last, loopback: last.IsLoopback()}
}

func (s *Server) trusted(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	for _, p := range s.edge.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one forwarded address: 192.0.2.1, 192.0.2.1:80,
// 2001:db8::1, [2001:db8::1]:80, optionally quoted.
func parseHop(hop string) (netip.Addr, bool) {
	hop = strings.Trim(strings.TrimSpace(hop), `"`)
	if ap, err := netip.ParseAddrPort(hop); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(hop, "[]"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// forwardedFor returns the for= value of each element of an RFC 7239
// Forwarded header, in order; an element without one counts as an unknown
// hop.
func forwardedFor(v string) []string {
	var out []string
	for _, elem := range strings.Split(v, ",") {
		hop := "unknown"
		for _, pair := range strings.Split(elem, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if ok && strings.EqualFold(k, "for") {
				hop = val
			}
		}
		out = append(out, hop)
	}
	return out
}
