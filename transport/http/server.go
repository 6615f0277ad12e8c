// Package http serves fangd's REST API on fasthttp. Handlers stay thin:
// decode, validate, ask the owning actor, encode. Cross-cutting concerns
// (request ids, security headers, rate limiting, auth, auditing of mutating
// calls, metrics, panics) live in middleware.go; one file per endpoint group.
package http

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/auth"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/pairing"
	ofppeer "github.com/fangd/fangd/actors/peer"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
)

// Config is the HTTP layer's part of config.toml, already validated.
type Config struct {
	// APIKey, when set, is required on every non-public route. When empty
	// only loopback callers are let in.
	APIKey string
	// MaxBodyBytes caps request bodies (413 beyond).
	MaxBodyBytes int
	// RateLimitPerMinute is the GCRA quota of each rate-limit bucket
	// (bucketKey: per credential and client address, failed
	// authentications apart); 0 turns the limiter off. SetRateLimits
	// changes it and RateLimitExemptLoopback at run time.
	RateLimitPerMinute int
	// RateLimitExemptLoopback lets loopback clients (direct, or named by
	// a trusted proxy) bypass the limiter.
	RateLimitExemptLoopback bool
	// AllowedHosts are the Host names served besides loopback names and
	// addresses. The Host check applies when no API key is set or when
	// this is non-empty (see hostChecked).
	AllowedHosts []string
	// CORSOrigins are the browser origins (scheme://host[:port]) allowed
	// to read answers; empty keeps CORS closed.
	CORSOrigins []string
	// TrustedProxies are CIDRs (or addresses) of reverse proxies whose
	// X-Forwarded-For / Forwarded headers name the client.
	TrustedProxies []string
	// AuthFailureInterval is how often failed authentications are audited,
	// one entry per source address with a count. Zero means one minute.
	AuthFailureInterval time.Duration
	// SecurityHeaders adds nosniff, frame-deny, CSP, HSTS and friends.
	SecurityHeaders bool
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	// SSEHeartbeat is the interval of keep-alive comments on SSE streams.
	SSEHeartbeat time.Duration
	// MaxLogStreams bounds the open GET /api/logs/stream subscribers (each
	// holds a 1024-line buffer); beyond it 429 log_stream_limit.
	MaxLogStreams int
	// MaxA2AStreams bounds the open A2A JSON-RPC streams (message/stream,
	// tasks/resubscribe), each a goroutine and an agent turn's events held
	// for as long as the client reads; beyond it 429 a2a_stream_limit.
	MaxA2AStreams int
	// MaxAgentStreams bounds the open POST /api/agents/{id}/message/stream
	// answers, each a turn in flight ([agents] max_streams); beyond it 429
	// agent_stream_limit.
	MaxAgentStreams int
	// StreamWriteTimeout bounds one write of a long-lived stream (SSE,
	// the A2A and MCP streams): a client that stops reading that long is
	// cut. WriteTimeout is one-shot per response and would cut every
	// stream that outlives it, so streams re-arm the deadline before each
	// write instead (sse.Deadline). Zero means 30 s.
	StreamWriteTimeout time.Duration
	Version            string
	// TurnTimeout is how long comms waits for an agent turn (requests
	// that run one wait a little longer).
	TurnTimeout time.Duration
	// RequestTimeout bounds a request's domain calls together ([http]
	// request_timeout_secs); handlers that wait longer by design use
	// reqCtxWait instead. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// AccessLog writes one log line per request ([log] access_log).
	AccessLog bool
	// MCP configures POST /mcp.
	MCP MCPConfig
	// MCPOAuthRedirectBase is the public base URL of fangd that MCP OAuth
	// redirects go to ([mcp] oauth_redirect_base); empty: the request's
	// own scheme and Host.
	MCPOAuthRedirectBase string
	// A2APeers are the per-peer tokens ([[a2a.peers]]) accepted on the
	// A2A protocol routes besides the API key.
	A2APeers []PeerToken
	// A2AMaxBodyBytes caps bodies on the A2A protocol routes (1 MiB).
	A2AMaxBodyBytes int
	// PublicHTTPS marks session cookies Secure even on a plain listener
	// (TLS ends at a reverse proxy: [external_auth] redirect_url is https).
	PublicHTTPS bool
	// Users are the named API keys of [[users]], each with its role.
	Users []User
	// PairingPerMinute limits the public pairing routes (complete,
	// action) per client address ([pairing] attempts_per_minute, 10).
	PairingPerMinute int
}

// PeerToken is one A2A peer's credential.
type PeerToken struct {
	Name  string
	Token string
}

type peerHash struct {
	name string
	hash [32]byte
}

