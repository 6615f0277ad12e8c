package a2a

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// A blocking SendMessage's final task write is not waited for in the task
// actor's Receive: the answer is handed over with the write still in
// flight, and everything that shows the final state waits for it. While
// the commit is held back, the caller's PendingWrites does not finish, a
// GetTask does not answer and a subscriber sees nothing; once it commits,
// all of them go on, and a restart finds the task completed.
func TestFinalWriteIsAwaitedBeforeAnythingShowsIt(t *testing.T) {
	held := make(chan struct{})
	release := make(chan struct{})
	h := newHarness(t, func(o *Options) {
		o.journalGate = func(records [][]byte) {
			for _, r := range records {
				if bytes.Contains(r, []byte(`"state":"`+string(a2a.TaskStateCompleted)+`"`)) {
					close(held)
					<-release
					return
				}
			}
		}
	})
	pw := NewPendingWrites()
	res, err := h.svc.Handler("").SendMessage(WithPendingWrites(admin(), pw), sendReq("hello"))
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*a2a.Task)
	if task.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("state %s, want completed", task.Status.State)
	}
	<-held
	waited := make(chan error, 1)
	go func() { waited <- pw.Wait(context.Background()) }()
	got := make(chan *a2a.Task, 1)
	go func() {
		tk, err := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: task.ID})
		if err != nil {
			t.Error(err)
		}
		got <- tk
	}()
	select {
	case <-waited:
		t.Fatal("the pending writes finished while the final write was held back")
	case <-got:
		t.Fatal("GetTask answered while the final write was held back")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if tk := <-got; tk == nil || tk.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("GetTask after the write: %+v", tk)
	}
	h.restart()
	after, err := h.svc.Handler("").GetTask(admin(), &a2a.GetTaskRequest{ID: task.ID})
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("after restart: %s", after.Status.State)
	}
}

// Without a PendingWrites (the REST binding, in-process callers),
// SendMessage itself returns only once the final write is stored.
func TestSendMessageWithoutPendingWritesWaitsForTheFinalWrite(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(o *Options) {
		o.journalGate = func(records [][]byte) {
			for _, r := range records {
				if bytes.Contains(r, []byte(`"state":"`+string(a2a.TaskStateCompleted)+`"`)) {
					<-release
					return
				}
			}
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := h.svc.Handler("").SendMessage(admin(), sendReq("hello"))
		done <- err
	}()
	select {
	case <-done:
		t.Fatal("SendMessage answered while the final write was held back")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
