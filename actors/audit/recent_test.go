package audit

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

func TestRecentIsNewestFirstAndBounded(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 12)
	for _, c := range []struct{ limit, want int }{{0, 0}, {1, 1}, {5, 5}, {12, 12}, {500, 12}} {
		rec, err := h.log.Recent(context.Background(), c.limit)
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

// RecentItems serves what Recent's Items holds, appended to the caller's
// slice, with the same length and tip.
func TestRecentItemsMatchRecent(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 12)
	for _, limit := range []int{0, 1, 5, 12, 500} {
		rec, err := h.log.Recent(context.Background(), limit)
		if err != nil {
			t.Fatal(err)
		}
		var buf [4][]byte
		items, total, tip, err := h.log.RecentItems(context.Background(), limit, buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		if total != rec.Total || tip != rec.Tip || len(items) != len(rec.Items) {
			t.Fatalf("limit %d: %d items, total %d, tip %q; Recent: %d, %d, %q", limit, len(items), total, tip, len(rec.Items), rec.Total, rec.Tip)
		}
		for i := range items {
			if string(items[i]) != string(rec.Items[i]) {
				t.Fatalf("limit %d: item %d = %s, Recent's %s", limit, i, items[i], rec.Items[i])
			}
		}
	}
	h.stop()
	if _, _, _, err := h.log.RecentItems(context.Background(), 5, nil); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindUnavailable {
		t.Fatalf("stopped log: %v, want unavailable", err)
	}
}

func TestRecentOfAStoppedLogIsUnavailableAtOnce(t *testing.T) {
	h := start(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.k.Shutdown(ctx)
	done := make(chan error, 1)
	go func() { _, err := h.log.Recent(context.Background(), 5); done <- err }()
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

// Recent's Items are the stored entries with LibreFang's seq, action and
// detail added, the same whether the entry was just committed or loaded
// at start, and Tip is the newest entry's hash.
func TestRecentItemsCarryLibreFangNames(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	details := []string{`PUT /x -> 200`, "quote \" backslash \\ <tag> & \n\t\u2028 ünï", ""}
	for _, d := range details {
		if _, err := h.log.Append(context.Background(), Event{EventType: "kind <" + d + ">", Details: d}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string, l *Log) {
		t.Helper()
		rec, err := l.Recent(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Items) != len(details) || len(rec.Entries) != len(details) {
			t.Fatalf("%s: %d items, %d entries", when, len(rec.Items), len(rec.Entries))
		}
		for i := range rec.Items {
			var stored, item map[string]any
			if err := json.Unmarshal(rec.Entries[i], &stored); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(rec.Items[i], &item); err != nil {
				t.Fatalf("%s: item %d is not JSON: %s", when, i, rec.Items[i])
			}
			for k, v := range stored {
				if item[k] != v {
					t.Fatalf("%s: item %d field %s = %v, stored %v", when, i, k, item[k], v)
				}
			}
			if item["seq"] != stored["id"] || item["action"] != stored["event_type"] || item["detail"] != stored["details"] ||
				len(item) != len(stored)+3 {
				t.Fatalf("%s: item %d = %s for %s", when, i, rec.Items[i], rec.Entries[i])
			}
			if want := details[len(details)-1-i]; item["detail"] != want {
				t.Fatalf("%s: item %d detail %q, want %q", when, i, item["detail"], want)
			}
		}
		var newest Entry
		if err := json.Unmarshal(rec.Entries[0], &newest); err != nil || rec.Tip != newest.Hash {
			t.Fatalf("%s: tip %q, newest entry %s", when, rec.Tip, rec.Entries[0])
		}
	}
	check("committed", h.log)
	h.stop()
	h = start(t, home)
	defer h.stop()
	check("loaded", h.log)
}

// Recent reads what the writer publishes, not the writer itself: an
// append's caller, once answered, finds its entry there (the batch is
// published before its callers hear), with many writers appending at once.
func TestRecentShowsAnAppendOnceItIsAnswered(t *testing.T) {
	h := start(t, t.TempDir())
	errs := make(chan error, 8*26)
	for w := range 8 {
		go func() {
			for range 25 {
				e, err := h.log.Append(context.Background(), Event{EventType: "test", Details: "w" + string(rune('a'+w))})
				if err != nil {
					errs <- err
					return
				}
				rec, err := h.log.Recent(context.Background(), 500)
				if err != nil {
					errs <- err
					return
				}
				for _, raw := range rec.Entries {
					var got Entry
					if rec.Total >= e.ID && json.Unmarshal(raw, &got) == nil && got.ID == e.ID && got.Hash == e.Hash {
						errs <- nil // seen
						break
					}
				}
			}
			errs <- errDone
		}()
	}
	seen, done := 0, 0
	for done < 8 {
		switch err := <-errs; err {
		case nil:
			seen++
		case errDone:
			done++
		default:
			t.Fatal(err)
		}
	}
	if seen != 200 {
		t.Fatalf("%d of 200 answered appends were in Recent right after", seen)
	}
}

var errDone = errors.New("done")
