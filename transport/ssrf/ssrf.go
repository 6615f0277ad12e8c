// Package ssrf guards outbound HTTP requests that go to URLs a user or a
// remote party supplied (webhooks, A2A peers, MCP servers): only http and
// https, no loopback, private, link-local, CGNAT, multicast, reserved or
// unspecified addresses unless the operator's allowlist says so, the
// resolved address pinned for the connection (no DNS rebinding between the
// check and the dial), and no redirects.
//
// Use one Guard per daemon: Check a URL when it is configured (a clear 400
// at the API), and send every request through Guard.Client, which checks
// again at dial time.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Resolver looks up a host's addresses. net.DefaultResolver is one; tests
// inject a fake so that they never depend on or reach real DNS.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Error is a refused or unusable URL. Reason is safe to show to the caller:
// it names the host and the rule, never the URL's path or query (a
// Telegram bot token lives in the path).
type Error struct {
	URL    string
	Reason string
	// Code is a stable machine code. Refusals by the policy: bad_url,
	// bad_scheme, blocked_address. Not a refusal, the name lookup failed:
	// host_not_found (the name does not exist or has no address),
	// dns_failed (the resolver did not answer).
	Code string
	// Class is the address class a blocked_address refusal is about
	// ("loopback", "private", "link-local" ...).
	Class string
	// Err is the resolver's error for host_not_found and dns_failed.
	Err error
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Err }

// Policy reports whether e is a refusal by the network policy (as opposed
// to a name that did not resolve).
func (e *Error) Policy() bool {
	switch e.Code {
	case CodeBadURL, CodeBadScheme, CodeBlocked:
		return true
	}
	return false
}

// The codes of Error.
const (
	CodeBadURL       = "bad_url"
	CodeBadScheme    = "bad_scheme"
	CodeBlocked      = "blocked_address"
	CodeHostNotFound = "host_not_found"
	CodeDNSFailed    = "dns_failed"
)

// IsBlocked reports whether err is (or wraps) a refusal by the network
// policy. A host that merely does not resolve is not blocked: it may
// resolve later, and saying "refused" would send the operator to the
// allowlist for nothing.
func IsBlocked(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Policy()
}

// neverAllowed are the address classes no allowlist entry admits: saying
// "add it to allow_hosts" about them would be a lie.
func neverAllowed(class string) bool { return strings.HasPrefix(class, "link-local") }

// refusal builds the blocked_address error for host at ip of class,
// naming the rule and, when there is one, the way to allow it.
func refusal(host string, ip netip.Addr, class string) *Error {
	var b strings.Builder
	b.WriteString("host ")
	b.WriteString(host)
	if ip.IsValid() && host != ip.String() {
		b.WriteString(" resolves to ")
		b.WriteString(ip.String())
		b.WriteString(",")
	}
	if neverAllowed(class) {
		b.WriteString(" a " + class + " address (cloud metadata and link-local services): never allowed, whatever allow_hosts says")
	} else {
		b.WriteString(" a " + class + " address, which [network_policy] allow_hosts does not list; add the address, its CIDR or the host name to allow_hosts to permit it")
	}
	return &Error{Code: CodeBlocked, Class: class, Reason: b.String()}
}

// Guard checks and dials outbound addresses.
type Guard struct {
	resolver Resolver
	// allow is swapped whole by SetAllowHosts (config reload); every
	// check reads one consistent list.
	allow  atomic.Pointer[allowList]
	dialer *net.Dialer
}

type allowList struct {
	nets  []netip.Prefix
	hosts []string // lower-case literals or "*.suffix" globs
}

// Option configures a Guard.
type Option func(*Guard)

// WithResolver replaces the system resolver.
func WithResolver(r Resolver) Option { return func(g *Guard) { g.resolver = r } }

