package webhook

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/transport/neterr"
	"github.com/fangd/fangd/transport/ssrf"
)

// DefaultBackoff is the retry schedule: after the first attempt fails, the
// next ones wait these delays (each spread by ±20% jitter). When they are
// used up the message is dead-lettered: 7 attempts over about 7 hours.
var DefaultBackoff = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour}

// Options configure the engine.
type Options struct {
	Bus   *comms.Bus
	Vault *store.Vault
	Guard *ssrf.Guard
	// Backoff is the retry schedule (default DefaultBackoff).
	Backoff []time.Duration
	// Timeout bounds one delivery attempt (default 15 s).
	Timeout time.Duration
	// DisableAfter disables an endpoint after this many consecutive
	// dead-lettered messages (default 3; 0 = never).
	DisableAfter int
	// MaxPending caps one endpoint's outbox; events beyond it go straight
	// to the dead-letter list, where replay can pick them up (default
	// 100000).
	MaxPending int
	// MaxEndpoints bounds the outbound and event webhooks together
	// (default MaxEndpoints, LibreFang's 100); beyond: 409 too_many_webhooks.
	MaxEndpoints int
	UserAgent    string
	// Clustered keeps endpoints, their sealed secrets and outbox state in
	// etcd (cluster.go): the engine starts empty and waits for UseCluster
	// and the ownership rounds (ApplyCluster).
	Clustered bool
}

// Engine is the handle the HTTP layer uses.
type Engine struct {
	k    *kernel.Kernel
	pid  *actor.PID
	opts Options
	sh   *shared
}

type metrics struct {
	delivered, failed, dead prometheus.Counter
	latency                 prometheus.Histogram
}

// shared is what every endpoint actor needs.
type shared struct {
	opts      Options
	db        *store.DB
	endpoints *store.Collection[Endpoint]
	metas     *store.Collection[meta]
	badger    *badgerState
	client    *http.Client
	m         metrics
	log       zerolog.Logger

	// Cluster mode: the etcd link (set by UseCluster) and each
	// endpoint's sealed secrets as the last round saw them.
	cl       atomic.Pointer[clusterLink]
	sealedMu sync.Mutex
	sealed   map[string]map[string][]byte
}

// clusteredKind reports whether endpoints of kind live in etcd: in
// cluster mode every kind but push endpoints, which serve per-node
// entities (A2A tasks, paired devices) and are created before the node
// joins.
func (sh *shared) clusteredKind(kind string) bool {
	return sh.opts.Clustered && kind != KindPush
}

// stateFor is where the state of an endpoint of kind lives.
func (sh *shared) stateFor(kind string) backend {
	if sh.clusteredKind(kind) {
		return clusterState{sh}
	}
	return sh.badger
}

