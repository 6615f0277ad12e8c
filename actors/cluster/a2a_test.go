package cluster

// The A2A task directory against a real embedded etcd, under -race.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// aliveSet is a settable set of live node names.
type aliveSet struct {
	mu    sync.Mutex
	nodes map[string]bool
}

func (a *aliveSet) set(nodes ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodes = map[string]bool{}
	for _, n := range nodes {
		a.nodes[n] = true
	}
}

func (a *aliveSet) get(context.Context) (map[string]bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]bool{}
	for n := range a.nodes {
		out[n] = true
	}
	return out, nil
}

func startA2ADir(t *testing.T, cli *clientv3.Client, node string, alive *aliveSet, sweep bool) *A2ATasks {
	t.Helper()
	d := newA2ATasks(cli, "t", node, zerolog.Nop(), time.Hour, alive.get)
	go d.writer()
	if sweep {
		go d.sweeper()
	}
	t.Cleanup(d.stop)
	return d
}

func entry(id, node, contextID string, state sdk.TaskState) a2a.ClusterTask {
	return a2a.ClusterTask{ID: id, Node: node, Direction: a2a.Inbound, ContextID: contextID, State: state,
		UpdatedAt: time.Now().UTC(), Record: []byte(`{"id":"` + id + `","state":"` + string(state) + `"}`)}
}

