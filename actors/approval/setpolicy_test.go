package approval

import (
	"testing"
)

// SetPolicy swaps the policy for later decisions (config reload); an
// invalid one is refused and the old policy stays in force.
func TestSetPolicySwapsAtomicallyAndRefusesInvalid(t *testing.T) {
	// The default gate is off (auto_approve = true), so only
	// require_approval decides what waits.
	open := DefaultPolicy()
	open.AutoApprove = AutoApprove{All: true}
	h := newHarness(t, open, nil)
	if h.a.Gated("deploy_prod") {
		t.Fatal("deploy_prod gated with auto_approve = true")
	}
	next := open
	next.RequireApproval = []string{"deploy_*"}
	next.TimeoutSecs = 42
	if err := h.a.SetPolicy(next); err != nil {
		t.Fatal(err)
	}
	if !h.a.Gated("deploy_prod") || h.a.Gated("shell_exec") {
		t.Fatalf("after SetPolicy: deploy_prod gated=%t shell_exec gated=%t", h.a.Gated("deploy_prod"), h.a.Gated("shell_exec"))
	}
	// A request created now takes the new timeout.
	rec := h.create("a1", "deploy_prod")
	if rec.TimeoutSecs != 42 {
		t.Fatalf("new request's timeout_secs = %d, want 42", rec.TimeoutSecs)
	}

	bad := open
	bad.TimeoutAction = "shrug"
	if err := h.a.SetPolicy(bad); err == nil {
		t.Fatal("an invalid policy was accepted")
	}
	if !h.a.Gated("deploy_prod") || h.a.Policy().TimeoutSecs != 42 {
		t.Fatalf("the invalid policy changed the one in force: %+v", h.a.Policy())
	}
}
