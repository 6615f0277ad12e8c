package approval

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// EventSink receives the domain's events (approval.requested,
// approval.approved, approval.rejected, approval.expired,
// approval.escalated, approval.cancelled). The comms bus satisfies it.
// PublishDurable must not block; its wait returns once the event is
// durable. A creation or decision is answered only then, so a crash right
// after the answer cannot lose the event that says it happened.
type EventSink interface {
	PublishDurable(eventType, source, target string, detail any) (wait func(context.Context) error)
}

// Notifier posts text to one chat of a configured channel (queued durably
// by the channel; it returns without waiting for delivery).
type Notifier interface {
	Post(ctx context.Context, channel, chatID, text string) error
}

// Options configure the approvals subsystem.
type Options struct {
	Policy Policy
	Events EventSink
	// Now replaces time.Now (tests of expiry and lockout).
	Now func() time.Time
}

// env is what every approvals actor shares.
type env struct {
	k     *kernel.Kernel
	db    *store.DB
	vault *store.Vault
	audit *audit.Log
	// policy is swapped whole by SetPolicy (SIGHUP); actors load it per
	// use, so a request sees one consistent policy for each decision.
	policy  atomic.Pointer[Policy]
	records *store.Collection[Approval]
	// index holds a few fields of every kept request, written in the same
	// transaction as its record, so that loading reads these small values
	// and not every full record (see load).
	index    *store.Collection[indexFields]
	meta     *store.Collection[int]
	events   EventSink
	notifier atomic.Pointer[notifierBox]
	tools    atomic.Pointer[catalogBox]
	// warned holds the unmatched patterns already logged (see
	// CheckPatterns), so a pattern is warned about once per change.
	warnMu sync.Mutex
	warned map[UnmatchedPattern]bool
	now    func() time.Time
	totp   *actor.PID
	log    zerolog.Logger
	// boot hands a new request actor the record its supervisor just wrote
	// or loaded (id -> *Approval), so it is neither read back nor decoded
	// twice; a restarted actor finds nothing here and reads the store.
	boot sync.Map
	// metrics are fangd_approvals_pending and _decided_total.
	metrics *metrics
	// cluster is the etcd side in cluster mode (cluster.go); nil otherwise.
	cluster atomic.Pointer[clusterBox]
}

type notifierBox struct{ n Notifier }

// ToolCatalog is what the approvals subsystem needs to know of the tools
// fangd offers (agents' tools and POST /mcp's): their hints, for Gated,
// and their names, for the unmatched-pattern report.
type ToolCatalog interface {
	// ToolHints returns what is known of a tool; ok is false for a name
	// fangd does not offer.
	ToolHints(name string) (h ToolHints, ok bool)
	// ToolNames lists the tools fangd offers now, sorted.
	ToolNames() []string
	// ServerNames lists the configured MCP servers, connected or not.
	ServerNames() []string
}

type catalogBox struct{ c ToolCatalog }

// Approvals is the handle the HTTP layer, agents and channels use.
type Approvals struct {
	env *env
	pid *actor.PID
}

// Start validates the policy and spawns "approvals-totp" and "approvals";
// the supervisor re-spawns every pending request from the store, with the
// time it has left. auditLog may be nil in tests.
func Start(k *kernel.Kernel, db *store.DB, vault *store.Vault, auditLog *audit.Log, opts Options) (*Approvals, error) {
	if vault == nil {
		return nil, errors.New("approvals: the vault is required (TOTP secrets live there)")
	}
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &env{k: k, db: db, vault: vault, audit: auditLog, events: opts.Events, now: opts.Now,
		records: store.NewCollection[Approval](db, "approvals"),
		index:   store.NewCollection[indexFields](db, "approvals-index"),
		meta:    store.NewCollection[int](db, "approvals-meta"),
		log:     k.Log.With().Str("component", "approvals").Logger()}
	pol := opts.Policy
	e.policy.Store(&pol)
	var err error
	if e.metrics, err = newMetrics(k.Metrics); err != nil {
		return nil, err
	}
	if e.totp, err = k.SpawnRoot("approvals-totp", func() actor.Actor { return &totpActor{env: e} }); err != nil {
		return nil, err
	}
	pid, err := k.SpawnRoot("approvals", func() actor.Actor { return &supervisor{env: e} })
	if err != nil {
		return nil, err
	}
	return &Approvals{env: e, pid: pid}, nil
}

