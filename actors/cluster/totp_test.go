package cluster

// The TOTP enrolment shared by the cluster: fangd's real approvals on two
// nodes (own kernel, store, audit chain and vault, the same vault key)
// sharing an embedded etcd, under -race.

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// testClock is the nodes' shared clock, moved by whole TOTP steps.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) now() time.Time { return time.Unix(0, c.ns.Load()) }
func (c *testClock) step(n int)     { c.ns.Add(int64(n) * int64(30*time.Second)) }
func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().Truncate(30 * time.Second).Add(10 * time.Second).UnixNano())
	return c
}
func codeAt(t *testing.T, secret string, c *testClock) string {
	return approvaltest.TOTP(t, secret, c.now())
}

func newTOTPNode(t *testing.T, ep, name string, clk *testClock) *approvalNode {
	t.Helper()
	n := newApprovalNodeWith(t, testClient(t, ep), name, 300, false, func(o *approval.Options) {
		o.Policy.SecondFactor = approval.SecondFactorTOTP
		o.Now = clk.now
	})
	local, err := n.a.UseTOTPCluster(context.Background(), newTOTP(testClient(t, ep), "t"))
	if err != nil || local {
		t.Fatalf("UseTOTPCluster: %v, local %v", err, local)
	}
	return n
}

func errCode(err error) string {
	if e := kernel.AsError(err); e != nil {
		return e.Code
	}
	return ""
}

