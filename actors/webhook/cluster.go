package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Cluster mode (docs/cluster.md, "Webhooks across the cluster"): endpoint
// records and their sealed secrets live in etcd; each endpoint's outbox
// actor runs only on the node holding the endpoint's owner lease, its
// state in etcd under fenced writes (clusterState); every node's producer
// appends the events of its own bus that match an endpoint to that
// endpoint's intake in etcd, and the owner moves them into the outbox.
// actors/cluster implements Cluster on etcd and decides ownership.

// Cluster is the cluster-wide store of webhook endpoints. Keys of an
// endpoint's state are relative to it: "q/…", "dl/…", "att/…", "meta",
// "in/<node>/…" (intake), "pc/<node>" (a producer's bus cursor).
type Cluster interface {
	// PutEndpoint stores an endpoint's record (JSON) and its sealed
	// secrets in one transaction: a name with a nil value is deleted, a
	// name not given is left as is.
	PutEndpoint(ctx context.Context, id string, rec []byte, sealed map[string][]byte) error
	// DeleteEndpoint removes an endpoint's record, secrets, state and owner.
	DeleteEndpoint(ctx context.Context, id string) error
	// Append writes ops unfenced (any node may append to an intake and
	// move its own cursor), only while the endpoint exists: false when
	// it does not.
	Append(ctx context.Context, id string, ops []StateOp) (bool, error)
	// Commit writes ops in order, each transaction conditioned on this
	// node still holding the endpoint's owner lease; an error once not.
	Commit(ctx context.Context, id string, ops []StateOp) error
	// Read lists the state keys of id in [start, end) ("" end: all that
	// follow start under prefix), ascending or descending, at most limit.
	Read(ctx context.Context, id, prefix, start, end string, reverse bool, limit int) ([]StateKV, error)
	// Count is how many state keys of id are under prefix.
	Count(ctx context.Context, id, prefix string) (int, error)
	// Kick asks for an ownership round now.
	Kick()
}

// StateOp is one write to an endpoint's state.
type StateOp struct {
	Key    string
	Value  []byte
	Delete bool
}

// StateKV is one state key (relative) and its value.
type StateKV struct {
	Key   string
	Value []byte
}

// ClusterEndpoint is one endpoint as an ownership round saw it.
type ClusterEndpoint struct {
	ID     string
	Record []byte
	Sealed map[string][]byte
	// Node hosts its outbox ("" while nobody does); Mine when this node
	// does, with its lease alive.
	Node string
	Mine bool
}

// Sealed secret names in etcd.
const (
	sealedSecret  = "secret"
	sealedHeaders = "headers"
)

// clusterTimeout bounds one etcd call of the webhook engine.
const clusterTimeout = 10 * time.Second

// UseCluster makes the engine cluster-wide; call it before the node
// joins (the supervisor then waits for the first ownership round instead
// of loading Badger). node is this node's name (its producer cursor).
func (e *Engine) UseCluster(cl Cluster, node string) {
	e.sh.cl.Store(&clusterLink{cl: cl, node: node})
}

// Clustered reports whether endpoints are cluster-wide.
func (e *Engine) Clustered() bool { return e.opts.Clustered }

// errNoCluster is a cluster store call before the node joined.
var errNoCluster = kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "the cluster is not joined yet")

// link is the cluster link, or errNoCluster before the node joined.
func (c clusterState) link() (*clusterLink, error) {
	if l := c.sh.cluster(); l != nil {
		return l, nil
	}
	return nil, errNoCluster
}

// ApplyCluster hands the supervisor an ownership round's result.
func (e *Engine) ApplyCluster(eps []ClusterEndpoint) {
	e.k.Root.Send(e.pid, &clusterView{eps: eps})
}

type clusterLink struct {
	cl   Cluster
	node string
}

type clusterView struct{ eps []ClusterEndpoint }

// intakeKick asks an owner's outbox to move what waits in its intake.
type intakeKick struct{}

// intaken is an intake read: the appended messages, oldest first.
type intaken struct {
	kvs []StateKV
	err error
}

// intakeBatch is how many appended messages one move takes.
const intakeBatch = 100

// intake reads the endpoint's intake off the actor, unless a read or its
// move is under way (then once more after it).
func (o *outbox) intake() {
	cl := o.sh.cluster()
	if cl == nil || o.fenced {
		return
	}
	if o.intaking {
		o.again = true
		return
	}
	o.intaking, o.again = true, false
	id, self, sys := o.ep.ID, o.self, o.sys
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		kvs, err := cl.cl.Read(ctx, id, logIntake+"/", "", "", false, intakeBatch)
		sys.Root.Send(self, &intaken{kvs: kvs, err: err})
	}()
}