// Start spawns the supervisor as the root actor "webhooks".
func Start(k *kernel.Kernel, db *store.DB, opts Options) (*Engine, error) {
	if opts.Bus == nil || opts.Vault == nil || opts.Guard == nil {
		return nil, errors.New("webhook engine needs the bus, the vault and the SSRF guard")
	}
	if len(opts.Backoff) == 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.DisableAfter < 0 {
		opts.DisableAfter = 0
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 100_000
	}
	if opts.MaxEndpoints <= 0 {
		opts.MaxEndpoints = MaxEndpoints
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "fangd-webhook/1"
	}
	m := metrics{
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_webhook_deliveries_total", Help: "Webhook messages acknowledged with 2xx."}),
		failed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_webhook_failed_attempts_total", Help: "Webhook delivery attempts that failed."}),
		dead:      prometheus.NewCounter(prometheus.CounterOpts{Name: "fangd_webhook_dead_letters_total", Help: "Webhook messages moved to a dead-letter list."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fangd_webhook_attempt_seconds", Help: "Webhook delivery attempt latency.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.failed, m.dead, m.latency} {
		if err := k.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	sh := &shared{opts: opts, db: db, endpoints: store.NewCollection[Endpoint](db, "webhooks/endpoints"),
		metas: store.NewCollection[meta](db, "webhooks/meta"), client: opts.Guard.Client(opts.Timeout), m: m,
		log: k.Log.With().Str("component", "webhooks").Logger(), sealed: map[string]map[string][]byte{}}
	sh.badger = &badgerState{db: db, metas: sh.metas}
	pid, err := k.SpawnRoot("webhooks", func() actor.Actor {
		return &supervisor{sh: sh, k: k}
	})
	if err != nil {
		return nil, err
	}
	// Every outbound URL goes through the guard: at configuration and at
	// every dial.
	k.Security.Register("ssrf_protection", func() kernel.State { return kernel.StateActive })
	return &Engine{k: k, pid: pid, opts: opts, sh: sh}, nil
}

// Create validates and stores a new endpoint of kind.
func (e *Engine) Create(ctx context.Context, kind string, p Patch) (View, error) {
	if err := validatePatch(&p, true, kind); err != nil {
		return View{}, err
	}
	if err := e.checkURL(ctx, *p.URL); err != nil {
		return View{}, err
	}
	latest, err := e.latest(ctx)
	if err != nil {
		return View{}, err
	}
	ep := Endpoint{Kind: kind, URL: *p.URL, Events: *p.Events, Enabled: true}
	if p.Name != nil {
		ep.Name = *p.Name
	}
	if p.Enabled != nil {
		ep.Enabled = *p.Enabled
	}
	c := &create{ep: ep, latest: latest}
	if p.Secret != nil && *p.Secret != "" {
		c.secret = []byte(*p.Secret)
	}
	if p.Headers != nil {
		c.headers = *p.Headers
	}
	return kernel.Ask[View](ctx, e.k, e.pid, c)
}

// Update applies p to endpoint id of kind ("" = either kind).
func (e *Engine) Update(ctx context.Context, kind, id string, p Patch) (View, error) {
	if err := validatePatch(&p, false, kind); err != nil {
		return View{}, err
	}
	if p.URL != nil {
		if err := e.checkURL(ctx, *p.URL); err != nil {
			return View{}, err
		}
	}
	latest, err := e.latest(ctx)
	if err != nil {
		return View{}, err
	}
	return kernel.Ask[View](ctx, e.k, e.pid, &update{id: id, kind: kind, patch: p, latest: latest})
}

func (e *Engine) latest(ctx context.Context) (uint64, error) {
	q, err := e.opts.Bus.Query(ctx, comms.Query{Limit: 0})
	if err != nil {
		return 0, err
	}
	return q.Last, nil
}

// checkURL runs the SSRF guard: a refusal is a 400 naming the rule
// (url_not_allowed, invalid_url), a host that does not resolve is
// host_not_found, not a refusal.
func (e *Engine) checkURL(ctx context.Context, raw string) error {
	if _, err := e.opts.Guard.Check(ctx, raw); err != nil {
		return neterr.Classify(err, "url")
	}
	return nil
}

// Delete removes endpoint id of kind.
func (e *Engine) Delete(ctx context.Context, kind, id string) error {
	_, err := kernel.Ask[bool](ctx, e.k, e.pid, &remove{id: id, kind: kind})
	return err
}

// Get returns endpoint id of kind ("" = either).
func (e *Engine) Get(ctx context.Context, kind, id string) (View, error) {
	v, err := kernel.Ask[View](ctx, e.k, e.pid, &get{id: id, kind: kind})
	if err == nil {
		e.counts(ctx, &v)
	}
	return v, err
}

// List returns every endpoint of kind, oldest first.
func (e *Engine) List(ctx context.Context, kind string) ([]View, error) {
	vs, err := kernel.Ask[[]View](ctx, e.k, e.pid, &list{kind: kind})
	for i := range vs {
		e.counts(ctx, &vs[i])
	}
	return vs, err
}

// Deliveries lists endpoint id's recent attempts, newest first (in
// cluster mode read from etcd, on any node).
func (e *Engine) Deliveries(ctx context.Context, id string, limit int) ([]Attempt, error) {
	if e.Clustered() {
		v, err := e.Get(ctx, "", id)
		if err != nil {
			return nil, err
		}
		if e.sh.clusteredKind(v.Kind) {
			return readAttempts(e.sh.stateFor(v.Kind), id, limit), nil
		}
	}
	return kernel.Ask[[]Attempt](ctx, e.k, e.pid, &forward{id: id, msg: &Deliveries{Limit: limit}})
}

// DeadLetters lists endpoint id's dead letters, newest first (in cluster
// mode read from etcd, on any node).
func (e *Engine) DeadLetters(ctx context.Context, id string, limit int) ([]DeadLetter, error) {
	if e.Clustered() {
		v, err := e.Get(ctx, "", id)
		if err != nil {
			return nil, err
		}
		if e.sh.clusteredKind(v.Kind) {
			return readDeadLetters(e.sh.stateFor(v.Kind), id, limit), nil
		}
	}
	return kernel.Ask[[]DeadLetter](ctx, e.k, e.pid, &forward{id: id, msg: &DeadLetters{Limit: limit}})
}

// Replay moves dead letters back to the outbox.
func (e *Engine) Replay(ctx context.Context, id string, ids []string) (*ReplayResult, error) {
	return kernel.Ask[*ReplayResult](ctx, e.k, e.pid, &forward{id: id, msg: &Replay{IDs: ids}})
}

// Test sends a signed test event to endpoint id now.
func (e *Engine) Test(ctx context.Context, id string) (*TestResult, error) {
	ctx, cancel := kernel.WithDefaultTimeout(ctx, e.opts.Timeout+5*time.Second)
	defer cancel()
	return kernel.Ask[*TestResult](ctx, e.k, e.pid, &forward{id: id, msg: &Test{}})
}

// supervisor owns the endpoint records and fans bus batches out to the
// endpoint actors. CRUD writes are tiny and rare, so they run inline.
type supervisor struct {
	sh       *shared
	k        *kernel.Kernel
	prod     *producer          // cluster mode: this node's events into the intakes
	stopProd context.CancelFunc // ends prod
	rounds   bool               // cluster mode: the first ownership round arrived
	ready    bool
	lastSeen uint64
	entries  map[string]*entry
	order    []string          // ids in creation order
	removed  map[string]string // stopping child PID id -> endpoint id
}

type entry struct {
	ep  Endpoint
	pid *actor.PID // nil while another node hosts it (cluster mode)
	st  stats
	// node hosts the endpoint's outbox in cluster mode ("" for none).
	node string
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		s.ready, s.rounds, s.entries, s.order, s.removed = false, false, map[string]*entry{}, nil, map[string]string{}
		s.sh.opts.Bus.Watch(c.Self())
		if s.sh.opts.Clustered && s.prod == nil {
			self, root := c.Self(), c.ActorSystem().Root
			s.prod = newProducer(s.sh, func(id string) { root.Send(self, &appended{id: id}) })
			ctx, cancel := context.WithCancel(context.Background())
			s.stopProd = cancel
			go s.prod.run(ctx)
		}
	case *actor.Stopping:
		if s.stopProd != nil {
			// Its reads of the bus end before the store closes.
			s.stopProd()
			<-s.prod.done
		}
	case *clusterView:
		s.applyCluster(c, m)
	case *appended:
		if e := s.entries[m.id]; e != nil && e.pid != nil {
			c.Send(e.pid, &intakeKick{})
		}
	case *comms.Watching:
		s.lastSeen = max(s.lastSeen, m.Latest)
		if !s.ready {
			if err := s.load(c); err != nil {
				panic(err)
			}
			s.ready = true
		}
	case *comms.Batch:
		if s.prod != nil {
			s.prod.poke()
			return
		}
		s.fanOut(c, m)
	case *stats:
		s.onStats(m)
	case *actor.Terminated:
		if id, ok := s.removed[m.Who.Id]; ok {
			delete(s.removed, m.Who.Id)
			s.dropData(id)
		}
		for _, e := range s.entries {
			if e.pid != nil && e.pid.Id == m.Who.Id {
				// Cluster mode: an outbox that stopped itself after a
				// refused write; the next round starts it again from
				// etcd if this node still holds it.
				e.pid = nil
			}
		}
	case *create, *update, *remove, *get, *list, *forward:
		if !s.ready || (s.sh.opts.Clustered && !s.rounds && !pushOnly(m)) {
			c.Respond(kernel.Unavailable("the webhook engine is still starting"))
			return
		}
		s.crud(c, m)
	}
}

// load spawns an actor for every stored endpoint. It runs once the bus
// has confirmed the watch, so that each endpoint's catch-up from the
// stored log and the live batches meet without a gap.
func (s *supervisor) load(c actor.Context) error {
	var eps []Endpoint
	if _, err := s.sh.endpoints.EachOrQuarantine(func(_ string, ep Endpoint) bool { eps = append(eps, ep); return true }); err != nil {
		return err
	}
	sortByCreation(eps)
	// Data of endpoints deleted just before a crash: drop it now.
	known := map[string]bool{}
	for _, ep := range eps {
		known[ep.ID] = true
	}
	if s.sh.opts.Clustered {
		// Only push endpoints stay in Badger in cluster mode; records of
		// other kinds from before it are left alone (not loaded).
		var push []Endpoint
		for _, ep := range eps {
			if !s.sh.clusteredKind(ep.Kind) {
				push = append(push, ep)
			}
		}
		eps = push
	}
	var orphans []string
	_ = s.sh.metas.Each(func(id string, _ meta) bool {
		if !known[id] {
			orphans = append(orphans, id)
		}
		return true
	})
	for _, id := range orphans {
		s.dropData(id)
	}
	for _, ep := range eps {
		if err := s.spawn(c, ep); err != nil {
			return err
		}
	}
	return nil
}

// pushOnly reports whether a request is about push endpoints only (those
// stay per node in cluster mode, so they need no ownership round).
func pushOnly(m any) bool {
	switch m := m.(type) {
	case *create:
		return m.ep.Kind == KindPush
	case *remove:
		return m.kind == KindPush
	case *update:
		return m.kind == KindPush
	case *get:
		return m.kind == KindPush
	case *list:
		return m.kind == KindPush
	}
	return false
}

func sortByCreation(eps []Endpoint) {
	for i := 1; i < len(eps); i++ {
		for j := i; j > 0 && eps[j].CreatedAt < eps[j-1].CreatedAt; j-- {
			eps[j], eps[j-1] = eps[j-1], eps[j]
		}
	}
}

func (s *supervisor) spawn(c actor.Context, ep Endpoint) error {
	e := &entry{ep: ep, st: stats{id: ep.ID, enabled: ep.Enabled}}
	if err := s.spawnActor(c, e); err != nil {
		return err
	}
	s.entries[ep.ID] = e
	s.order = append(s.order, ep.ID)
	return nil
}

// spawnActor starts e's outbox actor.
func (s *supervisor) spawnActor(c actor.Context, e *entry) error {
	ep := e.ep
	props := s.k.Props(func() actor.Actor { return &outbox{sh: s.sh, ep: ep, parent: c.Self()} })
	pid, err := c.SpawnNamed(props, "webhook/"+ep.ID)
	if err != nil {
		return err
	}
	e.pid = pid
	return nil
}

// forget drops endpoint id from the supervisor's lists.
func (s *supervisor) forget(id string) {
	delete(s.entries, id)
	for i, o := range s.order {
		if o == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

func (s *supervisor) fanOut(c actor.Context, b *comms.Batch) {
	if n := len(b.Records); n > 0 {
		s.lastSeen = max(s.lastSeen, b.Records[n-1].ID)
	}
	for _, id := range s.order {
		e := s.entries[id]
		if !e.ep.Enabled {
			continue
		}
		self := "webhook:" + id
		var evs []event
		for _, r := range b.Records {
			// An endpoint never receives the events about itself: a
			// failing "*" endpoint would otherwise feed its own queue.
			if r.Source == self || !comms.MatchAny(e.ep.Events, r.Type) {
				continue
			}
			evs = append(evs, event{id: r.ID, typ: r.Type, json: r.JSON})
		}
		if len(evs) > 0 {
			c.Send(e.pid, &deliver{events: evs})
		}
	}
}

func (s *supervisor) onStats(m *stats) {
	e, ok := s.entries[m.id]
	if !ok {
		return
	}
	e.st = *m
	if e.ep.Enabled && !m.enabled {
		// The endpoint disabled itself (410 or persistent failure).
		e.ep.Enabled, e.ep.DisabledReason, e.ep.UpdatedAt = false, m.disabledReason, now()
		if s.sh.clusteredKind(e.ep.Kind) {
			ep := e.ep
			go func() {
				if err := s.persistCluster(ep, nil); err != nil {
					s.sh.log.Error().Err(err).Str("webhook", ep.ID).Msg("could not persist the endpoint's disabled state")
				}
			}()
			return
		}
		if err := s.sh.endpoints.Put(e.ep.ID, e.ep); err != nil {
			s.sh.log.Error().Err(err).Str("webhook", e.ep.ID).Msg("could not persist the endpoint's disabled state")
		}
	}
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (s *supervisor) find(id, kind string) (*entry, error) {
	e, ok := s.entries[id]
	if !ok || (kind != "" && e.ep.Kind != kind) {
		return nil, kernel.NotFound("webhook %s not found", id)
	}
	return e, nil
}

func (s *supervisor) crud(c actor.Context, msg any) {
	switch m := msg.(type) {
	case *list:
		out := []View{}
		for _, id := range s.order {
			if e := s.entries[id]; m.kind == "" || e.ep.Kind == m.kind {
				out = append(out, e.ep.view(e.st))
			}
		}
		c.Respond(out)
	case *get:
		e, err := s.find(m.id, m.kind)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(e.ep.view(e.st))
	case *forward:
		e, err := s.find(m.id, "")
		if err != nil {
			c.Respond(err)
			return
		}
		if e.pid == nil {
			c.Respond(notHere(e))
			return
		}
		c.RequestWithCustomSender(e.pid, m.msg, c.Sender())
	case *create:
		v, err := s.create(c, m)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(v)
	case *update:
		v, err := s.update(c, m)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(v)
	case *remove:
		if err := s.remove(c, m); err != nil {
			c.Respond(err)
			return
		}
		c.Respond(true)
	}
}

func (s *supervisor) create(c actor.Context, m *create) (View, error) {
	if n, max, what := s.count(m.ep.Kind); n >= max {
		return View{}, kernel.Errorf(kernel.KindConflict, "too_many_webhooks", "at most %d %s may exist", max, what)
	}
	ep := m.ep
	ep.ID = uuid.NewString()
	ep.CreatedAt = now()
	ep.UpdatedAt = ep.CreatedAt
	ep.HasSecret = len(m.secret) > 0
	ep.HeaderNames = headerNames(m.headers)
	if ep.Events == nil {
		ep.Events = []string{}
	}
	if s.sh.clusteredKind(ep.Kind) {
		// Producers on every node send what their bus commits from now.
		ep.ResumeAt = ep.CreatedAt
		sealed, err := s.sh.sealSecrets(ep.ID, m.secret, m.headers, true, true)
		if err != nil {
			return View{}, err
		}
		if err := s.persistCluster(ep, sealed); err != nil {
			return View{}, err
		}
		s.entries[ep.ID] = &entry{ep: ep, st: stats{id: ep.ID, enabled: ep.Enabled}}
		s.order = append(s.order, ep.ID)
		s.sh.cluster().cl.Kick() // persistCluster succeeded: joined
		return ep.view(s.entries[ep.ID].st), nil
	}
	// Order matters for a crash in the middle: secrets and bookkeeping
	// first, the endpoint record last, so a half-created endpoint is
	// never loaded.
	if err := s.sh.metas.Put(ep.ID, meta{Cursor: max(m.latest, s.lastSeen), NextSeq: 1, NextAttempt: 1}); err != nil {
		return View{}, err
	}
	if err := putSecrets(s.sh.opts.Vault, ep.ID, m.secret, m.headers, true, true); err != nil {
		return View{}, err
	}
	if err := s.sh.endpoints.Put(ep.ID, ep); err != nil {
		return View{}, err
	}
	if err := s.spawn(c, ep); err != nil {
		return View{}, err
	}
	return ep.view(s.entries[ep.ID].st), nil
}

// count says how many endpoints count against kind's cap, and the cap:
// push endpoints (one per A2A push target) have their own.
func (s *supervisor) count(kind string) (n, max int, what string) {
	for _, e := range s.entries {
		if (e.ep.Kind == KindPush) == (kind == KindPush) {
			n++
		}
	}
	if kind == KindPush {
		return n, MaxPushEndpoints, "A2A push endpoints"
	}
	return n, s.sh.opts.MaxEndpoints, "webhooks ([webhooks] max_endpoints)"
}

func secretName(id string) string  { return "webhook/" + id + "/secret" }
func headersName(id string) string { return "webhook/" + id + "/headers" }

func putSecrets(v *store.Vault, id string, secret []byte, headers map[string]string, setSecret, setHeaders bool) error {
	if setSecret {
		if len(secret) > 0 {
			if err := v.Put(secretName(id), secret); err != nil {
				return err
			}
		} else if err := v.Delete(secretName(id)); err != nil {
			return err
		}
	}
	if setHeaders {
		if len(headers) > 0 {
			raw, err := encodeHeaders(headers)
			if err != nil {
				return err
			}
			if err := v.Put(headersName(id), raw); err != nil {
				return err
			}
		} else if err := v.Delete(headersName(id)); err != nil {
			return err
		}
	}
	return nil
}

func (s *supervisor) update(c actor.Context, m *update) (View, error) {
	e, err := s.find(m.id, m.kind)
	if err != nil {
		return View{}, err
	}
	ep := e.ep
	p := m.patch
	if p.Name != nil {
		ep.Name = *p.Name
	}
	if p.URL != nil {
		ep.URL = *p.URL
	}
	if p.Events != nil {
		ep.Events = *p.Events
	}
	reenabled := false
	if p.Enabled != nil {
		reenabled = *p.Enabled && !ep.Enabled
		ep.Enabled = *p.Enabled
		if ep.Enabled {
			ep.DisabledReason = ""
		} else if ep.DisabledReason == "" {
			ep.DisabledReason = "disabled by the API"
		}
	}
	rc := &reconfigure{latest: max(m.latest, s.lastSeen)}
	if p.Secret != nil {
		rc.setSecret, rc.secret = true, []byte(*p.Secret)
		ep.HasSecret = *p.Secret != ""
	}
	if p.Headers != nil {
		rc.setHeaders, rc.headers = true, *p.Headers
		ep.HeaderNames = headerNames(*p.Headers)
	}
	ep.UpdatedAt = now()
	if s.sh.clusteredKind(ep.Kind) {
		if reenabled {
			ep.ResumeAt = ep.UpdatedAt // events while disabled are not sent
		}
		sealed, err := s.sh.sealSecrets(ep.ID, rc.secret, rc.headers, rc.setSecret, rc.setHeaders)
		if err != nil {
			return View{}, err
		}
		if err := s.persistCluster(ep, sealed); err != nil {
			return View{}, err
		}
		s.sh.sealedMu.Lock()
		merged := map[string][]byte{}
		for k, v := range s.sh.sealed[ep.ID] {
			merged[k] = v
		}
		for k, v := range sealed {
			if v == nil {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		s.sh.sealed[ep.ID] = merged
		s.sh.sealedMu.Unlock()
	} else {
		if err := putSecrets(s.sh.opts.Vault, ep.ID, rc.secret, rc.headers, rc.setSecret, rc.setHeaders); err != nil {
			return View{}, err
		}
		if err := s.sh.endpoints.Put(ep.ID, ep); err != nil {
			return View{}, err
		}
	}
	e.ep = ep
	e.st.enabled = ep.Enabled
	if reenabled {
		e.st.consecutiveDead = 0
	}
	rc.ep = ep
	if e.pid != nil {
		c.Send(e.pid, rc)
	}
	return ep.view(e.st), nil
}

func (s *supervisor) remove(c actor.Context, m *remove) error {
	e, err := s.find(m.id, m.kind)
	if err != nil {
		return err
	}
	if s.sh.clusteredKind(e.ep.Kind) {
		// Record, secrets, outbox and owner go in one Txn; the host's
		// next write is fenced and its next round stops the actor.
		cl, err := (clusterState{s.sh}).link()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		if err := cl.cl.DeleteEndpoint(ctx, e.ep.ID); err != nil {
			return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "deleting the webhook in etcd failed: %s", err.Error())
		}
		if e.pid != nil {
			c.Stop(e.pid)
		}
		s.forget(e.ep.ID)
		return nil
	}
	if err := s.sh.endpoints.Delete(e.ep.ID); err != nil {
		return err
	}
	s.forget(e.ep.ID)
	// The endpoint record is gone, so it will never be loaded again; its
	// outbox, history and secrets are dropped once its actor has stopped
	// (see Terminated), so no write of its own can land after the drop.
	s.removed[e.pid.Id] = e.ep.ID
	c.Stop(e.pid)
	return nil
}

// dropData deletes a removed endpoint's outbox, dead letters, history,
// bookkeeping and secrets. It is rare and runs inline.
func (s *supervisor) dropData(id string) {
	for _, prefix := range []string{outboxName(id), deadName(id), attemptsName(id)} {
		if err := s.sh.db.DeletePrefix(prefix + "/"); err != nil {
			s.sh.log.Error().Err(err).Str("webhook", id).Msg("could not drop a deleted webhook's data")
		}
	}
	if err := putSecrets(s.sh.opts.Vault, id, nil, nil, true, true); err != nil {
		s.sh.log.Error().Err(err).Str("webhook", id).Msg("could not delete a deleted webhook's secrets")
	}
	_ = s.sh.metas.Delete(id)
}
