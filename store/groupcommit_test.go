package store

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
)

// gcHarness drives a GroupCommit from the test goroutine, as an actor
// would from Receive: commits block until the test releases them with an
// outcome, and their reports arrive on msgs.
type gcHarness struct {
	g       *GroupCommit[int]
	started chan []int    // each batch as its commit starts
	release chan error    // the outcome of the commit waiting
	msgs    chan any      // reports sent back to the owner
	answers map[int]error // item -> outcome it was answered with
	order   []int         // items in the order they were answered
}

func newGCHarness(t *testing.T, opts GroupCommitOptions[int]) *gcHarness {
	h := &gcHarness{started: make(chan []int, 16), release: make(chan error), msgs: make(chan any, 16), answers: map[int]error{}}
	opts.Commit = func(batch []int) error {
		h.started <- append([]int(nil), batch...)
		return <-h.release
	}
	opts.Done = func(item int, err error) {
		if _, dup := h.answers[item]; dup {
			t.Errorf("item %d answered twice", item)
		}
		h.answers[item] = err
		h.order = append(h.order, item)
	}
	h.g = NewGroupCommit(opts)
	t.Cleanup(func() {
		// Let a commit left blocked end, so the test leaks no goroutine.
		select {
		case h.release <- nil:
		default:
		}
	})
	return h
}

func (h *gcHarness) send(m any) { h.msgs <- m }

func (h *gcHarness) add(items ...int) {
	for _, it := range items {
		h.g.Add(it)
	}
	h.g.Flush(h.send)
}

// finish releases the commit in flight with err and hands its report to
// Committed, as the owner's Receive would.
func (h *gcHarness) finish(t *testing.T, err error) (batch []int, ok bool) {
	t.Helper()
	h.release <- err
	m := (<-h.msgs).(*Committed[int])
	batch, gotErr, ok := h.g.Committed(m)
	if ok && !errors.Is(gotErr, err) && gotErr != err {
		t.Fatalf("Committed returned %v, the commit failed with %v", gotErr, err)
	}
	return batch, ok
}

func TestGroupCommitBatchLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    GroupCommitOptions[int]
		items   []int
		batches [][]int
	}{
		{"no limits: one batch", GroupCommitOptions[int]{}, []int{1, 2, 3, 4, 5}, [][]int{{1, 2, 3, 4, 5}}},
		{"count", GroupCommitOptions[int]{MaxCount: 2}, []int{1, 2, 3, 4, 5}, [][]int{{1, 2}, {3, 4}, {5}}},
		// Sizes are the items' values: 1+2 fit in 4, 3 alone, 4 alone.
		{"bytes", GroupCommitOptions[int]{MaxBytes: 4, Size: func(i int) int { return i }}, []int{1, 2, 3, 4}, [][]int{{1, 2}, {3}, {4}}},
		{"an item over the byte limit goes alone", GroupCommitOptions[int]{MaxBytes: 4, Size: func(i int) int { return i }}, []int{9, 1, 10}, [][]int{{9}, {1}, {10}}},
		// Sizes are the items' values mod 10.
		{"count and bytes, whichever is first", GroupCommitOptions[int]{MaxCount: 3, MaxBytes: 5, Size: func(i int) int { return i % 10 }}, []int{11, 21, 31, 41, 14, 51}, [][]int{{11, 21, 31}, {41, 14}, {51}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGCHarness(t, tc.opts)
			for _, it := range tc.items {
				h.g.Add(it)
			}
			var got [][]int
			for h.g.Flush(h.send); h.g.InFlight(); h.g.Flush(h.send) {
				got = append(got, <-h.started)
				h.finish(t, nil)
			}
			if !reflect.DeepEqual(got, tc.batches) {
				t.Fatalf("batches %v, want %v", got, tc.batches)
			}
			if !reflect.DeepEqual(h.order, tc.items) {
				t.Fatalf("answered %v, want every item in order %v", h.order, tc.items)
			}
		})
	}
}

// Items added while a commit is in flight wait, are not answered before
// their own commit, and go together in the next one.
func TestGroupCommitOneInFlightAnswersWhenDurable(t *testing.T) {
	h := newGCHarness(t, GroupCommitOptions[int]{})
	h.add(1)
	if b := <-h.started; !reflect.DeepEqual(b, []int{1}) {
		t.Fatalf("first batch %v", b)
	}
	h.add(2)
	h.add(3)
	select {
	case b := <-h.started:
		t.Fatalf("a second commit %v started while one was in flight", b)
	default:
	}
	if len(h.answers) != 0 || h.g.Pending() != 2 {
		t.Fatalf("answered %v with 2 items pending %d before any commit ended", h.answers, h.g.Pending())
	}
	if batch, ok := h.finish(t, nil); !ok || !reflect.DeepEqual(batch, []int{1}) {
		t.Fatalf("Committed = %v, %v", batch, ok)
	}
	if _, answered := h.answers[2]; answered {
		t.Fatal("item 2 answered by item 1's commit")
	}
	h.g.Flush(h.send)
	if b := <-h.started; !reflect.DeepEqual(b, []int{2, 3}) {
		t.Fatalf("second batch %v, want the two waiting items together", b)
	}
	h.finish(t, nil)
	for it := 1; it <= 3; it++ {
		if err, ok := h.answers[it]; !ok || err != nil {
			t.Fatalf("item %d answered %v (%v)", it, err, ok)
		}
	}
}

