package audit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fangd/fangd/store"
)

// walkAll drains a walk, checking no store read held more than a page.
func walkAll(t *testing.T, w *Walker) []Match {
	t.Helper()
	var all []Match
	for !w.Done() {
		ms, err := w.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
	}
	if w.Held > w.pageSize {
		t.Fatalf("one store read held %d entries, the page is %d", w.Held, w.pageSize)
	}
	return all
}

func ids(ms []Match) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Entry.ID
	}
	return out
}

func TestWalkPagesTheChainInBoundedReads(t *testing.T) {
	defer func(p int) { walkPage = p }(walkPage)
	walkPage = 7
	h := start(t, t.TempDir())
	appendN(t, h.log, 4, 25) // 100 entries
	for _, newest := range []bool{true, false} {
		w, err := h.log.Walk(context.Background(), Filter{}, newest)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := w.Count(); !ok || n != 100 {
			t.Fatalf("count = %d, %v", n, ok)
		}
		got := walkAll(t, w)
		if len(got) != 100 || w.Pages < 100/7 {
			t.Fatalf("newest=%v: %d entries in %d reads", newest, len(got), w.Pages)
		}
		for i, m := range got {
			want := uint64(i + 1)
			if newest {
				want = uint64(100 - i)
			}
			if m.Entry.ID != want || string(m.Raw[:1]) != "{" {
				t.Fatalf("newest=%v: entry %d has id %d", newest, i, m.Entry.ID)
			}
		}
	}
}

func TestWalkFilters(t *testing.T) {
	defer func(p int) { walkPage = p }(walkPage)
	walkPage = 3
	h := start(t, t.TempDir())
	ctx := context.Background()
	evs := []Event{
		{EventType: "agent_spawned", AgentID: "a1", Outcome: "ok", Actor: "api_key"},
		{EventType: "api_request", AgentID: "a1", Outcome: "denied", Actor: "loopback"},
		{EventType: "tool_invoked", AgentID: "a2", Outcome: "ok", Actor: "api_key"},
		{EventType: "budget_exceeded", AgentID: "a2", Outcome: "exceeded", Actor: "usage_ledger"},
		{EventType: "agent_terminated", AgentID: "a1", Outcome: "ok", Actor: "api_key"},
	}
	for _, ev := range evs {
		if _, err := h.log.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"agent", Filter{AgentID: "a1"}, []uint64{5, 2, 1}},
		{"actor", Filter{Actor: "api_key"}, []uint64{5, 3, 1}},
		{"outcome", Filter{Outcome: "ok"}, []uint64{5, 3, 1}},
		{"event type", Filter{Action: "tool_invoked"}, []uint64{3}},
		{"librefang name", Filter{Action: "AgentSpawn"}, []uint64{1}},
		{"librefang kill", Filter{Action: "agentkill"}, []uint64{5}},
		{"same words", Filter{Action: "BudgetExceeded"}, []uint64{4}},
		{"combined", Filter{AgentID: "a1", Outcome: "ok", Action: "AGENT_SPAWNED"}, []uint64{1}},
		{"cursor before", Filter{BeforeID: 4}, []uint64{3, 2, 1}},
		{"cursor after", Filter{AfterID: 3}, []uint64{5, 4}},
		{"both cursors", Filter{AfterID: 1, BeforeID: 3}, []uint64{2}},
		{"empty range", Filter{AfterID: 3, BeforeID: 4}, nil},
		{"no match", Filter{AgentID: "nobody"}, nil},
		{"future", Filter{From: time.Now().Add(time.Hour)}, nil},
		{"past", Filter{To: time.Now().Add(-time.Hour)}, nil},
		{"around now", Filter{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)}, []uint64{5, 4, 3, 2, 1}},
	}
	for _, c := range cases {
		w, err := h.log.Walk(ctx, c.f, true)
		if err != nil {
			t.Fatal(err)
		}
		got := ids(walkAll(t, w))
		if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if n, ok := w.Count(); ok && n != uint64(len(c.want)) {
			t.Errorf("%s: count %d, want %d", c.name, n, len(c.want))
		}
	}
}

// A walk sees the chain as committed when it started, and after a trim it
// starts at the first stored entry (the trimmed ones are archived). The
// trim is made by hand: Trim's own cut depends on when the anchor file
// caught up.
func TestWalkAfterTrimAndWhileAppending(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 10)
	al := h.db.AuditLog()
	if err := al.SetCheckpoint(store.AuditCheckpoint{Length: 4, Tip: "x", Entry: 10}); err != nil {
		t.Fatal(err)
	}
	if err := al.DeleteThrough(4); err != nil {
		t.Fatal(err)
	}
	trimmed, err := h.log.HistoryTrimmed()
	if err != nil || !trimmed {
		t.Fatalf("trimmed = %v, %v", trimmed, err)
	}
	w, err := h.log.Walk(context.Background(), Filter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, h.log, 1, 3) // after the walk started: not in it
	n, _ := w.Count()
	if got := ids(walkAll(t, w)); fmt.Sprint(got) != "[5 6 7 8 9 10]" || n != 6 {
		t.Fatalf("walk after trim: %v (count %d)", got, n)
	}
	w, _ = h.log.Walk(context.Background(), Filter{AfterID: 2, BeforeID: 7}, true)
	if got := ids(walkAll(t, w)); fmt.Sprint(got) != "[6 5]" {
		t.Fatalf("cursors across the trimmed prefix: %v", got)
	}
}
