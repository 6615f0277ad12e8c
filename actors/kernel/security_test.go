package kernel

import "testing"

func TestSecurityStateAgreesWithStatus(t *testing.T) {
	s := NewSecurity()
	on := true
	s.Register("merkle_audit_trail", func() State {
		if on {
			return StateActive
		}
		return StateInactive
	})
	s.Register("gcra_rate_limiter", func() State { return StateInactive })
	check := func() {
		t.Helper()
		st := s.Status()
		if len(st) != len(SecuritySystems) {
			t.Fatalf("Status has %d systems, want %d", len(st), len(SecuritySystems))
		}
		for _, name := range SecuritySystems {
			if got := s.State(name); got != st[name] {
				t.Fatalf("State(%q) = %q, Status says %q", name, got, st[name])
			}
		}
	}
	check()
	if s.State("merkle_audit_trail") != StateActive || s.State("taint_tracking") != StateUnavailable {
		t.Fatal("registered probe or unavailable default not reported")
	}
	on = false // probes report what is true now, not at registration
	check()
	if s.State("merkle_audit_trail") != StateInactive {
		t.Fatal("State did not re-run the probe")
	}
}