// A failed commit fails its batch and everything queued behind it, and
// every later Add until Reset: nothing is durable after a lost write.
func TestGroupCommitFailureFailsBatchPendingAndLaterWrites(t *testing.T) {
	boom := errors.New("disk says no")
	h := newGCHarness(t, GroupCommitOptions[int]{})
	h.add(1, 2)
	<-h.started
	h.add(3)
	if _, ok := h.finish(t, boom); !ok {
		t.Fatal("report ignored")
	}
	h.add(4)
	select {
	case b := <-h.started:
		t.Fatalf("commit %v started after a failure", b)
	default:
	}
	for it := 1; it <= 4; it++ {
		if !errors.Is(h.answers[it], boom) {
			t.Fatalf("item %d answered %v, want %v", it, h.answers[it], boom)
		}
	}
	h.g.Reset()
	h.add(5)
	if b := <-h.started; !reflect.DeepEqual(b, []int{5}) {
		t.Fatalf("after Reset, batch %v", b)
	}
	h.finish(t, nil)
	if err, ok := h.answers[5]; !ok || err != nil {
		t.Fatalf("item 5 after Reset answered %v (%v)", err, ok)
	}
}

// A report from before Reset (the owner restarted and reloaded) is
// ignored: its waiters are not answered twice, and it does not end the
// new commit in flight.
func TestGroupCommitIgnoresReportFromBeforeReset(t *testing.T) {
	h := newGCHarness(t, GroupCommitOptions[int]{})
	h.add(1)
	<-h.started
	h.g.Reset()
	h.release <- nil
	stale := (<-h.msgs).(*Committed[int])
	h.add(2)
	<-h.started
	if _, _, ok := h.g.Committed(stale); ok {
		t.Fatal("a report from before Reset was taken")
	}
	if !h.g.InFlight() {
		t.Fatal("a stale report ended the commit in flight")
	}
	h.finish(t, nil)
	if _, answered := h.answers[1]; answered {
		t.Fatal("the stale batch was answered after Reset")
	}
}

// Stop and Drain wait for the commit in flight and answer it (its report
// never arrives: a stopped actor gets no mail), then fail or commit what is
// pending, and refuse what comes after.
func TestGroupCommitStopAndDrain(t *testing.T) {
	shut := errors.New("shutting down")
	boom := errors.New("disk says no")
	for _, tc := range []struct {
		name     string
		inFlight error // outcome of the commit in flight at stop
		drain    bool
		drained  error // outcome of the commits Drain makes
		want     map[int]error
	}{
		{"stop answers the flight and fails pending", nil, false, nil, map[int]error{1: nil, 2: shut, 3: shut, 4: shut}},
		{"stop after a failed flight", boom, false, nil, map[int]error{1: boom, 2: boom, 3: boom, 4: shut}},
		{"drain commits pending", nil, true, nil, map[int]error{1: nil, 2: nil, 3: nil, 4: errStopped}},
		{"drain that fails", nil, true, boom, map[int]error{1: nil, 2: boom, 3: boom, 4: boom}},
		{"drain after a failed flight", boom, true, nil, map[int]error{1: boom, 2: boom, 3: boom, 4: boom}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGCHarness(t, GroupCommitOptions[int]{MaxCount: 1})
			h.add(1)
			<-h.started
			h.add(2, 3)
			quit := make(chan struct{})
			fed := make(chan struct{})
			go func() { // the disk: ends the flight, then Drain's commits
				defer close(fed)
				h.release <- tc.inFlight
				for {
					select {
					case <-h.started:
						h.release <- tc.drained
					case <-quit:
						return
					}
				}
			}()
			var err error
			if tc.drain {
				err = h.g.Drain()
			} else {
				h.g.Stop(shut)
			}
			close(quit)
			<-fed
			h.add(4)
			if want := tc.drain && (tc.inFlight != nil || tc.drained != nil); (err != nil) != want {
				t.Fatalf("Drain returned %v", err)
			}
			if !reflect.DeepEqual(h.answers, tc.want) {
				t.Fatalf("answers %v, want %v", h.answers, tc.want)
			}
			select {
			case m := <-h.msgs:
				if _, _, ok := h.g.Committed(m.(*Committed[int])); ok {
					t.Fatal("the flight's report was taken after Stop answered it")
				}
			default:
			}
		})
	}
}