// PID is the supervisor's, for actors that ask it with RequestFuture.
func (a *Approvals) PID() *actor.PID { return a.pid }

// Policy is the validated policy in force. Callers must not modify it.
func (a *Approvals) Policy() *Policy { return a.env.policy.Load() }

// SetPolicy validates p and, when it is valid, makes it the policy in
// force for every later decision (config reload). Requests already pending
// keep their expiry and risk level; an invalid p changes nothing.
func (a *Approvals) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	a.env.policy.Store(&p)
	return nil
}

// SetTools wires the catalog of offered tools (MCP starts after
// approvals). Until it is set every tool counts as unknown, and so waits
// unless the policy lets it through by name.
func (a *Approvals) SetTools(c ToolCatalog) { a.env.tools.Store(&catalogBox{c}) }

func (a *Approvals) hints(tool string) (ToolHints, bool) {
	if box := a.env.tools.Load(); box != nil && box.c != nil {
		return box.c.ToolHints(tool)
	}
	return ToolHints{}, false
}

// Gated reports whether a call of tool (by an agent or through POST
// /mcp) waits for a decision.
func (a *Approvals) Gated(tool string) bool {
	h, _ := a.hints(tool)
	return a.Policy().Gated(tool, h)
}

// ToolGate is one offered tool as GET /api/approvals/policy shows it.
type ToolGate struct {
	Name string `json:"name"`
	ToolHints
	Gated  bool   `json:"gated"`
	Reason string `json:"reason"`
}

// PolicyReport is the policy in force applied to the tools offered now.
type PolicyReport struct {
	RequireApproval    []string           `json:"require_approval"`
	AutoApprove        AutoApprove        `json:"auto_approve"`
	TrustReadOnlyHints []string           `json:"trust_read_only_hints"`
	TimeoutSecs        int                `json:"timeout_secs"`
	TimeoutAction      string             `json:"timeout_action"`
	SecondFactor       string             `json:"second_factor"`
	Tools              []ToolGate         `json:"tools"`
	UnmatchedPatterns  []UnmatchedPattern `json:"unmatched_patterns"`
}

// Report applies the policy to every offered tool and lists the patterns
// that match none.
func (a *Approvals) Report() *PolicyReport {
	p := a.Policy()
	r := &PolicyReport{RequireApproval: p.RequireApproval, AutoApprove: p.AutoApprove, TrustReadOnlyHints: p.TrustReadOnlyHints,
		TimeoutSecs: p.TimeoutSecs, TimeoutAction: p.TimeoutAction, SecondFactor: p.SecondFactor, Tools: []ToolGate{}}
	var names, servers []string
	if box := a.env.tools.Load(); box != nil && box.c != nil {
		names, servers = box.c.ToolNames(), box.c.ServerNames()
	}
	for _, n := range names {
		h, _ := a.hints(n)
		gated, why := p.Gate(n, h)
		r.Tools = append(r.Tools, ToolGate{Name: n, ToolHints: h, Gated: gated, Reason: why})
	}
	r.UnmatchedPatterns = p.Unmatched(names, servers)
	if r.UnmatchedPatterns == nil {
		r.UnmatchedPatterns = []UnmatchedPattern{}
	}
	return r
}

// CheckPatterns logs a warning for each policy pattern that newly matches
// no offered tool, and a note when one matches again. The daemon calls it
// once its MCP servers had their chance to connect and after every change
// of the tool set.
func (a *Approvals) CheckPatterns() []UnmatchedPattern {
	now := a.Report().UnmatchedPatterns
	a.env.warnMu.Lock()
	defer a.env.warnMu.Unlock()
	seen := make(map[UnmatchedPattern]bool, len(now))
	for _, u := range now {
		seen[u] = true
		if !a.env.warned[u] {
			a.env.log.Warn().Str("key", u.Key).Str("pattern", u.Pattern).
				Msg("approval policy pattern matches no tool fangd offers (a typo, a server not connected, or another product's tool name); it changes nothing")
		}
	}
	for u := range a.env.warned {
		if !seen[u] {
			a.env.log.Info().Str("key", u.Key).Str("pattern", u.Pattern).Msg("approval policy pattern matches an offered tool again")
		}
	}
	a.env.warned = seen
	return now
}