// New builds a guard whose allowlist holds CIDRs ("10.0.0.0/8",
// "127.0.0.1/32"), host names ("hooks.lan") and host globs ("*.lan").
// A bad entry is an error that names it. Link-local addresses
// (169.254.0.0/16, fe80::/10: cloud metadata services) can never be
// allowed.
func New(allowHosts []string, opts ...Option) (*Guard, error) {
	g := &Guard{resolver: net.DefaultResolver, dialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
	for _, o := range opts {
		o(g)
	}
	if err := g.SetAllowHosts(allowHosts); err != nil {
		return nil, err
	}
	return g, nil
}

// SetAllowHosts replaces the allowlist (same forms as New). A bad entry is
// an error that names it, and the list in force stays as it was.
func (g *Guard) SetAllowHosts(allowHosts []string) error {
	l := &allowList{}
	for _, raw := range allowHosts {
		entry := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case entry == "":
			return errors.New("allow_hosts: empty entry")
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return fmt.Errorf("allow_hosts: %q is not a valid CIDR", raw)
			}
			p = p.Masked()
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			l.nets = append(l.nets, p)
		default:
			if ip, err := netip.ParseAddr(entry); err == nil {
				ip = ip.Unmap()
				l.nets = append(l.nets, netip.PrefixFrom(ip, ip.BitLen()))
				continue
			}
			host := strings.TrimPrefix(entry, "*.")
			if host == "" || strings.ContainsAny(host, "*:@ ") {
				return fmt.Errorf("allow_hosts: %q is not a host name, a *.suffix glob or a CIDR", raw)
			}
			l.hosts = append(l.hosts, entry)
		}
	}
	g.allow.Store(l)
	return nil
}

// hostAllowed reports whether the host name is on the allowlist.
func (g *Guard) hostAllowed(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range g.allow.Load().hosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// addrAllowed decides one resolved address. hostOK means the host name was
// allowlisted, which admits any address except link-local.
func (g *Guard) addrAllowed(ip netip.Addr, hostOK bool) (bool, string) {
	ip = ip.Unmap()
	if linkLocal(ip) {
		return false, "link-local"
	}
	for _, p := range g.allow.Load().nets {
		if p.Contains(ip) {
			return true, ""
		}
	}
	if hostOK {
		return true, ""
	}
	if why := Classify(ip); why != "" {
		return false, why
	}
	return true, ""
}

// Parse checks a URL's shape without resolving it: absolute http(s), a
// host, no user info. It returns the parsed URL.
func Parse(raw string) (*url.URL, error) {
	if len(raw) > 2048 {
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url is longer than 2048 characters"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url does not parse"}
	}
	switch u.Scheme {
	case "http", "https":
	case "":
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url must be absolute (http:// or https://)"}
	default:
		return nil, &Error{URL: raw, Code: CodeBadScheme, Reason: "url scheme " + u.Scheme + " is not allowed; use http or https"}
	}
	if u.Hostname() == "" {
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url has no host"}
	}
	if u.User != nil {
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url must not carry user:password; use headers or a secret"}
	}
	if u.Fragment != "" {
		return nil, &Error{URL: raw, Code: CodeBadURL, Reason: "url must not have a #fragment"}
	}
	return u, nil
}

// Check parses raw and resolves its host now, refusing it if any address it
// resolves to is not allowed. Use it when a URL is configured, so that the
// caller gets a clear 400; requests are checked again when they dial.
func (g *Guard) Check(ctx context.Context, raw string) (*url.URL, error) {
	u, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if _, err := g.resolve(ctx, u.Hostname()); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.URL = raw
		}
		return nil, err
	}
	return u, nil
}

// CheckStatic is Check without a name lookup: it refuses a malformed URL,
// a scheme other than http(s), localhost and a literal address the policy
// does not allow, and lets every other host name through to be judged when
// it is dialled (through Client or DialContext). Use it where a lookup is
// unwelcome (config loading, a configure call with default URLs) and the
// dial goes through the guard anyway.
func (g *Guard) CheckStatic(raw string) (*url.URL, error) {
	u, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	host := u.Hostname()
	hostOK := g.hostAllowed(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.WithZone("").Unmap()
		if ok, why := g.addrAllowed(ip, hostOK); !ok {
			e := refusal(host, ip, why)
			e.URL = raw
			return nil, e
		}
		return u, nil
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") && !hostOK {
		e := refusal(host, netip.Addr{}, "loopback")
		e.URL = raw
		return nil, e
	}
	return u, nil
}