// DefaultConfig is what `fangd serve` uses with no config file.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       8 << 20,
		RateLimitPerMinute: 500,
		SecurityHeaders:    true,
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        2 * time.Minute,
		SSEHeartbeat:       15 * time.Second,
		MaxLogStreams:      DefaultMaxLogStreams,
		MaxA2AStreams:      DefaultMaxA2AStreams,
		MaxAgentStreams:    DefaultMaxAgentStreams,
		StreamWriteTimeout: 30 * time.Second,
		A2AMaxBodyBytes:    1 << 20,
		RequestTimeout:     DefaultRequestTimeout,
	}
}

// Deps are the actors and stores the handlers talk to.
type Deps struct {
	Kernel *kernel.Kernel
	Audit  *audit.Log
	Store  *store.DB
	Logs   *logs.Ring
	// A2A is the A2A server and client; nil leaves the A2A routes out.
	A2A *a2a.Service
	// Comms: the event bus and the message router (nil: /api/comms/* 503).
	Bus    *comms.Bus
	Router *comms.Router
	// Webhooks is the outbound delivery engine (nil: /api/webhooks* 503).
	Webhooks *webhook.Engine
	// Hooks configures inbound /hooks/*; disabled (404) when zero.
	Hooks  HooksConfig
	Agents *agent.Agents
	LLM    *llm.Registry
	Meter  *usage.Meter
	// Approvals may be nil (tests of other groups); its routes then 503.
	Approvals *approval.Approvals
	// Channels is the chat channel subsystem; nil answers its routes 503.
	Channels *channel.Service
	// MCP, when set, serves /api/mcp/*.
	MCP *mcp.Manager
	// MCPServer, when set, serves POST /mcp.
	MCPServer *mcp.Exposer
	// Pairing, when set, serves /api/pairing/* and authenticates paired
	// devices; nil answers its routes 404 pairing_disabled.
	Pairing *pairing.Pairing
	// Auth, when set, is OIDC sign-in ([external_auth]): its sessions
	// authenticate with the user's role.
	Auth *auth.Service
	// Network is the OFP peer network; nil when network_enabled is off.
	Network *ofppeer.Network
	// LogLevel is what /api/logs/level reads and changes; nil is zerolog's
	// global level, the daemon's. Tests give each server its own, so that
	// a test changing it does not change the level under tests running
	// beside it.
	LogLevel LogLevel
}

// Server is fangd's HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	// cluster is the cluster membership (nil: single node), SetCluster.
	cluster ClusterView
	hosts   *hostRouter // nil on a single node
	// agentDir is the cluster's agent directory (nil on a single node).
	agentDir agentDirectory
	log      zerolog.Logger
	router   *router.Router
	srv      *fasthttp.Server
	// limits is the rate limiter in force (SetRateLimits).
	limits  atomic.Pointer[limiter]
	edge    edge
	keyHash [32]byte
	// authFailures aggregates failed authentications for the audit log.
	authFailures *authFailures
	// peerHashes are the A2A peers' token hashes.
	peerHashes []peerHash
	// rpcHandlers caches the adapted JSON-RPC handler per A2A endpoint.
	rpcHandlers sync.Map
	metrics     httpMetrics
	// closing is closed when shutdown begins, so long-lived streams end.
	closing   chan struct{}
	closeOnce sync.Once
	// baseCtx is every request's context's parent, cancelled with closing.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	// healthOK and healthDegraded are GET /api/health's two bodies.
	healthOK, healthDegraded []byte
	mcpEndpoint              *mcpEndpoint
	// hooks starts as deps.Hooks; SetHooks swaps it.
	hooks atomic.Pointer[HooksConfig]
	// healthNoSpace is its body below the free-space reserve.
	healthNoSpace []byte
	// recentPage is the last GET /api/audit/recent page built (auditRecent).
	recentPage atomic.Pointer[recentPage]
	// logStreams counts the open /api/logs/stream subscribers.
	logStreams atomic.Int64
	a2aStreams atomic.Int64
	// agentStreams counts the open agent message streams.
	agentStreams atomic.Int64
	// a2aDir is the cluster's A2A task directory (nil on a single node).
	a2aDir a2aDirectory
	// pairingLimit is the public pairing routes' own limiter.
	pairingLimit pairingLimiter
	// registered lists every handle call, in order: the OpenAPI
	// document's paths (openapi.go).
	registered []registeredRoute
	// openapi is GET /api/openapi.json's document, built on its first
	// request (openapi.go): building it took a third of start-up's CPU.
	openapiDoc openAPIDoc
}

