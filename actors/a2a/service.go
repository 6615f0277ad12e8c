package a2a

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Options configure the A2A server and client ([a2a] in config.toml).
type Options struct {
	// Name, Description and Version fill the agent cards.
	Name        string
	Description string
	Version     string
	// BaseURL is the public base URL advertised in cards
	// ("http://127.0.0.1:4545"); SetBaseURL may set it after listening.
	BaseURL string
	// DefaultAgent (id or name) takes messages sent to the shared endpoint
	// that name no agent. With none, a daemon with exactly one agent uses it.
	DefaultAgent string
	// Retention is how long finished tasks are kept; SweepInterval how
	// often they are swept.
	Retention     time.Duration
	SweepInterval time.Duration
	// ResumeOnRestart re-runs inbound tasks that were running when fangd
	// stopped, instead of failing them.
	ResumeOnRestart bool
	// TurnTimeout bounds one agent turn of an inbound task.
	TurnTimeout time.Duration
	// SyncWait bounds how long a blocking send (SendMessage without
	// returnImmediately, POST /a2a/tasks/send) holds the request; past it
	// the caller gets the task as it is and polls.
	SyncWait time.Duration
	// Streaming serves SendStreamingMessage and SubscribeToTask.
	Streaming bool
	// StreamKeepAlive is the interval of keep-alive comments on streams;
	// it must be shorter than the HTTP write timeout, which each write of
	// a stream pushes forward.
	StreamKeepAlive time.Duration

	// Client side.
	DiscoveryTimeout time.Duration
	MaxCardBytes     int64
	// OutboundTimeout bounds an outbound task from send to final state.
	OutboundTimeout time.Duration
	// MaxAttempts bounds the tries to reach a peer; RetryBackoff spaces
	// them (capped exponential with jitter).
	MaxAttempts  int
	RetryBackoff kernel.Backoff
	// PollInterval and PollMax space GetTask polls of a peer that neither
	// streams nor answered with a final state.
	PollInterval time.Duration
	PollMax      time.Duration
	// ExternalAgents are discovered in the background at start.
	ExternalAgents []StaticAgent

	Agents Agents
	Guard  Guard
	// Permanent, when set, marks errors from the Guard's client that no
	// retry can fix (a refused address).
	Permanent func(error) bool
	// Pusher is the webhook delivery engine; nil turns push
	// notifications off (and the cards say so).
	Pusher Pusher
	// Events, when set, gets a2a.task.received and a2a.task.sent.
	Events Events
	Vault  *store.Vault
	// journalGate, when set (tests only), runs before each journal
	// commit with the batch's records: a test holds a commit back with it.
	journalGate func(records [][]byte)
}

// StaticAgent is one [[a2a.external_agents]] entry.
type StaticAgent struct {
	Name  string
	URL   string
	Token string // from token_env
}

// DefaultOptions are fangd's defaults.
func DefaultOptions() Options {
	return Options{
		Name:             "fangd",
		Description:      "fangd agent daemon: LibreFang-compatible agents reachable over A2A",
		Version:          "dev",
		Retention:        24 * time.Hour,
		SweepInterval:    10 * time.Minute,
		TurnTimeout:      10 * time.Minute,
		SyncWait:         5 * time.Minute,
		Streaming:        true,
		StreamKeepAlive:  15 * time.Second,
		DiscoveryTimeout: 10 * time.Second,
		MaxCardBytes:     256 << 10,
		OutboundTimeout:  10 * time.Minute,
		MaxAttempts:      5,
		RetryBackoff:     kernel.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second},
		PollInterval:     500 * time.Millisecond,
		PollMax:          10 * time.Second,
	}
}

// Service is the A2A subsystem: the actors, and the methods the HTTP layer
// calls (each turns a request into a message to the actors).
type Service struct {
	k       *kernel.Kernel
	db      *store.DB
	vault   *store.Vault
	opts    Options
	agents  Agents
	guard   Guard
	pusher  Pusher
	events  Events
	log     zerolog.Logger
	slog    *slog.Logger
	sup     *actor.PID
	journal *actor.PID
	// taskProps are a task actor's Props, built once (kernel.PropsTemplate):
	// its mailbox runs on reused goroutines (kernel.PoolDispatcher).
	taskProps func(actor.Producer) *actor.Props
	baseURL   atomic.Pointer[string]
	metrics   metrics
	// cluster is the cluster's task directory (cluster.go); nil on a
	// single node.
	cluster atomic.Pointer[clusterRef]
}

type metrics struct {
	created  *prometheus.CounterVec
	finished *prometheus.CounterVec
}

