package a2a

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// journalLog records every task record the journal commits, in order.
type journalLog struct {
	mu   sync.Mutex
	recs []taskRecord
}

func (l *journalLog) gate(records [][]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, raw := range records {
		var r taskRecord
		if json.Unmarshal(raw, &r) == nil {
			l.recs = append(l.recs, r)
		}
	}
}

// states lists the states written for task id, in commit order.
func (l *journalLog) states(id a2a.TaskID) []a2a.TaskState {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []a2a.TaskState
	for _, r := range l.recs {
		if r.ID == string(id) {
			out = append(out, r.State)
		}
	}
	return out
}

// fakeEvents records the routes the service reports.
type fakeEvents struct{ received chan string }

func (e *fakeEvents) Route(typ, _, _, _ string, detail map[string]string) {
	if typ == "a2a.task.received" {
		e.received <- detail["task_id"]
	}
}

// A blocking send whose turn ends within firstWriteDelay is stored once,
// in its final state; one that returns at once (its answer shows the
// running task) is stored as working first, as before.
func TestQuickBlockingTaskIsStoredOnceInItsFinalState(t *testing.T) {
	var log journalLog
	h := newHarness(t, func(o *Options) { o.journalGate = log.gate })
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("quick"))
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	if got := log.states(task.ID); len(got) != 1 || got[0] != a2a.TaskStateCompleted {
		t.Fatalf("records written for a quick blocking task: %v, want [completed]", got)
	}
	h.restart()
	if got, err := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: task.ID}); err != nil || got.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("after restart: %v %v", got, err)
	}

	var log2 journalLog
	h2 := newHarness(t, func(o *Options) { o.journalGate = log2.gate })
	res, err = h2.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{Message: userMsg("now"),
		Config: &a2a.SendMessageConfig{ReturnImmediately: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*a2a.Task).ID
	// The immediate answer is acknowledged: its record was durable first.
	if got := log2.states(id); len(got) == 0 || got[0] != a2a.TaskStateWorking {
		t.Fatalf("records written before an immediate answer: %v, want working first", got)
	}
	eventually(t, "the immediate task to be stored completed", func() bool {
		got := log2.states(id)
		return len(got) == 2 && got[1] == a2a.TaskStateCompleted
	})
}

// A blocking task whose turn runs past firstWriteDelay is stored as
// working while it runs (a crash then fails it with a reason), and a
// subscriber's first update is never ahead of the disk.
func TestLongBlockingTaskIsStoredAsWorkingWhileItRuns(t *testing.T) {
	var log journalLog
	events := &fakeEvents{received: make(chan string, 4)}
	h := newHarness(t, func(o *Options) { o.journalGate = log.gate; o.Events = events })
	release := make(chan struct{})
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		select {
		case <-release:
			return TurnResult{Text: "done"}, nil
		case <-ctx.Done():
			return TurnResult{}, ctx.Err()
		}
	})
	answered := make(chan a2a.SendMessageResult, 1)
	go func() {
		res, err := h.svc.Handler("").SendMessage(admin(), sendReq("long"))
		if err != nil {
			t.Error(err)
		}
		answered <- res
	}()
	id := <-events.received
	eventually(t, "the running task's working record", func() bool {
		rec, err := h.svc.supervisorTasks().Get(id)
		return err == nil && rec.State == a2a.TaskStateWorking
	})
	close(release)
	res := <-answered
	if task, ok := res.(*a2a.Task); !ok || task.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("answer %#v", res)
	}
	if got := log.states(a2a.TaskID(id)); len(got) != 2 || got[0] != a2a.TaskStateWorking || got[1] != a2a.TaskStateCompleted {
		t.Fatalf("records written: %v, want [working completed]", got)
	}

	// A subscriber to a blocking task that is still held back gets its
	// opening update only once the record is on disk.
	hold := make(chan struct{})
	h.agents.setTurn(func(ctx context.Context, req TurnRequest) (TurnResult, error) {
		select {
		case <-hold:
			return TurnResult{Text: "done"}, nil
		case <-ctx.Done():
			return TurnResult{}, ctx.Err()
		}
	})
	go func() {
		res, err := h.svc.Handler("").SendMessage(admin(), sendReq("watched"))
		if err != nil {
			t.Error(err)
		}
		answered <- res
	}()
	id = <-events.received
	for ev, err := range h.svc.Handler("").SubscribeToTask(admin(), &a2a.SubscribeToTaskRequest{ID: a2a.TaskID(id)}) {
		if err != nil {
			t.Fatal(err)
		}
		if task, ok := ev.(*a2a.Task); !ok || task.Status.State != a2a.TaskStateWorking {
			t.Fatalf("first update %#v", ev)
		}
		if rec, err := h.svc.supervisorTasks().Get(id); err != nil || rec.State != a2a.TaskStateWorking {
			t.Fatalf("a subscriber saw the task before its record was stored: %+v %v", rec, err)
		}
		break
	}
	close(hold)
	<-answered
}