// intook moves read intake messages into the outbox tail in one write
// that also deletes their intake keys.
func (o *outbox) intook(m *intaken) {
	if m.err != nil || len(m.kvs) == 0 {
		o.intaking = false
		if m.err != nil {
			o.sh.log.Warn().Err(m.err).Str("webhook", o.ep.ID).Msg("webhook intake not read; retried on the next round")
		}
		if o.again && m.err == nil {
			o.intake()
		}
		return
	}
	// Appends land in key order per producer, but producers interleave:
	// order by the time they were enqueued, then by key.
	msgs := make([]*message, 0, len(m.kvs))
	extra := make([]wr, 0, len(m.kvs))
	for _, kv := range m.kvs {
		extra = append(extra, wr{log: logIntake, key: kv.Key, del: true})
		var msg message
		if err := json.Unmarshal(kv.Value, &msg); err != nil {
			o.sh.log.Error().Err(err).Str("webhook", o.ep.ID).Str("key", kv.Key).Msg("webhook intake entry unreadable; dropped")
			continue
		}
		msgs = append(msgs, &msg)
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].Enqueued.Before(msgs[j].Enqueued) })
	if !o.ep.Enabled {
		msgs = nil // appended before the disable was seen: not sent, as on one node
	}
	full := len(m.kvs) == intakeBatch
	o.queueMessages(msgs, extra, func() {
		o.intaking = false
		if full || o.again {
			o.intake()
		}
		o.report()
		o.kick()
	})
}

// cluster is the cluster link, nil on a single node.
func (sh *shared) cluster() *clusterLink { return sh.cl.Load() }

// openSecret opens one of endpoint id's secrets: from the vault on a
// single node, from its sealed copy in etcd (the last round's) in cluster
// mode.
func (sh *shared) openSecret(ep *Endpoint, name string, fn func([]byte) error) error {
	id := ep.ID
	if !sh.clusteredKind(ep.Kind) {
		return sh.opts.Vault.With(name, fn)
	}
	key := sealedSecret
	if name == headersName(id) {
		key = sealedHeaders
	}
	sh.sealedMu.Lock()
	sealed, ok := sh.sealed[id][key]
	sh.sealedMu.Unlock()
	if !ok {
		return store.ErrNotFound
	}
	if err := sh.opts.Vault.Open(name, sealed, fn); err != nil {
		return fmt.Errorf("%w (every node needs the same %s in cluster mode)", err, store.VaultKeyEnv)
	}
	return nil
}

// sealSecrets seals a create's or update's secrets for etcd: nil values
// delete, names not set are left unchanged.
func (sh *shared) sealSecrets(id string, secret []byte, headers map[string]string, setSecret, setHeaders bool) (map[string][]byte, error) {
	out := map[string][]byte{}
	if setSecret {
		out[sealedSecret] = nil
		if len(secret) > 0 {
			b, err := sh.opts.Vault.Seal(secretName(id), secret)
			if err != nil {
				return nil, err
			}
			out[sealedSecret] = b
		}
	}
	if setHeaders {
		out[sealedHeaders] = nil
		if len(headers) > 0 {
			raw, err := encodeHeaders(headers)
			if err != nil {
				return nil, err
			}
			b, err := sh.opts.Vault.Seal(headersName(id), raw)
			if err != nil {
				return nil, err
			}
			out[sealedHeaders] = b
		}
	}
	return out, nil
}

// clusterState keeps endpoint state in etcd (the backend of cluster mode).
type clusterState struct{ sh *shared }

func stateKey(log string, seq uint64) string { return fmt.Sprintf("%s/%020d", log, seq) }

func (c clusterState) commit(id string, ops []op) error {
	cl, err := c.link()
	if err != nil {
		return err
	}
	var sops []StateOp
	for _, o := range ops {
		for _, w := range o.w {
			switch {
			case w.log == logMeta:
				raw, err := json.Marshal(w.meta)
				if err != nil {
					return err
				}
				sops = append(sops, StateOp{Key: logMeta, Value: raw})
			case w.log == logIntake:
				sops = append(sops, StateOp{Key: w.key, Delete: true})
			default:
				sops = append(sops, StateOp{Key: stateKey(w.log, w.seq), Value: w.val, Delete: w.del})
			}
		}
	}
	if len(sops) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	return cl.cl.Commit(ctx, id, sops)
}