func ExampleGroupCommit() {
	var log []string
	g := NewGroupCommit(GroupCommitOptions[string]{
		MaxCount: 2,
		Commit:   func(batch []string) error { return nil }, // the owner's "apply this batch"
		Done:     func(item string, err error) { log = append(log, fmt.Sprint(item, " durable: ", err == nil)) },
	})
	mailbox := make(chan any, 1) // an actor would send to its own PID
	for _, it := range []string{"a", "b", "c"} {
		g.Add(it)
	}
	for g.Flush(func(m any) { mailbox <- m }); g.InFlight(); g.Flush(func(m any) { mailbox <- m }) {
		g.Committed((<-mailbox).(*Committed[string]))
	}
	fmt.Println(log)
	// Output: [a durable: true b durable: true c durable: true]
}

// With Durable, a committed batch is answered from the commit goroutine
// before its report is sent, and not again by Committed or Stop; failures
// still go to Done.
func TestGroupCommitDurableAnswersBeforeTheReport(t *testing.T) {
	boom := errors.New("disk says no")
	durable := make(chan []int, 4)
	h := newGCHarness(t, GroupCommitOptions[int]{MaxCount: 1})
	h.g.opts.Durable = func(batch []int) { durable <- batch }
	h.add(1, 2, 3)
	<-h.started
	h.release <- nil
	if b := <-durable; !reflect.DeepEqual(b, []int{1}) {
		t.Fatalf("Durable got %v", b)
	}
	if _, _, ok := h.g.Committed((<-h.msgs).(*Committed[int])); !ok || len(h.answers) != 0 {
		t.Fatalf("Committed ok=%v, Done answered %v for a batch Durable answered", ok, h.answers)
	}
	h.g.Flush(h.send)
	<-h.started
	go func() { h.release <- nil }()
	h.g.Stop(boom) // answers 2 through Durable, fails 3 through Done
	if b := <-durable; !reflect.DeepEqual(b, []int{2}) {
		t.Fatalf("Durable got %v", b)
	}
	if want := map[int]error{3: boom}; !reflect.DeepEqual(h.answers, want) {
		t.Fatalf("Done answered %v, want %v", h.answers, want)
	}
}

