package audit

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

func TestRecentIsNewestFirstAndBounded(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 12)
	for _, c := range []struct{ limit, want int }{{0, 0}, {1, 1}, {5, 5}, {12, 12}, {500, 12}} {
		rec, err := h.log.Recent(c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Total != 12 || len(rec.Entries) != c.want {
			t.Fatalf("limit %d: total %d, %d entries", c.limit, rec.Total, len(rec.Entries))
		}
		for i, raw := range rec.Entries {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil || e.ID != uint64(12-i) {
				t.Fatalf("limit %d: entry %d = %s (%v)", c.limit, i, raw, err)
			}
		}
	}
}

func TestRecentOfAStoppedLogIsUnavailableAtOnce(t *testing.T) {
	h := start(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.k.Shutdown(ctx)
	done := make(chan error, 1)
	go func() { _, err := h.log.Recent(5); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(kernel.DefaultAskTimeout / 2):
		// Not a timing assertion on speed: a stopped log must be reported,
		// not waited out until the ask timeout.
		t.Fatal("Recent on a stopped log waited for the timeout")
	}
	de := kernel.AsError(err)
	if de == nil || de.Kind != kernel.KindUnavailable || de.Code != "actor_unavailable" {
		t.Fatalf("err = %#v, want Unavailable actor_unavailable", err)
	}
}
