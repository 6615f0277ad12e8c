package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

type harness struct {
	home string
	db   *store.DB
	k    *kernel.Kernel
	log  *Log
}

func start(t *testing.T, home string) *harness {
	t.Helper()
	h, err := startWith(t, home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startWith starts the log on home with opts (AnchorPath is set); on an
// error everything it opened is closed again.
func startWith(t testing.TB, home string, opts Options) (*harness, error) {
	t.Helper()
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	k := kernel.New(zerolog.Nop())
	opts.AnchorPath = AnchorPath(home)
	l, err := Start(k, db, opts)
	h := &harness{home: home, db: db, k: k, log: l}
	if err != nil {
		h.stop()
		return nil, err
	}
	t.Cleanup(h.stop)
	return h, nil
}

func (h *harness) stop() {
	if h.db != nil {
		kerneltest.Stop(h.k, h.db)
		h.db = nil
	}
}

func appendN(t *testing.T, l *Log, writers, each int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := l.Append(context.Background(), Event{EventType: "test", Details: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConcurrentAppendsFormOneValidChain(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 32, 25)
	rep, err := h.log.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid() || rep.ChainLength != 800 || rep.AnchorStatus != "ok" {
		t.Fatalf("report = %+v", rep)
	}
	rec, err := h.log.Recent(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Total != 800 || len(rec.Entries) != 3 {
		t.Fatalf("recent total=%d n=%d", rec.Total, len(rec.Entries))
	}
	var newest Entry
	json.Unmarshal(rec.Entries[0], &newest)
	if newest.ID != 800 || newest.AgentID != "system" || newest.Outcome != "ok" {
		t.Fatalf("newest = %+v", newest)
	}
}

func TestChainSurvivesRestartAndContinues(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 4, 10)
	h.stop()
	h2 := start(t, home)
	e, err := h2.log.Append(context.Background(), Event{EventType: "after_restart"})
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 41 {
		t.Fatalf("id after restart = %d, want 41", e.ID)
	}
	rep, _ := h2.log.Verify(context.Background())
	if !rep.Valid() || rep.ChainLength != 41 {
		t.Fatalf("report = %+v", rep)
	}
}

func TestVerifyDetectsAlteredEntry(t *testing.T) {
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 10)
	al := h.db.AuditLog()
	var target store.AuditRecord
	al.Scan(5, false, func(r store.AuditRecord) (bool, error) { target = r; return false, nil })
	altered := strings.Replace(string(target.Raw), `"details":"w0-4"`, `"details":"w0-4 (edited)"`, 1)
	if altered == string(target.Raw) {
		t.Fatalf("test did not alter entry: %s", target.Raw)
	}
	if err := al.Overwrite(store.AuditRecord{ID: 5, Raw: []byte(altered)}); err != nil {
		t.Fatal(err)
	}
	rep, _ := h.log.Verify(context.Background())
	if rep.Valid() || rep.BrokenAt != 5 || !strings.Contains(rep.Error, "hash mismatch") {
		t.Fatalf("report = %+v", rep)
	}
}

func TestVerifyDetectsRehashedEntry(t *testing.T) {
	// An attacker who also recomputes the edited entry's hash breaks the
	// next link instead.
	h := start(t, t.TempDir())
	appendN(t, h.log, 1, 10)
	al := h.db.AuditLog()
	var e Entry
	al.Scan(5, false, func(r store.AuditRecord) (bool, error) { return false, json.Unmarshal(r.Raw, &e) })
	e.Details = "rewritten"
	e.Hash = Hash(&e)
	raw, _ := json.Marshal(&e)
	al.Overwrite(store.AuditRecord{ID: 5, Raw: raw})
	rep, _ := h.log.Verify(context.Background())
	if rep.Valid() || rep.BrokenAt != 6 || !strings.Contains(rep.Error, "chain break") {
		t.Fatalf("report = %+v", rep)
	}
}

func TestVerifyDetectsTruncatedTail(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 1, 10)
	h.stop()
	// Remove the newest two entries while the daemon is down: the chain
	// that remains is internally consistent, only the anchor knows.
	db, err := store.Open(store.DefaultOptions(store.DataDir(home)))
	if err != nil {
		t.Fatal(err)
	}
	db.AuditLog().Remove(10)
	db.AuditLog().Remove(9)
	rep, _ := Verify(db.AuditLog(), AnchorPath(home), 0)
	db.Close()
	if rep.Valid() || rep.BrokenAt != 9 || rep.AnchorStatus != "mismatch" {
		t.Fatalf("offline report = %+v", rep)
	}
	// A restart does not rewrite the evidence away: start-up refuses.
	if _, err := startWith(t, home, Options{}); err == nil || !strings.Contains(err.Error(), "2 entries missing") {
		t.Fatalf("start on a truncated chain: %v", err)
	}
	h2, err := startWith(t, home, Options{OnMismatch: OnMismatchDegraded})
	if err != nil {
		t.Fatal(err)
	}
	rep, _ = h2.log.Verify(context.Background())
	if rep.Valid() || rep.AnchorStatus != "mismatch" {
		t.Fatalf("online report after restart = %+v", rep)
	}
}

func TestAnchorLaggingOneBatchIsRepairedOnStart(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 1, 5)
	h.stop()
	// Simulate a crash between the store commit and the anchor write.
	tipAt4 := ""
	db, _ := store.Open(store.DefaultOptions(store.DataDir(home)))
	db.AuditLog().Scan(4, false, func(r store.AuditRecord) (bool, error) {
		var e Entry
		json.Unmarshal(r.Raw, &e)
		tipAt4 = e.Hash
		return false, nil
	})
	db.Close()
	WriteAnchor(AnchorPath(home), Anchor{Length: 4, Tip: tipAt4})
	h2 := start(t, home)
	rep, _ := h2.log.Verify(context.Background())
	if !rep.Valid() {
		t.Fatalf("report = %+v", rep)
	}
	a, _ := ReadAnchor(AnchorPath(home))
	if a.Length != 5 {
		t.Fatalf("anchor not caught up: %+v", a)
	}
}

func TestSeparatorCannotForgeFields(t *testing.T) {
	a := Entry{ID: 1, Details: "x\x1foutcome=ok", Outcome: "denied"}
	b := Entry{ID: 1, Details: "x", Outcome: "ok\x1foutcome=denied"}
	a.Details, b.Outcome = clean(a.Details), clean(b.Outcome)
	if Hash(&a) == Hash(&b) {
		t.Fatal("separator in a field collided two different entries")
	}
}

// counters reads the append and commit counters.
func (h *harness) counters() (appends, commits float64) {
	families, _ := h.k.Metrics.Gather()
	for _, f := range families {
		switch f.GetName() {
		case "fangd_audit_appends_total":
			appends = f.Metric[0].GetCounter().GetValue()
		case "fangd_audit_commits_total":
			commits = f.Metric[0].GetCounter().GetValue()
		}
	}
	return appends, commits
}

// An append's caller finds its commit counted when it is answered: the
// counters were bumped when the writer actor heard of the commit, after
// the callers, and TestMCPToolCallAuditedInOneCommit read a count one
// commit short under CI load.
func TestCommitCountedBeforeTheCallerHears(t *testing.T) {
	h := start(t, t.TempDir())
	a0, _ := h.counters()
	for i := 1; i <= 200; i++ {
		if _, err := h.log.Append(context.Background(), Event{EventType: "test"}); err != nil {
			t.Fatal(err)
		}
		if appends, _ := h.counters(); appends != a0+float64(i) {
			t.Fatalf("after append %d the counter says %v appends", i, appends-a0)
		}
	}
}

func TestGroupCommitBatches(t *testing.T) {
	// With 64 concurrent writers, appends must share commits: the number of
	// anchor writes (one per batch) is far below the number of entries.
	h := start(t, t.TempDir())
	appendN(t, h.log, 64, 20)
	rep, _ := h.log.Verify(context.Background())
	if !rep.Valid() || rep.ChainLength != 1280 {
		t.Fatalf("report = %+v", rep)
	}
	appends, commits := h.counters()
	if appends != 1280 || commits == 0 || commits > appends/2 {
		t.Fatalf("appends=%v commits=%v: appends are not sharing commits", appends, commits)
	}
}

func TestRawRingKeepsNewestInOrder(t *testing.T) {
	var r rawRing
	entry := func(s string) recentEntry { return recentEntry{raw: []byte(s), item: []byte("item " + s)} }
	for i := 1; i <= recentCap+7; i++ {
		r.push(entry(fmt.Sprint(i)))
	}
	got, items := r.newest(3)
	if string(got[0]) != fmt.Sprint(recentCap+7) || string(got[2]) != fmt.Sprint(recentCap+5) || string(items[2]) != "item "+fmt.Sprint(recentCap+5) {
		t.Fatalf("newest 3 = %q %q", got, items)
	}
	all, _ := r.newest(recentCap + 100)
	if len(all) != recentCap || string(all[recentCap-1]) != "8" {
		t.Fatalf("oldest kept = %q of %d", all[len(all)-1], len(all))
	}
	var small rawRing
	small.push(entry("a"))
	small.push(entry("b"))
	if got, _ := small.newest(5); len(got) != 2 || string(got[0]) != "b" {
		t.Fatalf("partial ring = %q", got)
	}
}

func TestAnchorFollowsCommitsAndIsCurrentAfterStop(t *testing.T) {
	home := t.TempDir()
	h := start(t, home)
	appendN(t, h.log, 8, 50)
	h.stop()
	a, err := ReadAnchor(AnchorPath(home))
	if err != nil || a.Length != 400 {
		t.Fatalf("anchor after graceful stop = %+v, %v", a, err)
	}
}

func TestAnchorWriterCoalescesAndKeepsNewest(t *testing.T) {
	path := t.TempDir() + "/anchor"
	var errs []error
	a := startAnchorWriter(path, func(err error) { errs = append(errs, err) })
	for i := uint64(1); i <= 100; i++ {
		a.set(Anchor{Length: i, Tip: strings.Repeat("a", 64)})
	}
	a.set(Anchor{Length: 50, Tip: strings.Repeat("b", 64)}) // an older state never wins
	a.close()
	got, err := ReadAnchor(path)
	if err != nil || got.Length != 100 || got.Tip != strings.Repeat("a", 64) || len(errs) != 0 {
		t.Fatalf("anchor = %+v %v %v", got, err, errs)
	}
}

// marshalEntry writes the bytes encoding/json writes (HTML escaping off);
// store.AppendJSONString is checked on random strings too.
func TestMarshalEntryMatchesEncodingJSON(t *testing.T) {
	odd := []string{"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rcr", "\b\f\x00\x01\x1f\x7f",
		"<html> & 'single'", "ünïcödé ✓ 日本", "line\u2028para\u2029", "bad \xff\xfe utf8 \xc3", "emoji 🦊", strings.Repeat("x", 3000)}
	for i, s := range odd {
		e := Entry{ID: uint64(i) * 7919, Timestamp: s, EventType: s, AgentID: s, Details: s, Outcome: s,
			Actor: s, SourceIP: s, PrevHash: s, Hash: s}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&e); err != nil {
			t.Fatal(err)
		}
		got, err := marshalEntry(&e)
		if err != nil || string(got) != strings.TrimSuffix(want.String(), "\n") {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want.String())
		}
		// The writer's one-allocation encoding of the stored entry and
		// its item: the same bytes, the item written after the entry
		// without touching it, and neither able to grow into the other.
		served, fresh := servedEntry(&e), newRecentEntry(got, &e)
		if string(served.raw) != string(got) || string(served.item) != string(fresh.item) || cap(served.raw) != len(served.raw) {
			t.Fatalf("%q: servedEntry\n raw %s\nitem %s\nwant %s", s, served.raw, served.item, fresh.item)
		}
	}
}

// The writer encodes every append: the stored entry and its item in one
// allocation, the hash's string the only one of Hash. entrySize had left
// out the two hashes, and the item grew into a second buffer on every
// append.
func TestServedEntryAndHashAllocateOnce(t *testing.T) {
	e := chainEntry(1234567, Genesis, Event{EventType: "api_request", Details: "POST /api/agents/a1/message -> 200",
		Actor: "api_key:abcd", SourceIP: "127.0.0.1"})
	if n := testing.AllocsPerRun(50, func() { _ = servedEntry(&e) }); n != 1 {
		t.Fatalf("servedEntry: %v allocations, want 1", n)
	}
	if n := testing.AllocsPerRun(50, func() { _ = Hash(&e) }); n != 1 {
		t.Fatalf("Hash: %v allocations, want 1", n)
	}
}
