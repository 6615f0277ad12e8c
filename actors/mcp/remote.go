package mcp

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// remoteClient is the HTTP client of one http or sse server: it adds the
// server's headers (its credentials) to every request it makes and to no
// other, dials only through the network policy when one is set, never
// follows redirects (a redirect could carry the headers elsewhere), and
// remembers the last status so that 401/403 can be told apart from an
// outage.
type remoteClient struct {
	*http.Client
	lastStatus atomic.Int32
}

// tokens, when not nil, puts the server's stored OAuth access token into
// every request that carries no configured Authorization header.
func newRemoteClient(headers http.Header, policy URLPolicy, timeout time.Duration, tokens *storedTokens) *remoteClient {
	base := &http.Transport{
		Proxy:                 nil, // a proxy would bypass the policy's view of the address
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		ForceAttemptHTTP2:     true,
	}
	if policy != nil {
		base.DialContext = policy.DialContext
	}
	rc := &remoteClient{}
	rc.Client = &http.Client{
		Transport: &headerTransport{base: base, headers: headers, tokens: tokens, rc: rc},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return rc
}

type headerTransport struct {
	base    http.RoundTripper
	headers http.Header
	tokens  *storedTokens
	rc      *remoteClient
}

func (t *headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(t.headers) > 0 || t.tokens != nil {
		req = req.Clone(req.Context())
		for k, vs := range t.headers {
			req.Header[k] = vs
		}
	}
	if t.tokens != nil && req.Header.Get("Authorization") == "" {
		tok, err := t.tokens.Token()
		if err != nil {
			if errors.Is(err, errAuthRequired) {
				t.rc.lastStatus.Store(http.StatusUnauthorized)
			}
			return nil, err
		}
		tok.SetAuthHeader(req)
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		t.rc.lastStatus.Store(int32(resp.StatusCode))
	}
	return resp, err
}

// denied reports whether the server refused our credentials.
func (rc *remoteClient) denied() bool {
	s := rc.lastStatus.Load()
	return s == http.StatusUnauthorized || s == http.StatusForbidden
}
