package cluster

import (
	"testing"
	"time"
)

// The watchdog reports an exclusion once, acts once when it lasted the
// grace, never for a node that came back before it, and starts over after
// the node was back.
func TestWatchdogReportsOnceAndActsAfterGrace(t *testing.T) {
	t.Parallel()
	var excluded, expired []string
	var waited time.Duration
	w := &watch{w: Watchdog{Grace: 10 * time.Second,
		Excluded: func(m string) { excluded = append(excluded, m) },
		Expired:  func(m string, after time.Duration) { expired = append(expired, m); waited = after }}}
	t0 := time.Unix(1000, 0)
	w.observe("m1", false, t0)
	w.observe("m1", true, t0.Add(time.Second))
	w.observe("m1", true, t0.Add(5*time.Second))
	if len(excluded) != 1 || len(expired) != 0 {
		t.Fatalf("within the grace: excluded %v expired %v", excluded, expired)
	}
	// Back before the grace ran out: nothing happens, and a new
	// exclusion waits a full grace again.
	w.observe("m1", false, t0.Add(6*time.Second))
	w.observe("m1", true, t0.Add(7*time.Second))
	w.observe("m1", true, t0.Add(12*time.Second))
	if len(excluded) != 2 || len(expired) != 0 {
		t.Fatalf("after coming back: excluded %v expired %v", excluded, expired)
	}
	w.observe("m1", true, t0.Add(17*time.Second))
	w.observe("m1", true, t0.Add(30*time.Second))
	if len(expired) != 1 || waited != 10*time.Second {
		t.Fatalf("after the grace: expired %v after %v, want once after 10s", expired, waited)
	}
}