// MaxWait is the longest a request can stay pending.
func (a *Approvals) MaxWait() time.Duration { return a.env.policy.Load().MaxWait() }

// SetNotifier wires the channels that requests are posted to (channels
// start after agents, which start after approvals).
func (a *Approvals) SetNotifier(n Notifier) { a.env.notifier.Store(&notifierBox{n}) }

// Create makes a request and returns it once durable and audited.
func (a *Approvals) Create(ctx context.Context, req Request) (*Approval, error) {
	return kernel.Ask[*Approval](ctx, a.env.k, a.pid, &Create{Req: req})
}

// Get returns one request; in cluster mode also one another node raised.
func (a *Approvals) Get(ctx context.Context, id string) (*Approval, error) {
	rec, err := kernel.Ask[*Approval](ctx, a.env.k, a.pid, &Get{ID: id})
	if cl := a.env.clusterStore(); cl != nil && isNotFound(err) {
		cur, ok, cerr := cl.Get(ctx, id)
		if cerr != nil {
			return nil, kernel.Unavailable("the cluster store did not answer: %v", cerr)
		}
		if ok && cur.Node != cl.NodeName() {
			return approvalOf(cur), nil
		}
	}
	return rec, err
}

// List returns a page of requests; in cluster mode with the other nodes'
// requests merged in (cluster.go).
func (a *Approvals) List(ctx context.Context, status string, offset, limit int) (*Page, error) {
	cl := a.env.clusterStore()
	if cl == nil {
		return kernel.Ask[*Page](ctx, a.env.k, a.pid, &List{Status: status, Offset: offset, Limit: limit})
	}
	others, err := a.others(ctx, cl)
	if err != nil {
		return nil, err
	}
	local, err := kernel.Ask[*Page](ctx, a.env.k, a.pid, &List{Status: status, Offset: 0, Limit: offset + limit})
	if err != nil {
		return nil, err
	}
	return mergeCluster(local, others, status, offset, limit), nil
}