// Start validates opts and spawns the journal and the supervisor (which
// restores unfinished tasks). Static external agents are discovered in
// the background.
func Start(k *kernel.Kernel, db *store.DB, opts Options) (*Service, error) {
	if opts.Agents == nil {
		return nil, errors.New("a2a: Options.Agents is required")
	}
	if opts.Guard == nil {
		return nil, errors.New("a2a: Options.Guard is required (the outbound SSRF policy)")
	}
	if opts.Retention > 0 && opts.SweepInterval <= 0 {
		opts.SweepInterval = min(opts.Retention/4, 10*time.Minute)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"turn_timeout", opts.TurnTimeout}, {"sync_wait", opts.SyncWait}, {"discovery_timeout", opts.DiscoveryTimeout},
		{"outbound_timeout", opts.OutboundTimeout}, {"poll_interval", opts.PollInterval}, {"poll_max", opts.PollMax},
		{"stream keep-alive", opts.StreamKeepAlive}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("a2a: %s must be positive", d.name)
		}
	}
	if opts.MaxAttempts < 1 {
		return nil, errors.New("a2a: max_attempts must be at least 1")
	}
	if opts.MaxCardBytes <= 0 {
		return nil, errors.New("a2a: max_card_bytes must be positive")
	}
	s := &Service{
		k: k, db: db, vault: opts.Vault, opts: opts,
		agents: opts.Agents, guard: opts.Guard, pusher: opts.Pusher, events: opts.Events,
		log:       k.Log.With().Str("component", "a2a").Logger(),
		taskProps: k.PropsTemplate(actor.WithDispatcher(kernel.PoolDispatcher(300))),
	}
	s.slog = slog.New(zerolog.NewSlogHandler(s.log.Level(zerolog.WarnLevel)))
	base := strings.TrimRight(opts.BaseURL, "/")
	s.baseURL.Store(&base)
	s.metrics = metrics{
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fangd_a2a_tasks_created_total",
			Help: "A2A tasks created, by direction."}, []string{"direction"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fangd_a2a_tasks_finished_total",
			Help: "A2A tasks that reached a final state, by direction and status."}, []string{"direction", "status"}),
	}
	if err := k.Metrics.Register(s.metrics.created); err != nil {
		return nil, err
	}
	if err := k.Metrics.Register(s.metrics.finished); err != nil {
		return nil, err
	}
	var err error
	// Both see every task at least twice.
	if s.journal, err = k.SpawnRoot("a2a-journal", func() actor.Actor { return &journal{db: db, gate: opts.journalGate} }, actor.WithDispatcher(kernel.PinnedDispatcher(300))); err != nil {
		return nil, err
	}
	if s.sup, err = k.SpawnRoot("a2a", func() actor.Actor { return newSupervisor(s) }, actor.WithDispatcher(kernel.PinnedDispatcher(300))); err != nil {
		return nil, err
	}
	if len(opts.ExternalAgents) > 0 {
		go s.discoverStatic(opts.ExternalAgents)
	}
	return s, nil
}

// received reports an inbound task: a route from the caller to the agent.
func (s *Service) received(rec *taskRecord) {
	if s.events != nil {
		s.events.Route("a2a.task.received", "a2a:"+rec.Caller, "agent:"+rec.AgentID, "a2a",
			map[string]string{"task_id": rec.ID, "agent_id": rec.AgentID, "context_id": rec.ContextID})
	}
}

// sent reports an outbound task: a route from the caller (an agent using
// the tool, or the API) to the external agent.
func (s *Service) sent(rec *taskRecord) {
	if s.events != nil {
		s.events.Route("a2a.task.sent", rec.Caller, "a2a:"+rec.AgentID, "a2a",
			map[string]string{"task_id": rec.ID, "external_agent_id": rec.AgentID, "external_agent": rec.AgentName})
	}
}

// SetBaseURL sets the public base URL (once the listener's address is known).
func (s *Service) SetBaseURL(u string) {
	u = strings.TrimRight(u, "/")
	s.baseURL.Store(&u)
}

// BaseURL is the public base URL.
func (s *Service) BaseURL() string { return *s.baseURL.Load() }

// PushEnabled reports whether push notifications are wired.
func (s *Service) PushEnabled() bool { return s.pusher != nil }

// Streaming reports whether streaming is served.
func (s *Service) Streaming() bool { return s.opts.Streaming }

func (s *Service) supervisorTasks() *store.Collection[taskRecord] {
	return store.NewCollection[taskRecord](s.db, tasksCollection)
}

// Caller is who is calling, as the HTTP layer authenticated them.
type Caller struct {
	// Name is "api_key", "loopback" or "peer:<name>".
	Name string
	// Admin callers (the API key, loopback) see every task; a peer sees
	// only the tasks it created.
	Admin bool
}

type callerKeyType struct{}

// CallerKey is the request value under which the HTTP layer stores the
// Caller (transport/http carries it into its request contexts).
var CallerKey any = callerKeyType{}

// CallerFrom reads the Caller from a request context; a context without
// one is an anonymous non-admin caller.
func CallerFrom(ctx context.Context) Caller {
	if c, ok := ctx.Value(CallerKey).(Caller); ok {
		return c
	}
	return Caller{Name: "anonymous"}
}

func (c Caller) scope(direction, agentID string) scope {
	return scope{direction: direction, agentID: agentID, caller: c.Name, admin: c.Admin}
}
