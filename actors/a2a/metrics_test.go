package a2a

import (
	"testing"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// fangd_a2a_tasks_created_total and fangd_a2a_tasks_finished_total count
// the tasks the supervisor really creates and finishes, by direction and
// final status; a refused message creates none.
func TestTaskMetricsCountCreatedAndFinished(t *testing.T) {
	h := newHarness(t, nil)
	created := func() float64 { return testutil.ToFloat64(h.svc.metrics.created.WithLabelValues(Inbound)) }
	finished := func(status string) float64 {
		return testutil.ToFloat64(h.svc.metrics.finished.WithLabelValues(Inbound, status))
	}
	if _, err := h.svc.Handler("").SendMessage(admin(), &a2a.SendMessageRequest{}); err == nil {
		t.Fatal("a message without parts was accepted")
	}
	if created() != 0 {
		t.Fatalf("a refused message created %v tasks", created())
	}
	res, err := h.svc.Handler("").SendMessage(admin(), sendReq("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if task, ok := res.(*a2a.Task); !ok || task.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("result %+v", res)
	}
	if created() != 1 {
		t.Fatalf("created %v, want 1", created())
	}
	// The task actor counts the final state as it stops, just after the
	// answer: wait for it rather than for a fixed time.
	kerneltest.WaitFor(t, "the completed task counted", func() bool { return finished(SeedStatus(a2a.TaskStateCompleted)) == 1 })
	if finished(SeedStatus(a2a.TaskStateFailed)) != 0 {
		t.Fatal("a completed task counted as failed")
	}
	// On the kernel's registry, which /metrics serves (the failed series
	// read above exists at 0).
	if n, err := testutil.GatherAndCount(h.k.Metrics, "fangd_a2a_tasks_created_total", "fangd_a2a_tasks_finished_total"); err != nil || n != 3 {
		t.Fatalf("gathered %d series: %v", n, err)
	}
}