// With CommitAsync no commit goroutine waits: the batch is handed to a
// writer that calls done (here the test, as the write queue would). The
// report reaches the owner before Durable answers the batch's waiters, items
// added meanwhile go together in the next batch, a failure fails the batch,
// everything pending and later Adds, and Drain commits what is left.
func TestGroupCommitAsyncReportsBeforeDurable(t *testing.T) {
	type handed struct {
		batch []int
		done  func(error)
	}
	commits := make(chan handed, 4)
	var events []string
	msgs := make(chan any, 4)
	send := func(m any) { events = append(events, "report"); msgs <- m }
	answers := map[int]error{}
	g := NewGroupCommit(GroupCommitOptions[int]{
		CommitAsync: func(batch []int, done func(error)) { commits <- handed{append([]int(nil), batch...), done} },
		Durable:     func(batch []int) { events = append(events, fmt.Sprint("durable ", batch)) },
		Done:        func(item int, err error) { answers[item] = err },
	})
	g.Add(1)
	g.Flush(send)
	c := <-commits
	g.Add(2)
	g.Add(3)
	g.Flush(send) // one in flight: waits
	if len(commits) != 0 || !g.InFlight() || g.Pending() != 2 {
		t.Fatalf("a second commit started while one was in flight (pending %d)", g.Pending())
	}
	c.done(nil)
	if want := []string{"report", "durable [1]"}; !reflect.DeepEqual(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	if batch, err, ok := g.Committed((<-msgs).(*Committed[int])); !ok || err != nil || !reflect.DeepEqual(batch, []int{1}) || len(answers) != 0 {
		t.Fatalf("Committed %v %v %v, Done answered %v", batch, err, ok, answers)
	}
	g.Flush(send)
	c = <-commits
	if !reflect.DeepEqual(c.batch, []int{2, 3}) {
		t.Fatalf("second batch %v", c.batch)
	}
	g.Add(4)
	boom := errors.New("disk says no")
	c.done(boom)
	if _, err, ok := g.Committed((<-msgs).(*Committed[int])); !ok || err != boom {
		t.Fatalf("failed commit reported %v %v", err, ok)
	}
	g.Add(5)
	if want := map[int]error{2: boom, 3: boom, 4: boom, 5: boom}; !reflect.DeepEqual(answers, want) {
		t.Fatalf("answers %v, want %v", answers, want)
	}

	// Drain waits for the writer's done in the calling goroutine.
	drained := NewGroupCommit(GroupCommitOptions[int]{
		CommitAsync: func(batch []int, done func(error)) { go done(nil) },
		Done:        func(item int, err error) { answers[item+100] = err },
	})
	drained.Add(1)
	drained.Add(2)
	if err := drained.Drain(); err != nil || answers[101] != nil || answers[102] != nil || len(answers) != 6 {
		t.Fatalf("Drain %v, answers %v", err, answers)
	}
}

// With Chain the writer's done starts the next commit itself, with the
// items pending at that moment: one commit at a time still (the next is
// handed over only once the one before is durable), every report reaches
// the owner in order, a failure ends the chain and fails what is pending,
// Stop waits for a chain it cut short, and a report of another
// GroupCommit (an owner restarted with a new one) is ignored.
func TestGroupCommitChainStartsTheNextBatchWhenDurable(t *testing.T) {
	type handed struct {
		batch []int
		done  func(error)
	}
	commits := make(chan handed, 4)
	msgs := make(chan any, 8)
	send := func(m any) { msgs <- m }
	var durable [][]int
	answers := map[int]error{}
	g := NewGroupCommit(GroupCommitOptions[int]{
		Chain:       true,
		CommitAsync: func(batch []int, done func(error)) { commits <- handed{append([]int(nil), batch...), done} },
		Durable:     func(batch []int) { durable = append(durable, batch) },
		Done:        func(item int, err error) { answers[item] = err },
	})
	g.Add(1)
	g.Flush(send)
	c := <-commits
	g.Add(2)
	g.Add(3)
	g.Flush(send)
	if len(commits) != 0 {
		t.Fatal("a second commit started while one was in flight")
	}
	c.done(nil) // the owner has not heard yet: done hands 2 and 3 over
	c = <-commits
	if !reflect.DeepEqual(c.batch, []int{2, 3}) || !g.InFlight() || g.Pending() != 0 {
		t.Fatalf("chained batch %v (in flight %v, pending %d)", c.batch, g.InFlight(), g.Pending())
	}
	g.Add(4)
	c.done(nil)
	c = <-commits
	if !reflect.DeepEqual(c.batch, []int{4}) || !reflect.DeepEqual(durable, [][]int{{1}, {2, 3}}) {
		t.Fatalf("third batch %v, durable %v", c.batch, durable)
	}
	for _, want := range [][]int{{1}, {2, 3}} {
		if batch, err, ok := g.Committed((<-msgs).(*Committed[int])); !ok || err != nil || !reflect.DeepEqual(batch, want) {
			t.Fatalf("report %v %v %v, want %v", batch, err, ok, want)
		}
	}
	g.Add(5)
	boom := errors.New("disk says no")
	c.done(boom) // no chain after a failure, though 5 waits
	if len(commits) != 0 || !g.InFlight() {
		t.Fatal("a batch was chained onto a failed one")
	}
	if _, err, ok := g.Committed((<-msgs).(*Committed[int])); !ok || err != boom {
		t.Fatalf("failed commit reported %v %v", err, ok)
	}
	if want := map[int]error{4: boom, 5: boom}; !reflect.DeepEqual(answers, want) {
		t.Fatalf("answers %v, want %v", answers, want)
	}

	// Stop cuts a chain short: it waits for the commit in flight, which
	// hands nothing more over, and fails what is pending.
	g.Reset()
	g.Add(6)
	g.Flush(send)
	c = <-commits
	g.Add(7)
	stopped := make(chan struct{})
	go func() { g.Stop(boom); close(stopped) }()
	for !g.stoppingNow() {
		select {
		case <-stopped:
			t.Fatal("Stop returned with a commit in flight")
		default:
			runtime.Gosched()
		}
	}
	c.done(nil)
	<-stopped
	if len(commits) != 0 || answers[7] != boom || len(durable) != 3 {
		t.Fatalf("after Stop: %d commits started, answers %v, durable %v", len(commits), answers, durable)
	}
	// The reports still on their way were dealt with by Stop, and one of
	// another GroupCommit is never this one's.
	other := NewGroupCommit(GroupCommitOptions[int]{Chain: true, CommitAsync: g.opts.CommitAsync, Durable: g.opts.Durable})
	other.Add(8)
	other.Flush(send)
	(<-commits).done(nil)
	for range 2 {
		if _, _, ok := g.Committed((<-msgs).(*Committed[int])); ok {
			t.Fatal("a stale report was taken")
		}
	}
}

func (g *GroupCommit[T]) stoppingNow() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopping
}
