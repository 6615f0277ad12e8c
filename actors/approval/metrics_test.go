package approval

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fangd_approvals_pending follows the index (and is recounted after a
// restart); fangd_approvals_decided_total counts each decision once, by
// outcome.
func TestApprovalMetricsFollowPendingAndDecided(t *testing.T) {
	h := newHarness(t, policy(nil), nil)
	pending := func() float64 { return testutil.ToFloat64(h.a.env.metrics.pending) }
	decided := func(outcome string) float64 {
		return testutil.ToFloat64(h.a.env.metrics.decided.WithLabelValues(outcome))
	}
	a := h.create("a1", "file_delete")
	h.create("a1", "file_write")
	if pending() != 2 {
		t.Fatalf("pending %v, want 2", pending())
	}
	h.restart() // a new kernel, a new registry: recounted from the store
	waitFor(t, "the recount", func() bool { return pending() == 2 })
	if _, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, By: api("loopback")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the decision counted", func() bool { return pending() == 1 && decided(StatusApproved) == 1 })
	// Deciding again is refused and counts nothing.
	if _, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: false, By: api("loopback")}); err == nil {
		t.Fatal("decided twice")
	}
	if decided(StatusApproved) != 1 || decided(StatusRejected) != 0 || pending() != 1 {
		t.Fatalf("after a refused second decision: pending %v approved %v rejected %v", pending(), decided(StatusApproved), decided(StatusRejected))
	}
	// The series are on the kernel's registry, which /metrics serves.
	if n, err := testutil.GatherAndCount(h.k.Metrics, "fangd_approvals_pending", "fangd_approvals_decided_total"); err != nil || n < 2 {
		t.Fatalf("gathered %d series: %v", n, err)
	}
}
