package http

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/webhook"
)

// Request routing in cluster mode (docs/cluster.md "Request routing"): a
// request that needs an entity another node hosts (a channel's test
// message, a comms send to it) is forwarded to the hosting node's HTTP API
// with the caller's credential, and the host's answer is relayed as is.

// forwardedHeader marks a forwarded request, naming the node that
// forwarded it. A request carrying it is never forwarded again: two nodes
// with different views of who hosts a channel cannot bounce a request
// between them. A client setting it only turns routing off for its own
// request, so it needs no trust.
const forwardedHeader = "X-Fangd-Forwarded-By"

// forwardTimeout bounds one forwarded request. A channel's test message
// waits for the platform (20 s in the channel actor), so this is the
// longest one routed call may take; connecting is bounded separately.
const (
	forwardTimeout     = 30 * time.Second
	forwardDialTimeout = 2 * time.Second
)

// forwardHeaders are the request headers a forwarded request carries: the
// credential (the host authenticates and authorizes the caller itself),
// the body's type and the request id for tracing across nodes.
var forwardHeaders = []string{"Authorization", "X-Api-Key", "Content-Type", "Accept", "X-Request-Id"}

// hostedElsewhere is the cause of an error that says which cluster node
// hosts the entity a request needs (channel.HostedElsewhere,
// webhook.HostedElsewhere, agentElsewhere): what names the entity ("channel tg").
type hostedElsewhere interface {
	error
	Host() (what, node string)
}

var (
	_ hostedElsewhere = (*channel.HostedElsewhere)(nil)
	_ hostedElsewhere = (*webhook.HostedElsewhere)(nil)
	_ hostedElsewhere = (*agentElsewhere)(nil)
	_ hostedElsewhere = (*mcp.HostedElsewhere)(nil)
	_ hostedElsewhere = (*a2aElsewhere)(nil)
)

// forwardTimeout is the longest a forwarded agent request may take.
func (e *agentElsewhere) forwardTimeout() time.Duration { return e.Timeout }

// hostRouter forwards requests for entities hosted on other nodes.
type hostRouter struct {
	// nodeURL is the HTTP base URL of the live node named node.
	nodeURL func(ctx context.Context, node string) (string, error)
	self    string // this node's name, sent in forwardedHeader
	client  *fasthttp.Client
	timeout time.Duration
	log     zerolog.Logger
}

func newHostRouter(self string, nodeURL func(context.Context, string) (string, error), log zerolog.Logger) *hostRouter {
	return &hostRouter{
		nodeURL: nodeURL,
		self:    self,
		timeout: forwardTimeout,
		log:     log,
		client: &fasthttp.Client{
			Name:                     "fangd-cluster-forward",
			NoDefaultUserAgentHeader: true,
			Dial: func(addr string) (net.Conn, error) {
				return fasthttp.DialTimeout(addr, forwardDialTimeout)
			},
			MaxIdleConnDuration: 30 * time.Second,
		},
	}
}

// route handles a handler's error: when err says the entity is hosted on
// another node and the request was not forwarded already, the request is
// forwarded there and the answer relayed (route returns nil, the response
// is written), or a 503 if the host does not answer. Any other error is
// returned unchanged.
func (r *hostRouter) route(ctx *fasthttp.RequestCtx, err error) error {
	var h hostedElsewhere
	if r == nil || !errors.As(err, &h) {
		return err
	}
	what, node := h.Host()
	if node == "" || node == r.self {
		return err
	}
	if len(ctx.Request.Header.Peek(forwardedHeader)) > 0 {
		// Loop guard: the forwarding node thought we host it; we think
		// another node does. The caller gets the 409 naming it.
		return err
	}
	c, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	base, lerr := r.nodeURL(c, node)
	cancel()
	if lerr != nil {
		r.log.Warn().Err(lerr).Str("node", node).Str("path", string(ctx.Path())).Msg("cluster: hosting node not found; request not forwarded")
		return &apiError{fasthttp.StatusServiceUnavailable, "host_unreachable",
			fmt.Sprintf("%s is hosted on cluster node %s, which is not reachable now; nothing was changed, try again", what, node)}
	}
	timeout := r.timeout
	var lt interface{ forwardTimeout() time.Duration }
	if errors.As(err, &lt) && lt.forwardTimeout() > timeout {
		timeout = lt.forwardTimeout()
	}
	if ferr := r.forward(ctx, base, timeout); ferr != nil {
		if errors.Is(ferr, fasthttp.ErrTimeout) {
			// Sent but unanswered: the host may have acted on it.
			r.log.Warn().Str("node", node).Str("url", base).Str("path", string(ctx.Path())).Msg("cluster: forwarded request timed out")
			return &apiError{fasthttp.StatusGatewayTimeout, "host_timeout",
				fmt.Sprintf("%s is hosted on cluster node %s, which did not answer in %s; the request may have reached it", what, node, timeout)}
		}
		r.log.Warn().Err(ferr).Str("node", node).Str("url", base).Str("path", string(ctx.Path())).Msg("cluster: forwarding to the hosting node failed")
		return &apiError{fasthttp.StatusServiceUnavailable, "host_unreachable",
			fmt.Sprintf("%s is hosted on cluster node %s, which did not answer; nothing was changed, try again", what, node)}
	}
	auditDetails(ctx, "forwarded to cluster node "+node)
	return nil
}

// forward sends ctx's request to base (the host's API base URL) and copies
// the answer's status, body and content type into ctx's response.
func (r *hostRouter) forward(ctx *fasthttp.RequestCtx, base string, timeout time.Duration) error {
	req := fasthttp.AcquireRequest()
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.Header.SetMethodBytes(ctx.Method())
	req.SetRequestURI(base + string(ctx.Request.RequestURI()))
	for _, h := range forwardHeaders {
		if v := ctx.Request.Header.Peek(h); len(v) > 0 {
			req.Header.SetBytesV(h, v)
		}
	}
	req.Header.Set(forwardedHeader, r.self)
	req.SetBody(ctx.Request.Body())
	if err := r.client.DoTimeout(req, res, timeout); err != nil {
		return err
	}
	ctx.Response.ResetBody()
	ctx.SetStatusCode(res.StatusCode())
	ctx.SetContentTypeBytes(res.Header.ContentType())
	ctx.SetBody(res.Body())
	return nil
}