// scanPage is how many entries one etcd read of a scan takes.
const scanPage = 256

func (c clusterState) scan(id, log string, from uint64, reverse bool, fn func(uint64, []byte) (bool, error)) error {
	cl, err := c.link()
	if err != nil {
		return err
	}
	start, end := stateKey(log, from), ""
	if reverse {
		start, end = "", ""
		if from > 0 {
			end = stateKey(log, from+1)
		}
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		kvs, err := cl.cl.Read(ctx, id, log+"/", start, end, reverse, scanPage)
		cancel()
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			seq, err := strconv.ParseUint(strings.TrimPrefix(kv.Key, log+"/"), 10, 64)
			if err != nil {
				continue
			}
			more, err := fn(seq, kv.Value)
			if err != nil || !more {
				return err
			}
		}
		if len(kvs) < scanPage {
			return nil
		}
		last := kvs[len(kvs)-1].Key
		if reverse {
			end = last
		} else {
			start = last + "\x00"
		}
	}
}

func (c clusterState) meta(id string) (meta, error) {
	cl, err := c.link()
	if err != nil {
		return meta{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	kvs, err := cl.cl.Read(ctx, id, logMeta, logMeta, "", false, 1)
	if err != nil {
		return meta{}, err
	}
	if len(kvs) == 0 || kvs[0].Key != logMeta {
		return meta{}, store.ErrNotFound
	}
	var m meta
	err = json.Unmarshal(kvs[0].Value, &m)
	return m, err
}

// counts fills a cluster endpoint view's counts from etcd: pending is the
// outbox plus what waits in its intake.
func (e *Engine) counts(ctx context.Context, v *View) {
	cl := e.sh.cluster()
	if cl == nil || !e.sh.clusteredKind(v.Kind) {
		return
	}
	q, err1 := cl.cl.Count(ctx, v.ID, logQueue+"/")
	in, err2 := cl.cl.Count(ctx, v.ID, logIntake+"/")
	dl, err3 := cl.cl.Count(ctx, v.ID, logDead+"/")
	if err1 == nil && err2 == nil && err3 == nil {
		v.Pending, v.DeadLetters = q+in, dl
	}
	if m, err := (clusterState{e.sh}).meta(v.ID); err == nil {
		v.ConsecutiveDead = m.ConsecutiveDead
	}
}

// --- the supervisor's side ---

// applyCluster reconciles the endpoint actors with an ownership round:
// it starts the outboxes this node now holds, stops those it lost, keeps
// every endpoint listed, and asks its own outboxes to move their intake.
func (s *supervisor) applyCluster(c actor.Context, v *clusterView) {
	sh := s.sh
	seen := map[string]bool{}
	var eps []Endpoint
	for _, ce := range v.eps {
		var ep Endpoint
		if err := json.Unmarshal(ce.Record, &ep); err != nil || ep.ID != ce.ID {
			sh.log.Error().Str("webhook", ce.ID).Msg("cluster webhook record unreadable; skipped")
			continue
		}
		seen[ep.ID] = true
		eps = append(eps, ep)
		sh.sealedMu.Lock()
		secretsChanged := !sameSealed(sh.sealed[ep.ID], ce.Sealed)
		sh.sealed[ep.ID] = ce.Sealed
		sh.sealedMu.Unlock()
		e := s.entries[ep.ID]
		if e == nil {
			e = &entry{ep: ep, st: stats{id: ep.ID, enabled: ep.Enabled}}
			s.entries[ep.ID] = e
			s.order = append(s.order, ep.ID)
		}
		if newer(e.ep.UpdatedAt, ep.UpdatedAt) {
			// This node changed it (an outbox that disabled itself)
			// and the write is still on its way to etcd: keep ours.
			ep = e.ep
		}
		changed := e.ep.UpdatedAt != ep.UpdatedAt || e.ep.Enabled != ep.Enabled
		e.ep, e.node, e.st.enabled = ep, ce.Node, ep.Enabled
		switch {
		case ce.Mine && e.pid == nil:
			if err := s.spawnActor(c, e); err != nil {
				sh.log.Error().Err(err).Str("webhook", ep.ID).Msg("webhook outbox not started")
				continue
			}
			sh.log.Info().Str("webhook", ep.ID).Msg("webhook outbox taken over by this node")
		case ce.Mine && (changed || secretsChanged):
			c.Send(e.pid, &reconfigure{ep: ep, setSecret: secretsChanged, setHeaders: secretsChanged})
		case !ce.Mine && e.pid != nil:
			// Lost the lease: stop delivering at once; every write of
			// the old actor is fenced anyway.
			c.Stop(e.pid)
			e.pid = nil
			sh.log.Warn().Str("webhook", ep.ID).Str("now_on", ce.Node).Msg("webhook outbox no longer hosted here; stopped")
		}
		if e.pid != nil {
			c.Send(e.pid, &intakeKick{})
		}
	}
	for id, e := range s.entries {
		if seen[id] || !s.sh.clusteredKind(e.ep.Kind) {
			continue
		}
		// Deleted through another node.
		if e.pid != nil {
			c.Stop(e.pid)
		}
		s.forget(id)
	}
	sortEntries(s)
	s.rounds = true
	s.prod.set(eps)
}

// newer reports whether RFC 3339 time a is after b.
func newer(a, b string) bool {
	ta, err1 := time.Parse(time.RFC3339Nano, a)
	tb, err2 := time.Parse(time.RFC3339Nano, b)
	return err1 == nil && err2 == nil && ta.After(tb)
}

func sameSealed(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

// sortEntries keeps s.order in creation order.
func sortEntries(s *supervisor) {
	sort.SliceStable(s.order, func(i, j int) bool {
		return s.entries[s.order[i]].ep.CreatedAt < s.entries[s.order[j]].ep.CreatedAt
	})
}

// persistCluster stores an endpoint record and its changed secrets in
// etcd (a rare admin call, like the Badger write it replaces).
func (s *supervisor) persistCluster(ep Endpoint, sealed map[string][]byte) error {
	raw, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	cl, err := (clusterState{s.sh}).link()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := cl.cl.PutEndpoint(ctx, ep.ID, raw, sealed); err != nil {
		return kernel.Errorf(kernel.KindUnavailable, "cluster_unavailable", "storing the webhook in etcd failed: %s", err.Error())
	}
	return nil
}

// HostedElsewhere is the cause of a "hosted_elsewhere" error: webhook
// Webhook's outbox runs on cluster node Node. transport/http forwards the
// request there (docs/cluster.md "Request routing"); the 409 is what a
// caller sees only when forwarding does not apply.
type HostedElsewhere struct {
	Webhook string
	Node    string
}

func (h *HostedElsewhere) Error() string {
	return "webhook " + h.Webhook + " is hosted on node " + h.Node
}

// Host names the endpoint and its node, for request routing.
func (h *HostedElsewhere) Host() (what, node string) { return "webhook " + h.Webhook, h.Node }

// notHere answers a request that needs the outbox actor of an endpoint
// another node hosts (a test delivery, a replay).
func notHere(e *entry) error {
	if e.node == "" {
		return kernel.Errorf(kernel.KindUnavailable, "not_hosted", "no cluster node hosts webhook %s right now; try again in a few seconds", e.ep.ID)
	}
	ke := kernel.Errorf(kernel.KindConflict, "hosted_elsewhere", "webhook %s is hosted on cluster node %s; send this request to that node", e.ep.ID, e.node)
	ke.Err = &HostedElsewhere{Webhook: e.ep.ID, Node: e.node}
	return ke
}

// --- the producer: this node's events into every endpoint's intake ---

// producer appends the events of this node's bus that match an endpoint
// to that endpoint's intake in etcd, with this node's cursor for it in
// the same transaction: after a crash it resumes from the cursor, so an
// event committed on this node's bus is appended once (or, if this node
// never comes back, lost with its disk; docs/cluster.md).
type producer struct {
	sh      *shared
	kick    chan struct{}
	appends func(id string) // an endpoint got new intake
	done    chan struct{}   // closed when run returns

	mu  sync.Mutex
	eps []Endpoint
	cur map[string]uint64 // endpoint id -> last bus id considered
}

func newProducer(sh *shared, appended func(string)) *producer {
	return &producer{sh: sh, kick: make(chan struct{}, 1), appends: appended, cur: map[string]uint64{}, done: make(chan struct{})}
}

func (p *producer) set(eps []Endpoint) {
	p.mu.Lock()
	p.eps = eps
	known := make(map[string]bool, len(eps))
	for _, ep := range eps {
		known[ep.ID] = true
	}
	for id := range p.cur {
		if !known[id] {
			delete(p.cur, id)
		}
	}
	p.mu.Unlock()
	p.poke()
}

func (p *producer) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run appends until ctx ends: on every bus batch (poke) and every second
// (a failed append is retried).
func (p *producer) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
		p.mu.Lock()
		eps := p.eps
		p.mu.Unlock()
		for _, ep := range eps {
			if err := p.produce(ctx, ep); err != nil && ctx.Err() == nil {
				p.sh.log.Warn().Err(err).Str("webhook", ep.ID).Msg("webhook events not appended to the cluster intake; retrying")
			}
		}
	}
}

// appendBatch is how many events one append carries (etcd's 128
// operations per transaction, with the cursor and a margin).
const appendBatch = 100

func (p *producer) produce(ctx context.Context, ep Endpoint) error {
	if !ep.Enabled {
		// The cursor stays: a re-enable sets ResumeAt, and what came
		// before it is skipped then, with no gap after it.
		return nil
	}
	cl := p.sh.cluster()
	p.mu.Lock()
	cur, known := p.cur[ep.ID]
	p.mu.Unlock()
	if !known {
		c, err := p.loadCursor(ctx, cl, ep)
		if err != nil {
			return err
		}
		cur = c
	}
	resume, _ := time.Parse(time.RFC3339Nano, ep.ResumeAt)
	for {
		var ops []StateOp
		last, n := cur, 0
		self := "webhook:" + ep.ID
		err := p.sh.opts.Bus.Since(cur, func(r *comms.Record) bool {
			last = r.ID
			if r.Source == self || !comms.MatchAny(ep.Events, r.Type) {
				return true
			}
			var hdr struct {
				Timestamp string `json:"timestamp"`
			}
			_ = json.Unmarshal(r.JSON, &hdr)
			if at, err := time.Parse(time.RFC3339Nano, hdr.Timestamp); err == nil && at.Before(resume) {
				return true // before the endpoint was created or re-enabled
			}
			t := time.Now().UTC()
			m := newMessage(event{id: r.ID, typ: r.Type, json: r.JSON}, t)
			raw, _ := json.Marshal(m)
			ops = append(ops, StateOp{Key: fmt.Sprintf("%s/%s/%020d", logIntake, cl.node, r.ID), Value: raw})
			n++
			return n < appendBatch
		})
		if err != nil {
			return err
		}
		if last == cur {
			return nil
		}
		ops = append(ops, StateOp{Key: "pc/" + cl.node, Value: []byte(strconv.FormatUint(last, 10))})
		c, cancel := context.WithTimeout(ctx, clusterTimeout)
		exists, err := cl.cl.Append(c, ep.ID, ops)
		cancel()
		if err != nil {
			return err
		}
		cur = last
		p.mu.Lock()
		p.cur[ep.ID] = cur
		p.mu.Unlock()
		if !exists {
			return nil
		}
		if n > 0 {
			p.appends(ep.ID)
		}
		if n < appendBatch {
			return nil
		}
	}
}

// loadCursor is this node's cursor for ep from etcd; a node that has none
// yet starts at the beginning of its bus, and the timestamp check in
// produce skips what came before the endpoint was created.
func (p *producer) loadCursor(ctx context.Context, cl *clusterLink, ep Endpoint) (uint64, error) {
	c, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	key := "pc/" + cl.node
	kvs, err := cl.cl.Read(c, ep.ID, key, key, "", false, 1)
	if err != nil {
		return 0, err
	}
	if len(kvs) != 1 || kvs[0].Key != key {
		return 0, nil
	}
	cur, err := strconv.ParseUint(string(kvs[0].Value), 10, 64)
	if err != nil {
		return 0, err
	}
	q, err := p.sh.opts.Bus.Query(c, comms.Query{Limit: 0})
	if err != nil {
		return 0, err
	}
	if cur > q.Last {
		// Past the end of this node's bus: the node name was reused
		// with a new home. Start over; resume_at skips the old.
		p.sh.log.Warn().Str("webhook", ep.ID).Uint64("cursor", cur).Uint64("bus_last", q.Last).
			Msg("webhook producer cursor is past this node's bus (new home under an old node name); starting from its beginning")
		return 0, nil
	}
	return cur, nil
}

// appended says endpoint id got new intake (from this node, or from
// another one: IntakeAppended).
type appended struct{ id string }

// IntakeAppended says another node appended to endpoint id's intake (the
// cluster's watch on the intakes): if this node hosts the outbox, it moves
// the intake now instead of on the next ownership round.
func (e *Engine) IntakeAppended(id string) {
	e.k.Root.Send(e.pid, &appended{id: id})
}
