package a2a

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// fakeDirectory is an in-memory a2a.Cluster that records the order of
// calls.
type fakeDirectory struct {
	mu       sync.Mutex
	fail     error
	entries  map[string]ClusterTask
	running  map[string]bool
	log      []string
	finished chan ClusterTask
}

func newFakeDirectory() *fakeDirectory {
	return &fakeDirectory{entries: map[string]ClusterTask{}, running: map[string]bool{}, finished: make(chan ClusterTask, 16)}
}

func (d *fakeDirectory) NodeName() string { return "n1" }

func (d *fakeDirectory) Register(_ context.Context, t ClusterTask) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	d.entries[t.ID], d.running[t.ID] = t, true
	d.log = append(d.log, "register "+t.ID)
	return nil
}

func (d *fakeDirectory) Finished(t ClusterTask) {
	d.mu.Lock()
	d.entries[t.ID] = t
	delete(d.running, t.ID)
	d.log = append(d.log, "finished "+t.ID)
	d.mu.Unlock()
	d.finished <- t
}

func (d *fakeDirectory) Forget(id, _ string) {
	d.mu.Lock()
	delete(d.entries, id)
	delete(d.running, id)
	d.log = append(d.log, "forget "+id)
	d.mu.Unlock()
}

func (d *fakeDirectory) Running(context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id := range d.running {
		out = append(out, id)
	}
	return out, nil
}

func (d *fakeDirectory) entry(id string) (ClusterTask, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[id]
	return e, ok
}

// In cluster mode a task is in the directory before its id is answered,
// its final entry follows its end, and a task that could not be registered
// is not created (nothing runs, the caller gets an error).
func TestClusterTaskRegisteredBeforeAnswerAndFinalEntry(t *testing.T) {
	h := newHarness(t, nil)
	dir := newFakeDirectory()
	h.svc.UseCluster(dir)
	block := make(chan struct{})
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		<-block
		return TurnResult{Text: "done: " + req.Text}, nil
	})
	req := sendReq("hello")
	req.Config = &a2a.SendMessageConfig{ReturnImmediately: true}
	res, err := h.svc.Handler("").SendMessage(admin(), req)
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	e, ok := dir.entry(string(task.ID))
	if !ok || e.Node != "n1" || e.State != a2a.TaskStateSubmitted || e.ContextID != task.ContextID || len(e.Record) == 0 {
		t.Fatalf("entry when the id was answered: %+v (found %v)", e, ok)
	}
	close(block)
	select {
	case f := <-dir.finished:
		if f.ID != string(task.ID) || f.State != a2a.TaskStateCompleted || !strings.Contains(string(f.Record), "done: hello") {
			t.Fatalf("final entry %+v", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no final entry")
	}

	// etcd down: the send fails and no turn runs.
	dir.mu.Lock()
	dir.fail = errors.New("etcd unreachable")
	dir.mu.Unlock()
	calls := h.agents.callCount()
	if _, err := h.svc.Handler("").SendMessage(admin(), sendReq("again")); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("send with the directory down: %v", err)
	}
	if h.agents.callCount() != calls {
		t.Fatal("an agent turn ran for a task that was not registered")
	}
}

// A restarted node gives the directory the final entries of tasks that
// ended while it was down (its restart failed them), and forgets
// registrations of tasks it never created.
func TestClusterReconcileAfterRestart(t *testing.T) {
	h := newHarness(t, nil)
	dir := newFakeDirectory()
	h.svc.UseCluster(dir)
	block := make(chan struct{})
	defer close(block)
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return TurnResult{}, ctx.Err()
	})
	req := sendReq("long")
	req.Config = &a2a.SendMessageConfig{ReturnImmediately: true}
	res, err := h.svc.Handler("").SendMessage(admin(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := string(res.(*a2a.Task).ID)
	_ = dir.Register(context.Background(), ClusterTask{ID: "never-created", Node: "n1"})
	h.restart()
	h.svc.UseCluster(dir)
	select {
	case f := <-dir.finished:
		if f.ID != id || f.State != a2a.TaskStateFailed || !strings.Contains(f.Reason, "restarted") {
			t.Fatalf("final entry after the restart %+v", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no final entry after the restart")
	}
	eventually(t, "the never-created registration forgotten", func() bool { _, ok := dir.entry("never-created"); return !ok })
}

// A finished task of another node is answered from its entry once
// adopted, with the entry's state (the sweep's "lost") and the record's
// caller checks.
func TestAdoptClusterTaskAnswersWithTheEntry(t *testing.T) {
	h := newHarness(t, nil)
	rec := newInboundRecord(testAgent, Caller{Name: "peer:bob"}, userMsg("hi"))
	e := clusterTask("n2", rec).Lost(time.Now())
	if err := h.svc.AdoptClusterTask(e); err != nil {
		t.Fatal(err)
	}
	got, err := h.svc.Handler("").GetTask(peer("bob"), &a2a.GetTaskRequest{ID: a2a.TaskID(rec.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.State != a2a.TaskStateFailed || got.Status.Message == nil || !strings.Contains(got.Status.Message.Parts[0].Text(), "cluster node n2") {
		t.Fatalf("adopted task %+v", got.Status)
	}
	if _, err := h.svc.Handler("").GetTask(peer("eve"), &a2a.GetTaskRequest{ID: a2a.TaskID(rec.ID)}); err == nil {
		t.Fatal("another peer sees the adopted task")
	}
	if !h.svc.HasTask(context.Background(), rec.ID) || h.svc.HasTask(context.Background(), "nope") {
		t.Fatal("HasTask")
	}
	running := clusterTask("n2", rec)
	if err := h.svc.AdoptClusterTask(running); err == nil {
		t.Fatal("a running task was adopted")
	}
}

// An entry's record is capped: a big answer is cut, and the entry says so.
func TestClusterTaskRecordIsCapped(t *testing.T) {
	rec := newInboundRecord(testAgent, Caller{Name: "api_key"}, userMsg("hi"))
	big := strings.Repeat("é", ClusterRecordMax)
	rec.History = append(rec.History, &a2a.Message{ID: "r", Role: a2a.MessageRoleAgent, Parts: a2a.ContentParts{a2a.NewTextPart(big)}})
	rec.Artifacts = []*a2a.Artifact{{ID: "response", Parts: a2a.ContentParts{a2a.NewTextPart(big)}}}
	rec.State = a2a.TaskStateCompleted
	e := clusterTask("n1", rec)
	if !e.Truncated || len(e.Record) == 0 || len(e.Record) > ClusterRecordMax {
		t.Fatalf("truncated %v, record %d bytes", e.Truncated, len(e.Record))
	}
	if !strings.Contains(string(e.Record), "the full task is on node n1") {
		t.Fatal("the cut record does not say where the full task is")
	}
	small := clusterTask("n1", newInboundRecord(testAgent, Caller{Name: "api_key"}, userMsg("hi")))
	if small.Truncated {
		t.Fatal("a small record was cut")
	}
}

func (f *fakeAgents) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// Without --cluster the hooks on the send and finish paths are a nil
// check: no allocation, no work.
func TestClusterHooksCostNothingOnASingleNode(t *testing.T) {
	s := &Service{}
	rec := &taskRecord{ID: "x", ContextID: "c"}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		_ = s.clusterRegister(ctx, rec)
		s.clusterFinished(rec)
		s.clusterForget(rec)
	}); n != 0 {
		t.Fatalf("%v allocations per send without a cluster", n)
	}
}