// resolve returns the host's addresses if all of them are allowed. A host
// that resolves to a mix of public and private addresses is refused as a
// whole: picking the public one would let a rebinding attacker flip it.
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	hostOK := g.hostAllowed(host)
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		addrs = []netip.Addr{ip.WithZone("")}
	} else {
		if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") && !hostOK {
			return nil, refusal(host, netip.Addr{}, "loopback")
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err = g.resolver.LookupNetIP(rctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			return nil, lookupError(host, err)
		}
	}
	for _, ip := range addrs {
		if ok, why := g.addrAllowed(ip, hostOK); !ok {
			return nil, refusal(host, ip.Unmap(), why)
		}
	}
	return addrs, nil
}

// lookupError tells a name that does not exist (or has no address) from a
// resolver that failed to answer: the first is the operator's typo, the
// second a DNS outage.
func lookupError(host string, err error) *Error {
	var de *net.DNSError
	switch {
	case err == nil:
		return &Error{Code: CodeHostNotFound, Reason: "host " + host + " does not resolve (no address)"}
	case errors.As(err, &de) && de.IsNotFound:
		return &Error{Code: CodeHostNotFound, Reason: "host " + host + " does not resolve (no such host)", Err: err}
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeDNSFailed, Reason: "host " + host + " could not be looked up: the DNS resolver did not answer in time", Err: err}
	}
	return &Error{Code: CodeDNSFailed, Reason: "host " + host + " could not be looked up: the DNS resolver failed", Err: err}
}

// DialContext resolves addr's host, checks every address and connects to
// an allowed one by IP, so the connection goes exactly where the check
// looked.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, ip := range addrs {
		conn, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// ErrRedirect is returned for a 3xx answer: redirects are never followed,
// since the target could be anything.
var ErrRedirect = errors.New("redirect not followed")

// Client returns an HTTP client that dials through the guard, ignores
// proxy environment variables (a proxy would make the check meaningless),
// follows no redirect (a 3xx is returned as the response) and gives up
// after timeout.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       g.DialContext,
		ForceAttemptHTTP2: true,
		// Many endpoints often share a receiver host: keep a connection
		// per endpoint alive instead of re-dialing.
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")
	ietf      = netip.MustParsePrefix("192.0.0.0/24")
	bench     = netip.MustParsePrefix("198.18.0.0/15")
	reserved4 = netip.MustParsePrefix("240.0.0.0/4")
	test4     = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")}
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	nat64L    = netip.MustParsePrefix("64:ff9b:1::/48")
	sixTo4    = netip.MustParsePrefix("2002::/16")
	discard6  = netip.MustParsePrefix("100::/64")
	doc6      = netip.MustParsePrefix("2001:db8::/32")
	site6     = netip.MustParsePrefix("fec0::/10")
	compat6   = netip.MustParsePrefix("::/96")
)

func linkLocal(ip netip.Addr) bool {
	return ip.Unmap().IsLinkLocalUnicast()
}

// Classify names the kind of non-public address ip is ("loopback",
// "private", "link-local", "CGNAT", "multicast", "unspecified", "reserved",
// "documentation"), or "" for a public address. IPv4 addresses mapped or
// embedded in IPv6 (::ffff:a.b.c.d, NAT64, 6to4) are judged by the IPv4
// address inside.
func Classify(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		switch {
		case nat64.Contains(ip), compat6.Contains(ip) && !ip.IsUnspecified() && !ip.IsLoopback():
			b := ip.As16()
			if why := Classify(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})); why != "" {
				return why + " (embedded IPv4)"
			}
		case sixTo4.Contains(ip):
			b := ip.As16()
			if why := Classify(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})); why != "" {
				return why + " (6to4)"
			}
		}
	}
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified(), ip.Is4() && thisNet.Contains(ip):
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsMulticast():
		return "multicast"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsPrivate(), site6.Contains(ip):
		return "private"
	case cgnat.Contains(ip):
		return "CGNAT"
	case ip.Is4() && (ietf.Contains(ip) || bench.Contains(ip) || reserved4.Contains(ip)):
		return "reserved"
	case ip.Is6() && (discard6.Contains(ip) || nat64L.Contains(ip)):
		return "reserved"
	case ip.Is6() && doc6.Contains(ip):
		return "documentation"
	}
	for _, p := range test4 {
		if p.Contains(ip) {
			return "documentation"
		}
	}
	return ""
}
