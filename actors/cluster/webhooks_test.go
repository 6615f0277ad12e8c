package cluster

// The cluster-wide webhook store (webhooks.go) against a real embedded
// etcd in this process, under -race: ownership and fencing of an
// endpoint's outbox state, the unfenced intake every node appends to,
// and writes larger than one etcd Txn.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/webhook"
)

// hookNode is one node's Webhooks with its last applied round.
type hookNode struct {
	*Webhooks
	lastRound[webhook.ClusterEndpoint]
}

func newHookNode(t *testing.T, cli *clientv3.Client, id string, members func() []string) *hookNode {
	n := &hookNode{lastRound: lastRound[webhook.ClusterEndpoint]{name: func(e webhook.ClusterEndpoint) string { return e.ID }}}
	n.Webhooks = newWebhooks(cli, "t", id, "node-"+id, zerolog.Nop(), members, n.keep)
	t.Cleanup(func() { n.cancel() })
	return n
}

// soloHost is node a alone on a fresh etcd, after the round that made
// it the host of endpoint "wh".
func soloHost(t *testing.T) *hookNode {
	t.Helper()
	a := newHookNode(t, testClient(t, testEtcd(t)), "a", func() []string { return []string{"a"} })
	if err := a.PutEndpoint(context.Background(), "wh", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	a.round()
	return a
}

func readAll(t *testing.T, n *hookNode, id, prefix string) map[string]string {
	t.Helper()
	kvs, err := n.Read(context.Background(), id, prefix, "", "", false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}

// Two nodes that each think they are alone: one owns the outbox; both may
// append to its intake; only the owner moves intake into the outbox; the
// other's write is fenced; after the owner dies the other takes over
// within 10 s, finds the outbox as written, and a write under the dead
// lease is refused.
func TestWebhookOutboxOneOwnerFencedAndTakenOver(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA, cliB := testClient(t, ep), testClient(t, ep)
	a := newHookNode(t, cliA, "a", func() []string { return []string{"a"} })
	b := newHookNode(t, cliB, "b", func() []string { return []string{"b"} })
	ctx := context.Background()
	if err := b.PutEndpoint(ctx, "wh1", []byte(`{"id":"wh1"}`), map[string][]byte{"secret": []byte("sealed")}); err != nil {
		t.Fatal(err)
	}
	roundsAtOnce(a.round, b.round)
	va, vb := a.view("wh1"), b.view("wh1")
	if va.Mine == vb.Mine || va.Node == "" || va.Node != vb.Node {
		t.Fatalf("ownership: a %+v, b %+v; want exactly one owner both agree on", va, vb)
	}
	if string(va.Sealed["secret"]) != "sealed" || string(va.Record) != `{"id":"wh1"}` {
		t.Fatalf("record and sealed secret not in the round: %+v", va)
	}
	owner, other := a, b
	if vb.Mine {
		owner, other = b, a
	}
	// Both append their events (unfenced), with their cursors.
	for i, n := range []*hookNode{a, b} {
		ok, err := n.Append(ctx, "wh1", []webhook.StateOp{
			{Key: fmt.Sprintf("in/%s/%020d", n.nodeName, 7), Value: []byte(fmt.Sprintf("ev%d", i))},
			{Key: "pc/" + n.nodeName, Value: []byte("7")},
		})
		if err != nil || !ok {
			t.Fatalf("%s append: %v %v", n.nodeName, ok, err)
		}
	}
	if in := readAll(t, other, "wh1", "in/"); len(in) != 2 {
		t.Fatalf("intake %q", in)
	}
	move := []webhook.StateOp{
		{Key: "in/node-a/00000000000000000007", Delete: true},
		{Key: "in/node-b/00000000000000000007", Delete: true},
		{Key: "q/00000000000000000001", Value: []byte("ev0")},
		{Key: "q/00000000000000000002", Value: []byte("ev1")},
		{Key: "meta", Value: []byte(`{"next_seq":3}`)},
	}
	if err := other.Commit(ctx, "wh1", move); !errors.Is(err, ErrFenced) {
		t.Fatalf("the non-owner's move: %v, want ErrFenced", err)
	}
	if q := readAll(t, owner, "wh1", "q/"); len(q) != 0 {
		t.Fatalf("a fenced write left %q", q)
	}
	if err := owner.Commit(ctx, "wh1", move); err != nil {
		t.Fatalf("the owner's move: %v", err)
	}
	if in, q := readAll(t, owner, "wh1", "in/"), readAll(t, owner, "wh1", "q/"); len(in) != 0 || len(q) != 2 {
		t.Fatalf("after the move: intake %q, outbox %q", in, q)
	}
	deadLease := owner.myLease()

	owner.cancel()
	owner.cli.Close()
	killed := time.Now()
	if !roundUntil(10*time.Second, 200*time.Millisecond, other.round, func() bool { return other.view("wh1").Mine }) {
		t.Fatalf("not taken over within 10 s: %+v", other.view("wh1"))
	}
	t.Logf("taken over %v after the owner's death", time.Since(killed).Round(100*time.Millisecond))
	if q := readAll(t, other, "wh1", "q/"); q["q/00000000000000000002"] != "ev1" {
		t.Fatalf("the new owner's outbox: %q", q)
	}
	if err := other.Commit(ctx, "wh1", []webhook.StateOp{{Key: "q/00000000000000000001", Delete: true}}); err != nil {
		t.Fatalf("the new owner's write: %v", err)
	}
	stale := newHookNode(t, other.cli, "zombie", func() []string { return nil })
	stale.lease.id, stale.lease.ok = deadLease, time.Now()
	if err := stale.Commit(ctx, "wh1", []webhook.StateOp{{Key: "q/00000000000000000002", Delete: true}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a write under the dead lease: %v, want ErrFenced", err)
	}
	if q := readAll(t, other, "wh1", "q/"); len(q) != 1 {
		t.Fatalf("outbox changed by a fenced write: %q", q)
	}
}

// A deleted endpoint takes its state and owner with it: a producer's
// append is refused (nothing orphaned is written) and the old host's
// next write is fenced.
func TestWebhookDeleteStopsAppendsAndFencesTheHost(t *testing.T) {
	t.Parallel()
	a := soloHost(t)
	ctx := context.Background()
	if !a.view("wh").Mine {
		t.Fatal("not owned")
	}
	if err := a.Commit(ctx, "wh", []webhook.StateOp{{Key: "q/00000000000000000001", Value: []byte("m")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteEndpoint(ctx, "wh"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Count(ctx, "wh", ""); err != nil || n != 0 {
		t.Fatalf("state left after delete: %d %v", n, err)
	}
	ok, err := a.Append(ctx, "wh", []webhook.StateOp{{Key: "in/node-a/1", Value: []byte("late")}})
	if err != nil || ok {
		t.Fatalf("append to a deleted endpoint: %v %v, want refused", ok, err)
	}
	if n, _ := a.Count(ctx, "wh", ""); n != 0 {
		t.Fatalf("a refused append wrote %d keys", n)
	}
	if err := a.Commit(ctx, "wh", []webhook.StateOp{{Key: "meta", Value: []byte("{}")}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old host's write after delete: %v", err)
	}
	a.round()
	if len(a.seen) != 0 {
		t.Fatalf("a deleted endpoint in the round: %+v", a.seen)
	}
}

// One outbox write may exceed etcd's 128 operations per Txn (a replay of
// many dead letters): it is cut into consecutive fenced Txns, in order,
// and repeated keys collapse into the last. Reads page both ways.
func TestWebhookCommitBeyondOneTxnAndPagedReads(t *testing.T) {
	t.Parallel()
	a := soloHost(t)
	ctx := context.Background()
	var ops []webhook.StateOp
	for i := 1; i <= 300; i++ {
		ops = append(ops, webhook.StateOp{Key: fmt.Sprintf("q/%020d", i), Value: []byte(fmt.Sprint(i))})
	}
	ops = append(ops, webhook.StateOp{Key: fmt.Sprintf("q/%020d", 5), Delete: true}, webhook.StateOp{Key: "meta", Value: []byte("{}")})
	if err := a.Commit(ctx, "wh", ops); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Count(ctx, "wh", "q/"); n != 299 {
		t.Fatalf("%d outbox entries, want 299", n)
	}
	kvs, err := a.Read(ctx, "wh", "q/", fmt.Sprintf("q/%020d", 290), "", false, 100)
	if err != nil || len(kvs) != 11 || kvs[0].Key != fmt.Sprintf("q/%020d", 290) {
		t.Fatalf("ascending from 290: %d %v", len(kvs), err)
	}
	kvs, err = a.Read(ctx, "wh", "q/", "", fmt.Sprintf("q/%020d", 7), true, 3)
	if err != nil || len(kvs) != 3 || string(kvs[0].Value) != "6" || string(kvs[2].Value) != "3" {
		t.Fatalf("descending below 7: %+v %v", kvs, err)
	}
}

// The exclusion check is the shared owner's (owned.go): an excluded node
// gives its webhook outboxes up at once too, its writes are fenced, and
// the other node takes them on its next round.
func TestWebhookExcludedNodeGivesOutboxesUp(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	var ex exclusion
	a := newHookNode(t, testClient(t, ep), "a", func() []string { return []string{"a", "b"} })
	b := newHookNode(t, testClient(t, ep), "b", ex.membersOfB)
	a.excluded = ex.excluded
	id := choiceOf(t, "a", []string{"a", "b"}, "w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7")
	ctx := context.Background()
	if err := a.PutEndpoint(ctx, id, []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	a.round()
	b.round()
	if !a.view(id).Mine || b.view(id).Mine {
		t.Fatalf("before: a %+v, b %+v; want a the owner", a.view(id), b.view(id))
	}
	op := []webhook.StateOp{{Key: "meta", Value: []byte(`{}`)}}
	if err := a.Commit(ctx, id, op); err != nil {
		t.Fatal(err)
	}
	ex.exclude()
	a.round()
	if a.view(id).Mine {
		t.Fatalf("an excluded node still hosts %s", id)
	}
	if err := a.Commit(ctx, id, op); !errors.Is(err, ErrFenced) {
		t.Fatalf("the excluded node's write: %v, want ErrFenced", err)
	}
	b.round()
	if v := b.view(id); !v.Mine || v.Node != "node-b" {
		t.Fatalf("b did not take %s from the excluded node at once: %+v", id, v)
	}
}