// Wait returns the request once it is decided, or its current state after
// d (a long poll) or when ctx ends (shutting down: answer with what there
// is).
func (a *Approvals) Wait(ctx context.Context, id string, d time.Duration) (*Approval, error) {
	cur, err := a.Get(ctx, id)
	if err != nil || !cur.Pending() || d <= 0 {
		return cur, err
	}
	if cur.Node != "" {
		return a.waitRemote(ctx, cur, d)
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	rec, err := kernel.Ask[*Approval](wctx, a.env.k, a.pid, &Await{ID: id, Until: time.Now().Add(d)})
	if err == nil {
		return rec, nil
	}
	if e := kernel.AsError(err); e == nil || (e.Code != "actor_timeout" && e.Code != "request_cancelled" && e.Code != "actor_unavailable") {
		return nil, err
	}
	return a.Get(context.WithoutCancel(ctx), id)
}

// regateDelay is the pause before asking the supervisor again when it
// could not answer a Gate (restarting).
const regateDelay = 500 * time.Millisecond

// GateCall makes the request for a tool call that waits (req.ID, drawn
// when empty) and returns it once decided: the synchronous form of the
// Gate message, for callers that are not actors (POST /mcp). tick is
// called with the request's id at once and then every interval until the
// decision, so the caller can report progress. When ctx ends first the
// request is cancelled (nobody is left to run the call) and ctx's error
// returned.
func (a *Approvals) GateCall(ctx context.Context, req Request, interval time.Duration, tick func(id string)) (*Approval, error) {
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	if tick != nil {
		tick(req.ID)
		// The ticks go on beside the ask; they are over when GateCall
		// returns.
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			ticker := time.NewTicker(interval)
			defer ticker.Stop()
			for {
				select {
				case <-ticker.C:
					tick(req.ID)
				case <-stop:
					return
				}
			}
		}()
		defer func() { close(stop); <-stopped }()
	}
	for {
		gctx, cancel := context.WithTimeout(ctx, a.MaxWait()+time.Minute)
		rec, err := kernel.Ask[*Approval](gctx, a.env.k, a.pid, &Gate{Req: req})
		cancel()
		if err == nil {
			return rec, nil
		}
		if ctx.Err() != nil {
			if _, err := a.Cancel(context.WithoutCancel(ctx), req.ID, "the caller stopped waiting"); err != nil {
				// Conflict: decided meanwhile, nothing to withdraw.
				if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindConflict {
					a.env.log.Warn().Err(err).Str("approval_id", req.ID).Msg("could not withdraw an approval nobody waits for")
				}
			}
			return nil, ctx.Err()
		}
		if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindUnavailable {
			return nil, err
		}
		// Timed out or the supervisor was restarting: the request is
		// durable and Gate idempotent, so ask again.
		select {
		case <-time.After(regateDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Decide approves or rejects a request.
func (a *Approvals) Decide(ctx context.Context, d Decide) (*Approval, error) {
	// A TOTP check and the audit append sit on this path.
	ctx, cancel := kernel.WithDefaultTimeout(ctx, kernel.DefaultAskTimeout+audit.AppendTimeout)
	defer cancel()
	rec, err := kernel.Ask[*Approval](ctx, a.env.k, a.pid, &d)
	if cl := a.env.clusterStore(); cl != nil && isNotFound(err) {
		// Raised on another node: decided here, through etcd.
		return a.decideRemote(ctx, cl, d)
	}
	return rec, err
}

// Cancel withdraws a pending request.
func (a *Approvals) Cancel(ctx context.Context, id, reason string) (*Approval, error) {
	return kernel.Ask[*Approval](ctx, a.env.k, a.pid, &Cancel{ID: id, Reason: reason})
}

// TOTPSetup, TOTPConfirm, TOTPRevoke and TOTPStatus manage the second factor.
func (a *Approvals) TOTPSetup(ctx context.Context, currentCode string, who Decider) (*Enrolment, error) {
	return kernel.Ask[*Enrolment](ctx, a.env.k, a.env.totp, &TOTPSetup{CurrentCode: currentCode, Who: who})
}

// TOTPConfirm proves a pending enrolment.
func (a *Approvals) TOTPConfirm(ctx context.Context, code string, who Decider) (*TOTPResult, error) {
	return kernel.Ask[*TOTPResult](ctx, a.env.k, a.env.totp, &TOTPConfirm{Code: code, Who: who})
}

// TOTPCancel drops the enrolment awaiting confirmation.
func (a *Approvals) TOTPCancel(ctx context.Context, who Decider) (*TOTPResult, error) {
	return kernel.Ask[*TOTPResult](ctx, a.env.k, a.env.totp, &TOTPCancel{Who: who})
}

// TOTPRevoke removes the enrolment.
func (a *Approvals) TOTPRevoke(ctx context.Context, code string, who Decider) (*TOTPResult, error) {
	return kernel.Ask[*TOTPResult](ctx, a.env.k, a.env.totp, &TOTPRevoke{Code: code, Who: who})
}

// TOTPStatus reports the enrolment.
func (a *Approvals) TOTPStatus(ctx context.Context) (*TOTPStatus, error) {
	return kernel.Ask[*TOTPStatus](ctx, a.env.k, a.env.totp, &TOTPStatusQuery{})
}

// auditThenRespond answers the sender once ev is durable (in a goroutine:
// the mailbox does not wait for the audit log). If the entry cannot be
// written, the caller gets that error rather than a success the audit log
// does not show.
func (e *env) auditThenRespond(c actor.Context, ev audit.Event, reply any) {
	sender, system := c.Sender(), c.ActorSystem()
	go func() {
		if err := e.appendAudit(ev); err != nil {
			if _, failed := reply.(error); !failed {
				reply = err
			}
		}
		if sender != nil {
			system.Root.Send(sender, reply)
		}
	}()
}

// saveThen writes a record and its index entry without waiting for the
// sync (UpdateAsync: no synced write in an actor's Receive, see
// docs/architecture.md) and continues with then in the calling actor's
// Receive once they are durable or failed (the actor handles *persisted).
// The write is ordered before every later read and write of the store, so
// the actor needs to hold back only what depends on it being durable: its
// answers, and decisions about the same request.
func (e *env) saveThen(c actor.Context, rec *Approval, then func(c actor.Context, err error)) {
	self, root := c.Self(), c.ActorSystem().Root
	e.db.UpdateAsync(func(tx *store.Txn) error {
		if err := e.records.PutTx(tx, rec.ID, *rec); err != nil {
			return err
		}
		return e.index.PutTx(tx, rec.ID, indexOf(rec))
	}, func(err error) { root.Send(self, &persisted{then: then, err: err}) })
}

// removeAsync deletes records and their index entries without waiting,
// in transactions of at most removeBatch requests; a failure is logged
// (the records then come back as kept decisions after a restart).
func (e *env) removeAsync(ids ...string) {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), removeBatch)]
		ids = ids[len(batch):]
		e.db.UpdateAsync(func(tx *store.Txn) error {
			for _, id := range batch {
				if err := e.records.DeleteTx(tx, id); err != nil {
					return err
				}
				if err := e.index.DeleteTx(tx, id); err != nil {
					return err
				}
			}
			return nil
		}, func(err error) {
			if err != nil {
				e.log.Warn().Err(err).Msg("could not remove old decided approvals")
			}
		})
	}
}

