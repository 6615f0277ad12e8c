package approval

import (
	"context"
	"runtime"
	"sync"
	"testing"
)

// memTOTPCluster is TOTPCluster in memory, with the same versioning as
// etcd's: a Swap succeeds only on the version it names.
type memTOTPCluster struct {
	mu   sync.Mutex
	rev  int64
	vals map[string][]byte
	revs map[string]int64
}

func (m *memTOTPCluster) Get(_ context.Context, name string) ([]byte, int64, error) {
	m.mu.Lock()
	v, r := m.vals[name], m.revs[name]
	m.mu.Unlock()
	runtime.Gosched() // let another node read the same version
	return v, r, nil
}

func (m *memTOTPCluster) Swap(_ context.Context, name string, rev int64, value []byte) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev != AnyRev && m.revs[name] != rev {
		return m.revs[name], false, nil
	}
	m.rev++
	m.vals[name], m.revs[name] = value, m.rev
	return m.rev, true, nil
}

// Bad codes counted on several nodes at the same moment all count: the
// lockout guard is a compare-and-swap, not the last writer's value.
func TestClusterLockoutCountsConcurrentFailures(t *testing.T) {
	c := &memTOTPCluster{vals: map[string][]byte{}, revs: map[string]int64{}}
	const nodes, each = 4, 25
	var wg sync.WaitGroup
	for range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := etcdGuards{c: c}
			for range each {
				if _, err := g.Update("state", func(g *guard) { g.Failures++ }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := etcdGuards{c: c}.Get("state")
	if err != nil || got.Failures != nodes*each {
		t.Fatalf("failures counted: %d of %d (%v)", got.Failures, nodes*each, err)
	}
}
