package cluster

// The agent directory against a real embedded etcd, under -race (no
// protoactor cluster runs here).

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

func TestAgentDirRegisterLookupRenameRemove(t *testing.T) {
	t.Parallel()
	cli := testClient(t, testEtcd(t))
	ctx := context.Background()
	a := newAgentDir(cli, "t", "node-a", zerolog.Nop())
	b := newAgentDir(cli, "t", "node-b", zerolog.Nop())
	other := newAgentDir(cli, "other-cluster", "node-a", zerolog.Nop())

	if err := a.Register(ctx, "id-1", "coder"); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(ctx, "id-1", "coder"); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	// The same name on another node is another agent.
	if err := b.Register(ctx, "id-2", "coder"); err != nil {
		t.Fatal(err)
	}
	got, err := b.Lookup(ctx, "id-1", "")
	if err != nil || !reflect.DeepEqual(got, []AgentRecord{{ID: "id-1", Name: "coder", Node: "node-a"}}) {
		t.Fatalf("by id: %+v %v", got, err)
	}
	got, err = a.Lookup(ctx, "", "coder")
	want := []AgentRecord{{"id-1", "coder", "node-a"}, {"id-2", "coder", "node-b"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("by name: %+v %v", got, err)
	}
	if got, _ := a.Lookup(ctx, "", "cod"); len(got) != 0 {
		t.Fatalf("a name prefix matched: %+v", got)
	}
	if all, _ := other.List(ctx); len(all) != 0 {
		t.Fatalf("another cluster sees %+v", all)
	}

	if err := b.Rename(ctx, "id-2", "coder", "writer"); err != nil {
		t.Fatal(err)
	}
	all, err := a.List(ctx)
	want = []AgentRecord{{"id-1", "coder", "node-a"}, {"id-2", "writer", "node-b"}}
	if err != nil || !reflect.DeepEqual(all, want) {
		t.Fatalf("list after rename: %+v %v", all, err)
	}
	if got, _ := a.Lookup(ctx, "", "coder"); len(got) != 1 || got[0].ID != "id-1" {
		t.Fatalf("old name still resolves to the renamed agent: %+v", got)
	}

	if err := a.Remove(ctx, "id-1", "coder"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Lookup(ctx, "", "coder"); len(got) != 0 {
		t.Fatalf("removed agent found by name: %+v", got)
	}
	if got, _ := b.Lookup(ctx, "id-1", ""); len(got) != 0 {
		t.Fatalf("removed agent found by id: %+v", got)
	}
}

// At start a node re-registers what it hosts and drops its stale entries;
// other nodes' entries are left alone.
func TestAgentDirSync(t *testing.T) {
	t.Parallel()
	cli := testClient(t, testEtcd(t))
	ctx := context.Background()
	a := newAgentDir(cli, "t", "node-a", zerolog.Nop())
	b := newAgentDir(cli, "t", "node-b", zerolog.Nop())
	for _, r := range [][2]string{{"a1", "one"}, {"a2", "gone"}, {"a5", "renamed-offline"}} {
		if err := a.Register(ctx, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Register(ctx, "b1", "theirs"); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx, map[string]string{"a1": "one", "a3": "new", "a5": "now"}); err != nil {
		t.Fatal(err)
	}
	all, _ := a.List(ctx)
	want := []AgentRecord{{"a3", "new", "node-a"}, {"a5", "now", "node-a"}, {"a1", "one", "node-a"}, {"b1", "theirs", "node-b"}}
	if !reflect.DeepEqual(all, want) {
		t.Fatalf("after sync: %+v", all)
	}
	for _, n := range []string{"gone", "renamed-offline"} {
		if got, _ := a.Lookup(ctx, "", n); len(got) != 0 {
			t.Fatalf("stale name %s kept: %+v", n, got)
		}
	}
}

// A node answers lookups from its watched copy of the directory: a view
// whose own etcd client is closed still finds every agent the copy holds
// (names with a slash included, and no name matched by its prefix), and
// a renamed or removed agent leaves the copy.
func TestAgentDirAnswersFromTheWatchedCopy(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cli := testClient(t, ep)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := newAgentCache("t")
	go cache.run(ctx, cli)
	closed := testClient(t, ep)
	closed.Close()
	c := newAgentDir(closed, "t", "node-c", zerolog.Nop())
	c.cache = cache
	a := newAgentDir(cli, "t", "node-a", zerolog.Nop())
	for id, name := range map[string]string{"id-1": "coder", "id-2": "co/der", "id-3": "co"} {
		if err := a.Register(context.Background(), id, name); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(id, name string) []AgentRecord {
		// A closed client's Get retries for seconds before it fails.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		got, err := c.Lookup(ctx, id, name)
		if err != nil {
			return nil // not in the copy: the closed client failed
		}
		return got
	}
	kerneltest.WaitFor(t, "the copy holds the agents", func() bool {
		return len(lookup("id-1", "")) == 1 && len(lookup("", "co")) == 1 && len(lookup("", "co/der")) == 1
	})
	if got := lookup("", "co"); got[0].ID != "id-3" {
		t.Fatalf("name co from the copy: %+v", got)
	}
	if got := lookup("", "co/der"); !reflect.DeepEqual(got, []AgentRecord{{"id-2", "co/der", "node-a"}}) {
		t.Fatalf("a name with a slash from the copy: %+v", got)
	}
	if err := a.Rename(context.Background(), "id-1", "coder", "writer"); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(context.Background(), "id-3", "co"); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "the copy follows the rename and the removal", func() bool {
		w := lookup("", "writer")
		return lookup("", "coder") == nil && len(w) == 1 && w[0].ID == "id-1" && lookup("id-3", "") == nil
	})
}