const removeBatch = 1000

// indexFields is a request's entry in the "approvals-index" collection:
// what the supervisor keeps of a pending request, and the status that says
// whether the full record must be read (a kept decision). Short names and
// unix nanoseconds keep it to ~100 bytes, so that the load reads little.
type indexFields struct {
	AgentID     string `json:"a"`
	Status      string `json:"s"`
	RequestedAt int64  `json:"r"`
	ExpiresAt   int64  `json:"e"`
}

func indexOf(rec *Approval) indexFields {
	return indexFields{AgentID: rec.AgentID, Status: rec.Status, RequestedAt: rec.RequestedAt.UnixNano(), ExpiresAt: rec.ExpiresAt.UnixNano()}
}

func (e *env) appendAudit(ev audit.Event) error {
	if e.audit == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
	defer cancel()
	_, err := e.audit.Append(ctx, ev)
	return err
}

// Event is the detail of an approval event: what a subscriber needs to
// react, without the payload and description (GET /api/approvals/{id} has
// them). Events stay small because the bus keeps its last N in memory and
// fans them out to webhooks.
type Event struct {
	ID           string     `json:"id"`
	AgentID      string     `json:"agent_id"`
	AgentName    string     `json:"agent_name"`
	Action       string     `json:"action"`
	RiskLevel    string     `json:"risk_level"`
	Status       string     `json:"status"`
	RequestedAt  time.Time  `json:"requested_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	DecidedAt    *time.Time `json:"decided_at,omitempty"`
	DecidedBy    string     `json:"decided_by,omitempty"`
	DecidedVia   string     `json:"decided_via,omitempty"`
	SecondFactor string     `json:"second_factor,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	Escalations  int        `json:"escalations,omitempty"`
}

// publish sends an event (in the caller's order) and returns a wait for
// its durability, for the goroutine that answers the caller.
func (e *env) publish(typ string, rec *Approval, source string) (wait func() error) {
	if e.events == nil {
		return func() error { return nil }
	}
	ev := &Event{ID: rec.ID, AgentID: rec.AgentID, AgentName: rec.AgentName, Action: rec.Action, RiskLevel: rec.RiskLevel,
		Status: rec.Status, RequestedAt: rec.RequestedAt, ExpiresAt: rec.ExpiresAt, DecidedAt: rec.DecidedAt,
		DecidedBy: rec.DecidedBy, DecidedVia: rec.DecidedVia, Reason: truncate(rec.Reason, 200), Escalations: rec.Escalations}
	if rec.SecondFactor != FactorNone {
		ev.SecondFactor = rec.SecondFactor
	}
	durable := e.events.PublishDurable(typ, source, "agent:"+rec.AgentID, ev)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), audit.AppendTimeout)
		defer cancel()
		if err := durable(ctx); err != nil {
			e.log.Error().Err(err).Str("approval_id", rec.ID).Str("event", typ).Msg("approval event not recorded on the comms bus")
			return err
		}
		return nil
	}
}

// post sends text to every notify target, in the background; except
// skips the chat a decision came from (it gets the answer there).
func (e *env) post(text string, except NotifyTarget) {
	box := e.notifier.Load()
	notify := e.policy.Load().Notify
	if box == nil || box.n == nil || len(notify) == 0 {
		return
	}
	for _, n := range notify {
		if n.Channel == except.Channel && n.ChatID == except.ChatID {
			continue
		}
		go func(n NotifyTarget) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := box.n.Post(ctx, n.Channel, n.ChatID, text); err != nil {
				e.log.Warn().Err(err).Str("channel", n.Channel).Msg("could not post an approval notice")
			}
		}(n)
	}
}
