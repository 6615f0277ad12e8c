package approval

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Cluster mode (docs/cluster.md, "Approvals across the cluster"): the TOTP
// enrolment is the cluster's, not a node's. The confirmed and the pending
// enrolment are kept in etcd sealed with the vault key (every node runs
// with the same FANGD_VAULT_KEY, as for channel secrets), the lockout
// guard in the clear beside them. Every write of an enrolment is a
// compare-and-swap on the version the check read, so a code (its time
// step) or a recovery code accepted on one node is refused on every other
// one: of two nodes checking the same code at once exactly one writes the
// new last step, and the other reads again and finds the code replayed.

// TOTPCluster is the etcd side (actors/cluster.TOTP): a few small entries
// by name, each with a version.
type TOTPCluster interface {
	// Get reads entry name: its value and version (0 and nil when there
	// is none).
	Get(ctx context.Context, name string) (value []byte, rev int64, err error)
	// Swap puts value under name (nil value: deletes it) if its version
	// is still rev (0: absent; AnyRev: whatever it is). ok is false when
	// the entry changed meanwhile; rev is then the version after the call.
	Swap(ctx context.Context, name string, rev int64, value []byte) (next int64, ok bool, err error)
}

// AnyRev makes a Swap unconditional.
const AnyRev int64 = -1

// The entry that holds the lockout guard in cluster mode.
const clusterGuard = "approvals/totp-guard"

// clusterTOTPTimeout bounds each etcd call of the TOTP actor.
const clusterTOTPTimeout = 5 * time.Second

// errTOTPChanged answers a write whose enrolment another node changed
// between this node's read and its write.
var errTOTPChanged = kernel.Errorf(kernel.KindConflict, "totp_changed",
	"the TOTP enrolment was changed through another cluster node meanwhile; try again")

// totpSecrets is where the TOTP actor keeps the enrolment: the node's
// vault (*store.Vault), or etcd sealed with the vault's key.
type totpSecrets interface {
	Has(name string) (bool, error)
	With(name string, fn func(secret []byte) error) error
	Put(name string, plaintext []byte) error
	Delete(name string) error
}

// guardStore keeps the lockout state: the node's store (localGuards),
// or etcd.
type guardStore interface {
	Get(id string) (guard, error)
	// Update applies change to the stored state and stores the result,
	// which it answers: a read-modify-write, so a failure counted on
	// another node at the same moment is not lost.
	Update(id string, change func(*guard)) (guard, error)
}

// localGuards is guardStore on the node's store (only the TOTP actor
// writes it, so a plain read and write is a read-modify-write).
type localGuards struct{ c *store.Collection[guard] }

func (l localGuards) Get(id string) (guard, error) { return l.c.Get(id) }

func (l localGuards) Update(id string, change func(*guard)) (guard, error) {
	g, err := l.c.Get(id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return g, err
	}
	change(&g)
	return g, l.c.Put(id, g)
}

// useTOTPCluster moves the TOTP actor onto etcd; answered with
// *totpMoved.
type useTOTPCluster struct{ c TOTPCluster }

type totpMoved struct {
	// localIgnored: this node's vault holds an enrolment that cluster
	// mode does not use.
	localIgnored bool
}

// UseTOTPCluster makes the TOTP enrolment cluster-wide (cluster mode
// only). It reports whether this node's own vault holds an enrolment,
// which cluster mode leaves unused (the caller logs it).
func (a *Approvals) UseTOTPCluster(ctx context.Context, c TOTPCluster) (localIgnored bool, err error) {
	m, err := kernel.Ask[*totpMoved](ctx, a.env.k, a.env.totp, &useTOTPCluster{c: c})
	if err != nil {
		return false, err
	}
	return m.localIgnored, nil
}

// etcdSecrets is totpSecrets on etcd. It remembers the version of each
// entry it read last (the actor is serial and resets it per message), and
// a Put or Delete is conditioned on it: what was checked is what is
// replaced.
type etcdSecrets struct {
	c     TOTPCluster
	vault *store.Vault
	seen  map[string]int64
}