// Request IDs come from a pool of random bytes (one read per 16 IDs, not
// one each). Turned on at package init: EnableRandPool writes a variable
// every uuid.New reads, so calling it from New raced with the requests of
// a server already running (two servers in one process, as in the tests).
func init() { uuid.EnableRandPool() }

// New builds the server and its routes.
func New(cfg Config, deps Deps) (*Server, error) {
	if cfg.MaxBodyBytes <= 0 {
		return nil, errors.New("http: MaxBodyBytes must be positive")
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = 30 * time.Second
	}
	cfg.RequestTimeout = requestTimeout(cfg.RequestTimeout)
	e, err := newEdge(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		edge:    e,
		cfg:     cfg,
		deps:    deps,
		log:     deps.Kernel.Log.With().Str("component", "http").Logger(),
		router:  router.New(),
		closing: make(chan struct{}),
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.keyHash = hashKey(cfg.APIKey)
	s.SetHooks(deps.Hooks)
	for _, p := range cfg.A2APeers {
		s.peerHashes = append(s.peerHashes, peerHash{name: p.Name, hash: hashKey(p.Token)})
	}
	s.SetRateLimits(RateLimits{PerMinute: cfg.RateLimitPerMinute, ExemptLoopback: cfg.RateLimitExemptLoopback})
	if err := s.metrics.register(deps.Kernel.Metrics); err != nil {
		return nil, err
	}
	s.registerSecurityProbes()
	s.encodeHealthBodies()
	s.routes()
	s.authFailures = newAuthFailures(cfg.AuthFailureInterval, s.appendAudit, s.log)
	s.srv = &fasthttp.Server{
		Handler:               s.router.Handler,
		ErrorHandler:          s.transportError,
		Name:                  "fangd",
		MaxRequestBodySize:    cfg.MaxBodyBytes,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		CloseOnShutdown:       true,
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{s.log},
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops accepting, ends SSE streams, waits for in-flight
// requests until ctx is done, and then audits the failed authentications
// counted since the last aggregated entry.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing); s.cancelBase() })
	err := s.srv.ShutdownWithContext(ctx)
	s.authFailures.close()
	return err
}

// Handler exposes the full handler chain (tests and the bench use it).
func (s *Server) Handler() fasthttp.RequestHandler { return s.router.Handler }

func (s *Server) routes() {
	r := s.router
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.NotFound = s.chain("unmatched", routeOpts{}, func(ctx *fasthttp.RequestCtx) error {
		return &apiError{fasthttp.StatusNotFound, "not_found", "no route for " + string(ctx.Method()) + " " + string(ctx.Path())}
	})
	r.MethodNotAllowed = s.chain("unmatched", routeOpts{}, func(ctx *fasthttp.RequestCtx) error {
		return &apiError{fasthttp.StatusMethodNotAllowed, "method_not_allowed", string(ctx.Method()) + " is not allowed on " + string(ctx.Path())}
	})

	s.api("GET", "/health", s.health, public)
	s.api("GET", "/health/detail", s.healthDetail)
	s.api("GET", "/ready", s.ready, public)
	s.api("GET", "/security", s.security)
	s.api("GET", "/openapi.json", s.openapi, public)
	s.api("GET", "/audit/recent", s.auditRecent)
	s.api("GET", "/audit/verify", s.auditVerify)
	s.api("GET", "/admin/backup", s.adminBackup)
	s.api("POST", "/audit/accept", s.auditAccept)
	s.api("GET", "/audit/query", s.auditQuery)
	s.api("GET", "/audit/export", s.auditExport)
	s.api("GET", "/logs/stream", s.logStream)
	s.api("GET", "/logs/level", s.logLevel)
	s.api("PUT", "/logs/level", s.setLogLevel)
	s.api("GET", "/agents", s.listAgents)
	s.api("POST", "/agents", s.createAgent)
	s.api("GET", "/agents/{id}", s.getAgent)
	s.api("PATCH", "/agents/{id}", s.patchAgent)
	s.api("DELETE", "/agents/{id}", s.deleteAgent)
	s.api("POST", "/agents/{id}/message", s.messageAgent)
	s.api("POST", "/agents/{id}/message/stream", s.messageAgentStream)
	s.agentBindingRoutes()
	s.agentActivityRoutes()
	s.api("GET", "/templates", s.listTemplates)
	s.api("GET", "/templates/{name}", s.getTemplate)
	s.api("GET", "/templates/{name}/toml", s.getTemplateTOML)
	s.api("GET", "/models", s.listModels)
	s.api("GET", "/providers", s.listProviders)
	s.api("GET", "/usage", s.usageTotals)
	s.api("GET", "/usage/summary", s.usageSummary)
	s.api("GET", "/usage/by-model", s.usageByModel)
	s.api("GET", "/usage/daily", s.usageDaily)
	s.api("GET", "/budget", s.getBudget)
	s.api("PUT", "/budget", s.putBudget)
	s.api("GET", "/budget/agents", s.budgetAgents)
	s.api("GET", "/budget/agents/{id}", s.agentBudget)
	s.api("PUT", "/budget/agents/{id}", s.putAgentBudget)
	s.api("GET", "/usage/by-model/performance", s.usageModelPerformance)
	s.api("GET", "/budget/providers", s.providerBudgets)
	s.api("GET", "/budget/providers/{id}", s.providerBudget)
	s.api("PUT", "/budget/providers/{id}", s.putProviderBudget)
	s.api("DELETE", "/budget/providers/{id}", s.deleteProviderBudget)
	s.api("GET", "/budget/users", s.userBudgets)
	s.api("GET", "/budget/users/{id}", s.userBudget)
	s.api("PUT", "/budget/users/{id}", s.putUserBudget)
	s.api("DELETE", "/budget/users/{id}", s.deleteUserBudget)
	s.api("GET", "/approvals", s.needApprovals(s.listApprovals))
	s.api("POST", "/approvals", s.needApprovals(s.createApproval))
	s.api("GET", "/approvals/policy", s.needApprovals(s.approvalPolicy))
	s.api("GET", "/approvals/totp/status", s.needApprovals(s.totpStatus))
	s.api("POST", "/approvals/totp/setup", s.needApprovals(s.totpSetup))
	s.api("DELETE", "/approvals/totp/setup", s.needApprovals(s.totpCancel))
	s.api("POST", "/approvals/totp/confirm", s.needApprovals(s.totpConfirm))
	s.api("POST", "/approvals/totp/revoke", s.needApprovals(s.totpRevoke))
	s.api("DELETE", "/approvals/totp", s.needApprovals(s.totpRevoke))
	s.api("GET", "/approvals/count", s.needApprovals(s.approvalCount))
	s.api("GET", "/approvals/audit", s.needApprovals(s.approvalAudit))
	s.api("POST", "/approvals/batch", s.needApprovals(s.batchApprovals))
	s.api("GET", "/approvals/session/{sid}", s.needApprovals(s.sessionApprovals))
	s.api("POST", "/approvals/session/{sid}/approve_all", s.needApprovals(s.sessionApproveAll))
	s.api("POST", "/approvals/session/{sid}/reject_all", s.needApprovals(s.sessionRejectAll))
	s.api("POST", "/approvals/{id}/modify", s.needApprovals(s.modifyApproval))
	s.api("GET", "/approvals/{id}", s.needApprovals(s.getApproval))
	s.api("POST", "/approvals/{id}/approve", s.needApprovals(s.approveApproval))
	s.api("POST", "/approvals/{id}/reject", s.needApprovals(s.rejectApproval))
	s.handle("GET", "/metrics", s.prometheus, routeOpts{})
	s.a2aRoutes()
	s.commsRoutes()
	s.peerRoutes()
	s.clusterRoutes()
	s.webhookRoutes()
	s.hookRoutes()
	s.mcpRoutes()
	s.channelRoutes()
	s.whatsappQRRoutes()
	s.pairingRoutes()
	s.oauthRoutes()
	s.authLibreFangRoutes()
	s.dashboardRoutes()
}

// api registers path under both /api and /api/v1.
func (s *Server) api(method, path string, h handlerFunc, opts ...routeOpts) {
	o := mergeOpts(opts)
	s.handle(method, "/api"+path, h, o)
	s.handle(method, "/api/v1"+path, h, o)
}

// handle registers one route. A GET route answers HEAD too (fasthttp
// sends the headers without the body), so health checkers that use HEAD work.
func (s *Server) handle(method, path string, h handlerFunc, o routeOpts) {
	handler := s.chain(path, o, h)
	s.registered = append(s.registered, registeredRoute{method, path, o})
	s.router.Handle(method, path, handler)
	if method == "GET" {
		s.router.Handle("HEAD", path, handler)
	}
}

// transportError answers fasthttp's own failures (body too large, bad
// request line) with the JSON envelope.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	s.startRequest(ctx)
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.fail(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the limit")
	default:
		s.fail(ctx, fasthttp.StatusBadRequest, "bad_request", "malformed HTTP request")
	}
	ctx.SetConnectionClose()
}

// fasthttpLogger routes fasthttp's connection-level messages (clients that
// send oversized bodies or hang up) into zerolog at debug: they are the
// client's problem, already answered, and must not flood the log.
type fasthttpLogger struct{ l zerolog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug().Msgf(format, args...) }
