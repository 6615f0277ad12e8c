package cluster

// The agent directory against a real embedded etcd, under -race (no
// protoactor cluster runs here).

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"
)

func TestAgentDirRegisterLookupRemove(t *testing.T) {
	cli := testClient(t, testEtcd(t))
	ctx := context.Background()
	a := newAgentDir(cli, "t", "node-a", zerolog.Nop())
	b := newAgentDir(cli, "t", "node-b", zerolog.Nop())

	if err := a.Register(ctx, "id-1", "coder"); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(ctx, "id-1", "coder"); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	// Another node's create with the same name is refused, nothing written.
	var taken *AgentNameTaken
	if err := b.Register(ctx, "id-2", "coder"); !errors.As(err, &taken) || taken.Node != "node-a" || taken.ID != "id-1" {
		t.Fatalf("clash: %v", err)
	}
	if _, ok, _ := b.Lookup(ctx, "id-2", ""); ok {
		t.Fatal("the refused agent was recorded")
	}
	for _, q := range [][2]string{{"id-1", ""}, {"", "coder"}} {
		r, ok, err := b.Lookup(ctx, q[0], q[1])
		if err != nil || !ok || r != (AgentRecord{ID: "id-1", Name: "coder", Node: "node-a"}) {
			t.Fatalf("lookup %v: %+v %v %v", q, r, ok, err)
		}
	}
	if err := b.Register(ctx, "id-3", "writer"); err != nil {
		t.Fatal(err)
	}
	all, err := a.List(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "coder" || all[1].Node != "node-b" {
		t.Fatalf("list: %+v %v", all, err)
	}
	if err := a.Remove(ctx, "id-1", "coder"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Lookup(ctx, "", "coder"); ok {
		t.Fatal("removed agent still found by name")
	}
	// The name is free again.
	if err := b.Register(ctx, "id-2", "coder"); err != nil {
		t.Fatal(err)
	}
	// Removing a stale id must not free a name another agent now holds.
	if err := a.Remove(ctx, "id-1", "coder"); err != nil {
		t.Fatal(err)
	}
	if r, ok, _ := a.Lookup(ctx, "", "coder"); !ok || r.ID != "id-2" {
		t.Fatalf("name lost: %+v %v", r, ok)
	}
}

// At start a node re-registers what it hosts and drops its stale records;
// other nodes' records are left alone, and a name clash is reported.
func TestAgentDirSync(t *testing.T) {
	cli := testClient(t, testEtcd(t))
	ctx := context.Background()
	a := newAgentDir(cli, "t", "node-a", zerolog.Nop())
	b := newAgentDir(cli, "t", "node-b", zerolog.Nop())
	for _, r := range [][2]string{{"a1", "one"}, {"a2", "gone"}} {
		if err := a.Register(ctx, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Register(ctx, "b1", "theirs"); err != nil {
		t.Fatal(err)
	}
	conflicts, err := a.Sync(ctx, map[string]string{"a1": "one", "a3": "new", "a4": "theirs"})
	if err != nil || len(conflicts) != 1 || conflicts[0] != "theirs" {
		t.Fatalf("sync: %v %v", conflicts, err)
	}
	all, _ := a.List(ctx)
	got := map[string]string{}
	for _, r := range all {
		got[r.ID] = r.Node + "/" + r.Name
	}
	want := map[string]string{"a1": "node-a/one", "a3": "node-a/new", "b1": "node-b/theirs"}
	if len(got) != len(want) {
		t.Fatalf("after sync: %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("after sync: %v", got)
		}
	}
	if _, ok, _ := a.Lookup(ctx, "", "gone"); ok {
		t.Fatal("stale name key kept")
	}
}