func (s *etcdSecrets) reset() { clear(s.seen) }

func (s *etcdSecrets) get(name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterTOTPTimeout)
	defer cancel()
	v, rev, err := s.c.Get(ctx, name)
	if err != nil {
		return nil, kernel.Unavailable("the cluster store did not answer: %v", err)
	}
	s.seen[name] = rev
	return v, nil
}

func (s *etcdSecrets) swap(name string, value []byte) error {
	rev, ok := s.seen[name]
	if !ok {
		rev = AnyRev
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTOTPTimeout)
	defer cancel()
	next, ok, err := s.c.Swap(ctx, name, rev, value)
	if err != nil {
		return kernel.Unavailable("the cluster store did not answer: %v", err)
	}
	s.seen[name] = next
	if !ok {
		return errTOTPChanged
	}
	return nil
}

func (s *etcdSecrets) Has(name string) (bool, error) {
	v, err := s.get(name)
	return v != nil, err
}

func (s *etcdSecrets) With(name string, fn func(secret []byte) error) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	if v == nil {
		return errTOTPChanged // Has said it exists: gone meanwhile
	}
	return s.vault.Open(name, v, fn)
}

func (s *etcdSecrets) Put(name string, plaintext []byte) error {
	sealed, err := s.vault.Seal(name, plaintext) // wipes plaintext
	if err != nil {
		return err
	}
	return s.swap(name, sealed)
}

func (s *etcdSecrets) Delete(name string) error { return s.swap(name, nil) }

// etcdGuards is guardStore on etcd: one entry for the cluster, changed
// by compare-and-swap, so two nodes counting a failure at the same moment
// count two.
type etcdGuards struct{ c TOTPCluster }

func (g etcdGuards) Get(string) (guard, error) {
	out, _, err := g.read()
	return out, err
}

// read is the guard and its version (a zero guard and 0 when absent).
func (g etcdGuards) read() (guard, int64, error) {
	var out guard
	ctx, cancel := context.WithTimeout(context.Background(), clusterTOTPTimeout)
	defer cancel()
	v, rev, err := g.c.Get(ctx, clusterGuard)
	switch {
	case err != nil:
		return out, 0, kernel.Unavailable("the cluster store did not answer: %v", err)
	case v == nil:
		return out, 0, nil
	}
	return out, rev, json.Unmarshal(v, &out)
}

// guardSwapTries bounds the retries of a guard update that keeps losing
// races (each loss means another node wrote the guard meanwhile);
// guardSwapBackoff spaces them, jittered, so racing nodes fall out of step.
const guardSwapTries = 20

var guardSwapBackoff = kernel.Backoff{Initial: time.Millisecond, Max: 50 * time.Millisecond}

func (g etcdGuards) Update(_ string, change func(*guard)) (guard, error) {
	for try := range guardSwapTries {
		if try > 0 {
			time.Sleep(guardSwapBackoff.Jittered(try))
		}
		cur, rev, err := g.read()
		if err != nil {
			return cur, err
		}
		change(&cur)
		raw, err := json.Marshal(cur)
		if err != nil {
			return cur, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), clusterTOTPTimeout)
		_, ok, err := g.c.Swap(ctx, clusterGuard, rev, raw)
		cancel()
		if err != nil {
			return cur, kernel.Unavailable("the cluster store did not answer: %v", err)
		}
		if ok {
			return cur, nil
		}
	}
	return guard{}, kernel.Unavailable("the TOTP lockout state kept changing on other nodes; try again")
}

// moveToCluster switches the actor to etcd.
func (t *totpActor) moveToCluster(c TOTPCluster) *totpMoved {
	local := t.active || t.pending
	t.cluster = &etcdSecrets{c: c, vault: t.env.vault, seen: map[string]int64{}}
	t.sec, t.guards = t.cluster, etcdGuards{c: c}
	return &totpMoved{localIgnored: local}
}

// refresh reads the cluster's enrolment again before each message: other
// nodes change it.
func (t *totpActor) refresh() error {
	if t.cluster == nil {
		return nil
	}
	t.cluster.reset()
	return t.loadState()
}
