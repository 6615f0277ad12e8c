package cluster

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/store"
)

// The harness of this package's tests: a real embedded etcd, clients of
// it, and what a test node's rounds handed over.

// TestMain gives every node of every test the same vault key (nodes that
// share sealed secrets through etcd need one key, docs/cluster.md). It is
// set once here rather than with t.Setenv in each test: t.Setenv refuses
// parallel tests, and the tests run in parallel because they spend their
// time waiting on etcd leases and rounds, not on the CPU.
func TestMain(m *testing.M) {
	os.Setenv(store.VaultKeyEnv, "5f1e0c3a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f")
	os.Exit(m.Run())
}

func testEtcd(t *testing.T) string {
	t.Helper()
	s, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Endpoint
}

// testClient is a client of ep, closed with the test; opts are extra
// gRPC dial options.
func testClient(t *testing.T, ep string, opts ...grpc.DialOption) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zapNop(), DialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// lastRound is what a test node's last applied round handed over: the
// apply callback of a cluster-wide kind keeps it, view reads it.
type lastRound[T any] struct {
	name func(T) string

	mu   sync.Mutex
	seen []T
}

func (r *lastRound[T]) keep(v []T) {
	r.mu.Lock()
	r.seen = v
	r.mu.Unlock()
}

// view is the round's view of the entity called name (zero if absent).
func (r *lastRound[T]) view(name string) T {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.seen {
		if r.name(v) == name {
			return v
		}
	}
	var zero T
	return zero
}

// roundsAtOnce runs one round on every node at the same time (nodes
// racing for the same entities), then one more on each in turn, so that
// every node's view has the outcome.
func roundsAtOnce(rounds ...func()) {
	var wg sync.WaitGroup
	for _, round := range rounds {
		wg.Add(1)
		go func() { defer wg.Done(); round() }()
	}
	wg.Wait()
	for _, round := range rounds {
		round()
	}
}

// roundUntil runs round every step until ok holds (true) or within
// passed (false).
func roundUntil(within, step time.Duration, round func(), ok func() bool) bool {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
		round()
	}
	return true
}

// exclusion is the topology {a, b} of a test in which a is excluded
// (exclude): b's view loses a (it blocked a's id) and a's excluded
// check says so.
type exclusion struct{ out atomic.Bool }

func (e *exclusion) exclude()       { e.out.Store(true) }
func (e *exclusion) excluded() bool { return e.out.Load() }

// membersOfB is b's topology.
func (e *exclusion) membersOfB() []string {
	if e.excluded() {
		return []string{"b"}
	}
	return []string{"a", "b"}
}

// choiceOf is the first of names whose rendezvous choice among members
// is member, so that member takes it first.
func choiceOf(t *testing.T, member string, members []string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if rendezvous(n, members) == member {
			return n
		}
	}
	t.Fatalf("none of %v hashes to %s", names, member)
	return ""
}
