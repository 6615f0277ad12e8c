package channel

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/fangd/fangd/transport/neterr"
)

// Network is the outbound network policy every adapter dials through
// (transport/ssrf.Guard implements it): api_url, homeserver_url,
// server_url, gateway_url, callback_url... are URLs a user typed, and a bot
// token often travels in them, so they get the same checks as webhooks,
// MCP and A2A.
type Network interface {
	// CheckStatic refuses, without a lookup, a URL the policy can judge
	// from its text (scheme, literal address, localhost). Host names are
	// judged when dialled.
	CheckStatic(raw string) (*url.URL, error)
	// Client is an HTTP client whose every dial is checked and pinned to
	// the checked address, with no proxy and no redirects.
	Client(timeout time.Duration) *http.Client
	// DialContext connects like Client does, for websockets and other
	// clients that take a dial function.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// HTTPClient is the client an adapter makes its calls with: through the
// runtime's network policy when there is one (the daemon always has one),
// else a plain client (adapter unit tests).
func (c *Config) HTTPClient(timeout time.Duration) *http.Client {
	if c.Net != nil {
		return c.Net.Client(timeout)
	}
	return &http.Client{Timeout: timeout}
}

// DialContext is the policy's dial function for an adapter's non-HTTP
// connections (websockets), or nil without a policy (use the library's
// default dialer then). With a policy, use no proxy: it would make the
// policy's view of the address meaningless.
func (c *Config) DialContext() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.Net != nil {
		return c.Net.DialContext
	}
	return nil
}

// checkURLs runs every URL field the adapter dials (its own value or the
// default) past the network policy: a refused one is a 400 that names the
// field and the rule, before anything is stored or dialled.
func checkURLs(cfg *Config) error {
	if cfg.Net == nil {
		return nil
	}
	for _, f := range cfg.Spec.Fields {
		if !f.Dialed {
			continue
		}
		raw := cfg.Text(f.Key)
		if raw == "" {
			continue
		}
		if _, err := cfg.Net.CheckStatic(raw); err != nil {
			return neterr.Classify(err, "field "+f.Key)
		}
	}
	return nil
}