// Enrolled and confirmed through different nodes; a code accepted on one
// node is a replay on every other, and of two nodes checking the same
// code at once exactly one accepts it; a spent recovery code is spent
// everywhere; the lockout is the cluster's; a revoke through one node
// ends the second factor on all.
func TestTOTPEnrolmentSharedAndReplayRefusedAcrossNodes(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	clk := newTestClock()
	a := newTOTPNode(t, ep, "node-a", clk)
	b := newTOTPNode(t, ep, "node-b", clk)
	ctx := context.Background()

	enr, err := a.a.TOTPSetup(ctx, "", api())
	if err != nil {
		t.Fatal(err)
	}
	// The secret is sealed in etcd, never in clear.
	raw, _, err := newTOTP(testClient(t, ep), "t").Get(ctx, "approvals/totp-pending")
	if err != nil || raw == nil || strings.Contains(string(raw), enr.Secret) {
		t.Fatalf("etcd holds %q, %v", raw, err)
	}
	if st, err := b.a.TOTPStatus(ctx); err != nil || !st.PendingConfirmation || st.Confirmed {
		t.Fatalf("B's status after A's setup: %+v, %v", st, err)
	}
	// A second setup through B while one awaits confirmation: 409.
	if _, err := b.a.TOTPSetup(ctx, "", api()); errCode(err) != "totp_pending_confirmation" {
		t.Fatalf("setup on B: %v", err)
	}
	if _, err := b.a.TOTPConfirm(ctx, codeAt(t, enr.Secret, clk), api()); err != nil {
		t.Fatalf("confirm on B: %v", err)
	}
	if st, err := a.a.TOTPStatus(ctx); err != nil || !st.Confirmed || !st.Enforced || st.RemainingRecoveryCodes != 8 {
		t.Fatalf("A's status after B's confirm: %+v, %v", st, err)
	}

	// A request raised on A needs a code: the confirming code (its step
	// is spent) is a replay through A.
	id := uuid.NewString()
	wait := a.gate(id)
	kerneltest.WaitFor(t, "B to list A's request", func() bool { return pendingOn(t, b, id) != nil })
	if _, err := a.a.Decide(ctx, approval.Decide{ID: id, Approve: true, Code: codeAt(t, enr.Secret, clk), By: api()}); errCode(err) != "totp_replayed" {
		t.Fatalf("the confirming code through A: %v", err)
	}
	// The next step's code through B approves it; through A it is then a
	// replay (on another request).
	clk.step(1)
	code := codeAt(t, enr.Secret, clk)
	if rec, err := b.a.Decide(ctx, approval.Decide{ID: id, Approve: true, Code: code, By: api()}); err != nil || rec.Status != approval.StatusApproved {
		t.Fatalf("B approves with a fresh code: %+v, %v", rec, err)
	}
	select {
	case v := <-wait:
		if rec, ok := v.(*approval.Approval); !ok || rec.Status != approval.StatusApproved {
			t.Fatalf("A's waiter got %v", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's waiting call did not resume")
	}
	id2 := uuid.NewString()
	wait2 := a.gate(id2)
	kerneltest.WaitFor(t, "B to list the second request", func() bool { return pendingOn(t, b, id2) != nil })
	if _, err := a.a.Decide(ctx, approval.Decide{ID: id2, Approve: true, Code: code, By: api()}); errCode(err) != "totp_replayed" {
		t.Fatalf("B's code again through A: %v", err)
	}

	// Two nodes checking one fresh code at the same moment, each on a
	// request of its own: exactly one accepts it.
	for round := 0; round < 4; round++ {
		clk.step(1)
		code := codeAt(t, enr.Secret, clk)
		ids := []string{uuid.NewString(), uuid.NewString()}
		waits := []<-chan any{a.gate(ids[0]), b.gate(ids[1])}
		kerneltest.WaitFor(t, "both requests listed", func() bool { return pendingOn(t, a, ids[1]) != nil && pendingOn(t, b, ids[0]) != nil })
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, n := range []*approvalNode{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = n.a.Decide(ctx, approval.Decide{ID: ids[i], Approve: true, Code: code, By: api()})
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case errCode(err) != "totp_replayed":
				t.Fatalf("round %d node %d: %v", round, i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d nodes accepted one code (%v)", round, ok, errs)
		}
		for i, n := range []*approvalNode{a, b} {
			if errs[i] == nil {
				<-waits[i]
				continue
			}
			if _, err := n.a.Decide(ctx, approval.Decide{ID: ids[i], Approve: false, By: api()}); err != nil {
				t.Fatal(err)
			}
			<-waits[i]
		}
	}

	// A recovery code spent through B is spent for A.
	rc := enr.RecoveryCodes[0]
	if rec, err := b.a.Decide(ctx, approval.Decide{ID: id2, Approve: true, Code: rc, By: api()}); err != nil || rec.Status != approval.StatusApproved {
		t.Fatalf("B approves with a recovery code: %+v, %v", rec, err)
	}
	<-wait2
	if st, err := a.a.TOTPStatus(ctx); err != nil || st.RemainingRecoveryCodes != 7 {
		t.Fatalf("A's status after the recovery code: %+v, %v", st, err)
	}
	id3 := uuid.NewString()
	wait3 := a.gate(id3)
	if _, err := a.a.Decide(ctx, approval.Decide{ID: id3, Approve: true, Code: rc, By: api()}); errCode(err) != "totp_invalid" {
		t.Fatalf("the spent recovery code through A: %v", err)
	}

	// Failures count for the cluster: the spent recovery code was one,
	// three more through A, and the fifth through B locks both.
	for i := 2; i < approval.MaxFailures; i++ {
		if _, err := a.a.Decide(ctx, approval.Decide{ID: id3, Approve: true, Code: "000000", By: api()}); errCode(err) != "totp_invalid" {
			t.Fatalf("bad code %d: %v", i, err)
		}
	}
	if _, err := b.a.Decide(ctx, approval.Decide{ID: id3, Approve: true, Code: "000000", By: api()}); errCode(err) != "totp_locked" {
		t.Fatalf("the fifth bad code through B: %v", err)
	}
	if st, err := a.a.TOTPStatus(ctx); err != nil || st.LockedUntil == nil {
		t.Fatalf("A not locked after B's lock: %+v, %v", st, err)
	}
	clk.step(11) // past the 5 min lockout
	if _, err := b.a.Decide(ctx, approval.Decide{ID: id3, Approve: false, By: api()}); err != nil {
		t.Fatal(err)
	}
	<-wait3

	// Revoked through A: B no longer asks for a code.
	if _, err := a.a.TOTPRevoke(ctx, codeAt(t, enr.Secret, clk), api()); err != nil {
		t.Fatalf("revoke on A: %v", err)
	}
	if st, err := b.a.TOTPStatus(ctx); err != nil || st.Enrolled || st.Enforced {
		t.Fatalf("B's status after the revoke: %+v, %v", st, err)
	}
}