// Concurrent registrations share Txns (one per batch), every one is
// readable once Register returned, with its context, and a final entry
// replaces the registration and ends "running".
func TestA2ADirectoryBatchesRegistrations(t *testing.T) {
	t.Parallel()
	cli := testClient(t, testEtcd(t))
	alive := &aliveSet{}
	alive.set("n1")
	d := startA2ADir(t, cli, "n1", alive, false)
	const n = 300
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("task-%03d", i)
			// Some share a context: its key once per Txn.
			cid := "ctx-" + id
			if i%10 == 0 {
				cid = "shared"
			}
			if err := d.Register(context.Background(), entry(id, "n1", cid, sdk.TaskStateSubmitted)); err != nil {
				failed.Add(1)
				return
			}
			// Readable at once, by any node.
			got, ok, err := d.Task(context.Background(), id)
			if err != nil || !ok || got.Node != "n1" {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d registrations failed or were not readable", failed.Load())
	}
	commits := d.commits.Load()
	t.Logf("%d concurrent registrations in %d Txns, %s (%.0f/s)", n, commits, took.Round(time.Millisecond), n/took.Seconds())
	if commits >= n {
		t.Fatalf("%d Txns for %d concurrent registrations: not batched", commits, n)
	}
	// One at a time, each registration is one Txn: the latency a lone
	// SendMessage pays (logged for docs/cluster.md, not asserted).
	seqStart := time.Now()
	for i := range 20 {
		if err := d.Register(context.Background(), entry(fmt.Sprintf("seq-%02d", i), "n1", "", sdk.TaskStateSubmitted)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("sequential registrations: %s each", (time.Since(seqStart) / 20).Round(time.Microsecond))
	if node, ok, err := d.ContextNode(context.Background(), "ctx-task-007"); err != nil || !ok || node != "n1" {
		t.Fatalf("context node %q %v %v", node, ok, err)
	}
	if h := d.hosted(); h != n+20 {
		t.Fatalf("hosted %d, want %d", h, n+20)
	}
	run, err := d.Running(context.Background())
	if err != nil || len(run) != n+20 {
		t.Fatalf("running %d, %v", len(run), err)
	}
	d.Finished(entry("task-007", "n1", "ctx-task-007", sdk.TaskStateCompleted))
	d.Finished(entry("task-007", "n1", "ctx-task-007", sdk.TaskStateCompleted)) // twice: once per Txn
	kerneltest.WaitFor(t, "the final entry", func() bool {
		got, _, _ := d.Task(context.Background(), "task-007")
		return got.State == sdk.TaskStateCompleted
	})
	kerneltest.WaitFor(t, "task-007 no longer running", func() bool {
		run, _ := d.Running(context.Background())
		return len(run) == n+20-1
	})
	// A forgotten registration is gone.
	d.Forget("task-008", "")
	kerneltest.WaitFor(t, "task-008 forgotten", func() bool {
		_, ok, _ := d.Task(context.Background(), "task-008")
		return !ok
	})
	// Entries carry the lease: etcd forgets them by itself.
	resp, err := cli.Get(context.Background(), d.taskKey("task-001"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("entry without a lease: %+v %v", resp, err)
	}
	ttl, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil || ttl.TTL < int64(time.Hour/time.Second) {
		t.Fatalf("lease ttl %+v %v", ttl, err)
	}
}

// The host dies with a task running: after the grace another node's sweep
// marks it failed naming the host (exactly once, two sweepers racing);
// a task that had finished keeps its state; the host's late final entry
// (a restart) does not override the sweep's.
func TestA2ASweepFailsTheTasksOfADeadNode(t *testing.T) {
	t.Parallel()
	cli := testClient(t, testEtcd(t))
	alive := &aliveSet{}
	alive.set("n1", "n2", "n3")
	host := startA2ADir(t, cli, "n1", alive, false)
	ctx := context.Background()
	for _, id := range []string{"running", "done"} {
		if err := host.Register(ctx, entry(id, "n1", "", sdk.TaskStateWorking)); err != nil {
			t.Fatal(err)
		}
	}
	host.Finished(entry("done", "n1", "", sdk.TaskStateCompleted))
	kerneltest.WaitFor(t, "done's final entry", func() bool {
		got, _, _ := host.Task(ctx, "done")
		return got.State == sdk.TaskStateCompleted
	})
	host.stop() // the host dies
	s2 := newA2ATasks(cli, "t", "n2", zerolog.Nop(), time.Hour, alive.get)
	s3 := newA2ATasks(cli, "t", "n3", zerolog.Nop(), time.Hour, alive.get)
	// Alive: nothing happens.
	for range 2 {
		if m, err := s2.sweepOnce(ctx); err != nil || m != 0 {
			t.Fatalf("sweep with the host alive marked %d, %v", m, err)
		}
	}
	alive.set("n2", "n3")
	clock := time.Now()
	s2.now = func() time.Time { return clock }
	s3.now = s2.now
	if m, _ := s2.sweepOnce(ctx); m != 0 {
		t.Fatal("marked before the grace")
	}
	_, _ = s3.sweepOnce(ctx)
	clock = clock.Add(a2aLostGrace + time.Second)
	var wg sync.WaitGroup
	var marked atomic.Int32
	for _, s := range []*A2ATasks{s2, s3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.sweepOnce(ctx)
			if err != nil {
				t.Error(err)
			}
			marked.Add(int32(m))
		}()
	}
	wg.Wait()
	if marked.Load() != 1 {
		t.Fatalf("%d nodes marked the lost task, want exactly 1", marked.Load())
	}
	got, _, _ := s2.Task(ctx, "running")
	if got.State != sdk.TaskStateFailed || !strings.Contains(got.Reason, "cluster node n1") || len(got.Record) == 0 {
		t.Fatalf("lost task's entry %+v", got)
	}
	if got, _, _ := s2.Task(ctx, "done"); got.State != sdk.TaskStateCompleted {
		t.Fatalf("finished task's entry %+v", got)
	}
	if resp, _ := cli.Get(ctx, s2.pre+"run/", clientv3.WithPrefix()); len(resp.Kvs) != 0 {
		t.Fatalf("running keys left: %d", len(resp.Kvs))
	}
	// The host comes back (a new process: no revisions in memory) and
	// reports the task it had running as completed: the sweep's stands.
	alive.set("n1", "n2", "n3")
	back := startA2ADir(t, cli, "n1", alive, false)
	back.Finished(entry("running", "n1", "", sdk.TaskStateCompleted))
	back.Finished(entry("other", "n1", "", sdk.TaskStateCompleted)) // never registered: written
	kerneltest.WaitFor(t, "the late final entries handled", func() bool {
		got, _, _ := back.Task(ctx, "other")
		return got.State == sdk.TaskStateCompleted
	})
	if got, _, _ := back.Task(ctx, "running"); got.State != sdk.TaskStateFailed {
		t.Fatalf("the host's late final entry replaced the sweep's: %+v", got)
	}
}

// With etcd away a registration fails (the caller does not create the
// task) within the caller's deadline.
func TestA2ARegisterFailsWithEtcdAway(t *testing.T) {
	t.Parallel()
	alive := &aliveSet{}
	alive.set("n1")
	d := startA2ADir(t, testClient(t, "127.0.0.1:1"), "n1", alive, false)
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Register(c, entry("b", "n1", "", sdk.TaskStateWorking)); err == nil {
		t.Fatal("registration succeeded with etcd away")
	}
}
