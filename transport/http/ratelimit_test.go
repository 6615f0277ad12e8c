package http

import (
	"testing"
	"time"
)

func TestGCRAQuotaAndRecovery(t *testing.T) {
	t.Parallel()
	g := newGCRA(60) // one cell per second, burst 60
	now := time.Unix(1_700_000_000, 0)
	g.now = func() time.Time { return now }
	for i := range 60 {
		if ok, _ := g.allow("1.2.3.4", 1); !ok {
			t.Fatalf("request %d refused inside the burst", i)
		}
	}
	ok, wait := g.allow("1.2.3.4", 1)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("61st request: ok=%v wait=%v, want refused with wait <= 1s", ok, wait)
	}
	if ok, _ := g.allow("5.6.7.8", 1); !ok {
		t.Fatal("another client was limited by the first one's spending")
	}
	now = now.Add(time.Second)
	if ok, _ := g.allow("1.2.3.4", 1); !ok {
		t.Fatal("not allowed again after one emission interval")
	}
}

func TestGCRACostSpendsMoreCells(t *testing.T) {
	t.Parallel()
	g := newGCRA(60)
	now := time.Unix(1_700_000_000, 0)
	g.now = func() time.Time { return now }
	if ok, _ := g.allow("k", 50); !ok {
		t.Fatal("cost 50 refused on a fresh bucket")
	}
	if ok, wait := g.allow("k", 30); ok || wait != 20*time.Second {
		t.Fatalf("cost 30 after 50: ok=%v wait=%v, want refused, 20s", ok, wait)
	}
	if ok, _ := g.allow("k", 10); !ok {
		t.Fatal("cost 10 should still fit")
	}
}

func TestGCRASweepForgetsOnlyFullBuckets(t *testing.T) {
	t.Parallel()
	g := newGCRA(60)
	now := time.Unix(1_700_000_000, 0)
	g.now = func() time.Time { return now }
	g.allow("busy", 60)
	sh := &g.shards[0]
	sh.tat["idle"] = now.UnixNano() - 1
	sh.tat["busy-copy"] = now.UnixNano() + int64(time.Minute)
	sh.sweep(now.UnixNano())
	if _, ok := sh.tat["idle"]; ok {
		t.Fatal("full bucket kept")
	}
	if _, ok := sh.tat["busy-copy"]; !ok {
		t.Fatal("spent bucket forgotten")
	}
}

func TestRouteCost(t *testing.T) {
	t.Parallel()
	cases := []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/health", 1},
		{"GET", "/api/v1/audit/recent", 5},
		{"POST", "/api/agents/x/message", 30},
		{"POST", "/api/agents", 50},
		{"GET", "/api/usage/daily", 3},
		{"PUT", "/api/logs/level", 5},
	}
	for _, c := range cases {
		if got := routeCost(c.method, c.path); got != c.want {
			t.Errorf("routeCost(%s %s) = %d, want %d", c.method, c.path, got, c.want)
		}
	}
}
