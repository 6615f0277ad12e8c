package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
)

// memCluster is Cluster in memory: it records every Commit (the etcd
// implementation and its fencing are tested in actors/cluster against a
// real etcd) and can hold a commit back or refuse it.
type memCluster struct {
	mu      sync.Mutex
	state   map[string]map[string][]byte
	commits [][]StateOp
	hold    chan struct{} // when set, Commit waits for it
	entered chan struct{}
	fail    error
}

func newMemCluster() *memCluster { return &memCluster{state: map[string]map[string][]byte{}} }

func (m *memCluster) PutChannel(context.Context, string, []byte, map[string][]byte, string) error {
	return nil
}
func (m *memCluster) DeleteChannel(context.Context, string) error { return nil }
func (m *memCluster) Kick()                                       {}

func (m *memCluster) State(_ context.Context, name string) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return CopyState(m.state, name), nil
}

// CopyState is channel name's state in st, copied: what a Cluster's State
// answers. The in-memory clusters of both test packages share it.
func CopyState(st map[string]map[string][]byte, name string) map[string][]byte {
	out := map[string][]byte{}
	maps.Copy(out, st[name])
	return out
}

// CommitOps applies ops to channel name's state in st, as a cluster's
// transaction does.
func CommitOps(st map[string]map[string][]byte, name string, ops []StateOp) {
	if st[name] == nil {
		st[name] = map[string][]byte{}
	}
	for _, o := range ops {
		if o.Delete {
			delete(st[name], o.Key)
		} else {
			st[name][o.Key] = o.Value
		}
	}
}

func (m *memCluster) Commit(_ context.Context, name string, ops []StateOp) error {
	m.mu.Lock()
	hold, entered := m.hold, m.entered
	m.mu.Unlock()
	if hold != nil {
		entered <- struct{}{}
		<-hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if len(ops) > MaxOps {
		return fmt.Errorf("%d ops in one transaction", len(ops))
	}
	m.commits = append(m.commits, append([]StateOp(nil), ops...))
	CommitOps(m.state, name, ops)
	return nil
}

func newTestClusterQueues(m *memCluster) *clusterQueues {
	return newClusterQueues(&clusterState{cl: m})
}

func putInboxSync(t *testing.T, q *clusterQueues, items []*inItem, cur *Cursor) error {
	t.Helper()
	done := make(chan error, 1)
	q.putInbox("tg", items, cur, func(err error) { done <- err })
	return <-done
}

// A poll batch larger than one etcd transaction is cut into consecutive
// transactions with the cursor in the last one: a crash in between leaves
// messages stored and the cursor behind them (a redelivery), never a
// cursor past messages that were not stored.
func TestClusterQueuesCursorLastInASplitBatch(t *testing.T) {
	m := newMemCluster()
	q := newTestClusterQueues(m)
	var items []*inItem
	for i := 1; i <= 250; i++ {
		items = append(items, &inItem{Seq: uint64(i), Msg: Inbound{ChatID: "7", Text: fmt.Sprintf("m%d", i)}})
	}
	if err := putInboxSync(t, q, items, &Cursor{Key: "offset", Value: "1251"}); err != nil {
		t.Fatal(err)
	}
	if len(m.commits) != 3 {
		t.Fatalf("%d transactions, want 3", len(m.commits))
	}
	for i, c := range m.commits {
		for j, o := range c {
			isCursor := o.Key == "cur/offset"
			if isCursor != (i == len(m.commits)-1 && j == len(c)-1) {
				t.Fatalf("transaction %d op %d is %s: the cursor must be the very last write", i, j, o.Key)
			}
		}
	}
	in, out, err := q.load("tg")
	if err != nil || len(in) != 250 || len(out) != 0 || in[0].Seq != 1 || in[249].Msg.Text != "m250" {
		t.Fatalf("load: %d in, %d out, %v", len(in), len(out), err)
	}
	if v, err := q.cursor("tg", "offset"); v != "1251" || err != nil {
		t.Fatalf("cursor %q %v", v, err)
	}
}

// Writes handed over while a commit is in flight go out together in the
// next transaction, in the order they were handed over: a turn's reply
// (finishTurn) never lands before the inbox write it answers, and a sent
// mark never before the reply it removes.
func TestClusterQueuesGroupCommitKeepsOrder(t *testing.T) {
	m := newMemCluster()
	m.hold, m.entered = make(chan struct{}), make(chan struct{}, 1)
	q := newTestClusterQueues(m)
	first := make(chan error, 1)
	q.putInbox("tg", []*inItem{{Seq: 1}}, &Cursor{Key: "offset", Value: "2"}, func(err error) { first <- err })
	<-m.entered // the first commit is in flight
	var wg sync.WaitGroup
	var order []string
	var mu sync.Mutex
	note := func(s string) func(error) {
		wg.Add(1)
		return func(err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, s)
			mu.Unlock()
			wg.Done()
		}
	}
	q.finishTurn("tg", &inItem{Seq: 1}, []*outItem{{Seq: 2, Msg: Outbound{ChatID: "7", Text: "echo"}}}, note("reply"))
	q.putInbox("tg", []*inItem{{Seq: 3}}, &Cursor{Key: "offset", Value: "3"}, note("inbox"))
	q.sent("tg", 2, note("sent"))
	m.mu.Lock()
	h := m.hold
	m.hold = nil
	m.mu.Unlock()
	close(h)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(m.commits) != 2 {
		t.Fatalf("%d transactions, want 2 (the three later writes grouped)", len(m.commits))
	}
	var keys []string
	for _, o := range m.commits[1] {
		k := o.Key
		if o.Delete {
			k = "-" + k
		}
		keys = append(keys, k)
	}
	want := "out/00000000000000000002 -in/00000000000000000001 in/00000000000000000003 cur/offset -out/00000000000000000002"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("grouped ops %q, want %q", got, want)
	}
	if strings.Join(order, ",") != "reply,inbox,sent" {
		t.Fatalf("done order %v", order)
	}
	st, _ := m.State(context.Background(), "tg")
	if len(st) != 2 || string(st["cur/offset"]) != "3" {
		t.Fatalf("state %q", st)
	}
}

// A refused commit (fenced: this node lost the channel) reaches the
// caller: the adapter then does not acknowledge the batch to the
// platform, which delivers it again to the new owner.
func TestClusterQueuesFencedWriteFails(t *testing.T) {
	m := newMemCluster()
	fenced := errors.New("fenced")
	m.fail = fenced
	q := newTestClusterQueues(m)
	if err := putInboxSync(t, q, []*inItem{{Seq: 1}}, &Cursor{Key: "offset", Value: "2"}); !errors.Is(err, fenced) {
		t.Fatalf("err %v", err)
	}
	if err := q.saveCursor("tg", "offset", "9"); !errors.Is(err, fenced) {
		t.Fatalf("saveCursor %v", err)
	}
}
