package cluster

// fangd's own cluster-channel code (ownership, fencing, the account claim,
// state commits) against a real embedded etcd in this process, under
// -race: no protoactor cluster runs here (members are given), so
// upstream's races are not in the way.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/channel"
)

// testNode is one node's Channels with its last applied round.
type testNode struct {
	*Channels
	lastRound[channel.ClusterChannel]
}

func newTestNode(t *testing.T, cli *clientv3.Client, id string, members func() []string) *testNode {
	n := &testNode{lastRound: lastRound[channel.ClusterChannel]{name: func(c channel.ClusterChannel) string { return c.Name }}}
	n.Channels = newChannels(cli, "t", id, "node-"+id, zerolog.Nop(), members, n.keep)
	t.Cleanup(func() { n.cancel() })
	return n
}

// One owner among two nodes that both want the channel; the other's
// writes are fenced; after the owner dies (its client gone, so its lease
// is not kept alive) the other takes over within 10 s, sees the state
// the first wrote, and a write under the dead owner's lease is refused.
func TestChannelOwnerExclusiveFencedAndTakenOver(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA, cliB := testClient(t, ep), testClient(t, ep)
	// Each node believes it is the only member: both are the rendezvous
	// choice, as in a topology disagreement. The Txn still picks one.
	a := newTestNode(t, cliA, "a", func() []string { return []string{"a"} })
	b := newTestNode(t, cliB, "b", func() []string { return []string{"b"} })
	ctx := context.Background()
	if err := a.PutChannel(ctx, "tg", []byte(`{"name":"tg"}`), map[string][]byte{"bot_token": []byte("sealed")}, "fp1"); err != nil {
		t.Fatal(err)
	}
	roundsAtOnce(a.round, b.round)
	va, vb := a.view("tg"), b.view("tg")
	if va.Mine == vb.Mine || va.Node == "" || va.Node != vb.Node {
		t.Fatalf("ownership: a %+v, b %+v; want exactly one owner both agree on", va, vb)
	}
	if string(va.Sealed["bot_token"]) != "sealed" || string(va.Record) != `{"name":"tg"}` {
		t.Fatalf("record and sealed secret not in the round: %+v", va)
	}
	owner, other := a, b
	if vb.Mine {
		owner, other = b, a
	}
	cursor := []channel.StateOp{{Key: "cur/offset", Value: []byte("1001")}}
	if err := other.Commit(ctx, "tg", cursor); !errors.Is(err, ErrFenced) {
		t.Fatalf("the non-owner's write: %v, want ErrFenced", err)
	}
	if err := owner.Commit(ctx, "tg", cursor); err != nil {
		t.Fatalf("the owner's write: %v", err)
	}
	deadLease := owner.myLease()

	// The owner dies: nothing keeps its lease alive any more.
	owner.cancel()
	owner.cli.Close()
	killed := time.Now()
	if !roundUntil(10*time.Second, 200*time.Millisecond, other.round, func() bool { return other.view("tg").Mine }) {
		t.Fatalf("not taken over within 10 s: %+v", other.view("tg"))
	}
	t.Logf("taken over %v after the owner's death", time.Since(killed).Round(100*time.Millisecond))
	st, err := other.State(ctx, "tg")
	if err != nil || string(st["cur/offset"]) != "1001" {
		t.Fatalf("the cursor the first owner wrote: %q %v", st["cur/offset"], err)
	}
	// A write still carrying the dead owner's lease (a paused process
	// waking up) is refused by etcd itself.
	stale := newTestNode(t, other.cli, "zombie", func() []string { return nil })
	stale.lease.id, stale.lease.ok = deadLease, time.Now()
	if err := stale.Commit(ctx, "tg", []channel.StateOp{{Key: "cur/offset", Value: []byte("999")}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a write under the dead lease: %v, want ErrFenced", err)
	}
	if st, _ := other.State(ctx, "tg"); string(st["cur/offset"]) != "1001" {
		t.Fatalf("cursor changed by a fenced write: %q", st["cur/offset"])
	}
}

// A graceful stop revokes the owner lease: the other node takes the
// channel on its next round, without waiting for the lease to run out.
func TestChannelGracefulStopHandsOver(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	both := func() []string { return []string{"a", "b"} }
	a := newTestNode(t, testClient(t, ep), "a", both)
	b := newTestNode(t, testClient(t, ep), "b", both)
	ctx := context.Background()
	// A name whose rendezvous choice is a, so a takes it at once.
	name := choiceOf(t, "a", both(), "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8")
	if err := a.PutChannel(ctx, name, []byte(`{}`), nil, ""); err != nil {
		t.Fatal(err)
	}
	b.round() // not b's to take yet: a is the choice and the grace has not passed
	if b.view(name).Mine {
		t.Fatal("b took a channel whose rendezvous choice is a, with no grace")
	}
	a.round()
	if !a.view(name).Mine {
		t.Fatalf("a did not take its channel: %+v", a.view(name))
	}
	go a.loop(a.round)
	a.stop()
	b.round()
	// The grace for a channel that was owned a moment ago has not begun:
	// b is not the rendezvous choice, so it waits takeoverGrace at most.
	if !roundUntil(takeoverGrace+2*time.Second, 100*time.Millisecond, b.round, func() bool { return b.view(name).Mine }) {
		t.Fatalf("b did not take the channel after a's graceful stop: %+v", b.view(name))
	}
}

// The account fingerprint is claimed cluster-wide: a second channel with
// the same bot account is refused, a channel that changes account frees
// the old one, and deleting a channel frees its account.
func TestChannelAccountClaimedOnce(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a := newTestNode(t, testClient(t, ep), "a", nil)
	b := newTestNode(t, testClient(t, ep), "b", nil)
	ctx := context.Background()
	if err := a.PutChannel(ctx, "tg", []byte(`{}`), nil, "fp1"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutChannel(ctx, "tg2", []byte(`{}`), nil, "fp1"); !errors.Is(err, channel.ErrAccountTaken) {
		t.Fatalf("second channel on the same account: %v", err)
	}
	if err := a.PutChannel(ctx, "tg", []byte(`{}`), nil, "fp1"); err != nil {
		t.Fatalf("reconfiguring the holder: %v", err)
	}
	if err := a.PutChannel(ctx, "tg", []byte(`{}`), nil, "fp2"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutChannel(ctx, "tg2", []byte(`{}`), nil, "fp1"); err != nil {
		t.Fatalf("the freed account: %v", err)
	}
	if err := b.PutChannel(ctx, "tg3", []byte(`{}`), nil, "fp2"); !errors.Is(err, channel.ErrAccountTaken) {
		t.Fatalf("tg's new account: %v", err)
	}
	if err := a.DeleteChannel(ctx, "tg"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutChannel(ctx, "tg3", []byte(`{}`), nil, "fp2"); err != nil {
		t.Fatalf("the deleted channel's account: %v", err)
	}
}

// A batch that stores a message and removes it again (queued and sent
// while one commit was in flight), or moves a cursor twice, names a key
// twice, which etcd refuses in one Txn: Commit keeps the last operation
// per key, which leaves the same state.
func TestChannelCommitCollapsesRepeatedKeys(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a := newTestNode(t, testClient(t, ep), "a", func() []string { return []string{"a"} })
	ctx := context.Background()
	if err := a.PutChannel(ctx, "tg", []byte(`{}`), nil, ""); err != nil {
		t.Fatal(err)
	}
	a.round()
	if !a.view("tg").Mine {
		t.Fatal("not owned")
	}
	ops := []channel.StateOp{
		{Key: "out/1", Value: []byte("reply")},
		{Key: "cur/offset", Value: []byte("5")},
		{Key: "in/2", Value: []byte("msg")},
		{Key: "out/1", Delete: true},
		{Key: "cur/offset", Value: []byte("7")},
	}
	if err := a.Commit(ctx, "tg", ops); err != nil {
		t.Fatal(err)
	}
	st, err := a.State(ctx, "tg")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || string(st["cur/offset"]) != "7" || string(st["in/2"]) != "msg" {
		t.Fatalf("state %q", st)
	}
	if err := a.DeleteChannel(ctx, "tg"); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.State(ctx, "tg"); len(st) != 0 {
		t.Fatalf("state left after delete: %q", st)
	}
	// The owner key went with the channel: the old host's next write is
	// fenced.
	if err := a.Commit(ctx, "tg", ops[:1]); !errors.Is(err, ErrFenced) {
		t.Fatalf("write after delete: %v", err)
	}
}

// A node that finds itself excluded from its own topology (upstream's
// etcd-rejoin trap) gives its channels up at once: its owner lease is
// revoked, its own round reports the channel as not its own (the
// supervisor stops the actor), its writes are fenced, it takes nothing
// while excluded, and the other node takes the channel on its next round
// without waiting for a lease to run out.
func TestChannelExcludedNodeGivesChannelsUp(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	var ex exclusion
	a := newTestNode(t, testClient(t, ep), "a", func() []string { return []string{"a", "b"} })
	// b's topology loses a when a is excluded (it blocked a's id).
	b := newTestNode(t, testClient(t, ep), "b", ex.membersOfB)
	a.excluded = ex.excluded
	name := choiceOf(t, "a", []string{"a", "b"}, "tg", "tg1", "tg2", "tg3", "tg4", "tg5", "tg6", "tg7")
	ctx := context.Background()
	if err := a.PutChannel(ctx, name, []byte(`{}`), nil, "fp-"+name); err != nil {
		t.Fatal(err)
	}
	a.round()
	b.round()
	if !a.view(name).Mine || b.view(name).Mine {
		t.Fatalf("before: a %+v, b %+v; want a the owner", a.view(name), b.view(name))
	}
	op := []channel.StateOp{{Key: "cur/offset", Value: []byte("7")}}
	if err := a.Commit(ctx, name, op); err != nil {
		t.Fatal(err)
	}

	ex.exclude()
	a.round()
	if v := a.view(name); v.Mine {
		t.Fatalf("an excluded node still runs %s: %+v", name, v)
	}
	if err := a.Commit(ctx, name, op); !errors.Is(err, ErrFenced) {
		t.Fatalf("the excluded node's write: %v, want ErrFenced", err)
	}
	b.round()
	if v := b.view(name); !v.Mine || v.Node != "node-b" {
		t.Fatalf("b did not take %s from the excluded node at once: %+v", name, v)
	}
	// Still excluded, even past the takeover grace: a takes nothing.
	if err := a.PutChannel(ctx, name+"-x", []byte(`{}`), nil, "fp-x"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(takeoverGrace + 100*time.Millisecond)
	a.round()
	a.round()
	if v := a.view(name + "-x"); v.Mine {
		t.Fatalf("an excluded node took a channel: %+v", v)
	}
}
