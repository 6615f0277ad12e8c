//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/actors/kernel"
)

// A node started on a chain shorter than the tip etcd recorded for it
// shows the mismatch in its own member entry of GET /api/cluster, and
// its current tip replaces the recorded one.
func TestAuditCheckpointMismatchInOwnMemberEntry(t *testing.T) {
	etcd, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	cli := testClient(t, etcd.Endpoint)
	b, _ := json.Marshal(AuditTip{Node: "a", Seq: 9, Hash: "a-9"})
	if _, err := cli.Put(context.Background(), "/fangd/audit/t/tip/a", string(b)); err != nil {
		t.Fatal(err)
	}
	k := kernel.New(zerolog.Nop())
	n, err := Start(k, Options{Endpoints: []string{etcd.Endpoint}, Name: "t", NodeName: "a", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	chain := &fakeChain{name: "a", hashes: []string{"a-1", "a-2"}}
	n.StartAuditCheckpoints(chain)
	ms, err := n.Members(context.Background())
	if err != nil || len(ms) != 1 || !ms[0].Self {
		t.Fatalf("%+v %v", ms, err)
	}
	st := ms[0].AuditCheckpoint
	if st == nil || st.OK || st.Status != "mismatch" || st.Recorded.Seq != 9 || st.Local.Seq != 2 {
		t.Fatalf("own audit_checkpoint: %+v", st)
	}
	if len(chain.of(EventCheckpointMismatch)) != 1 {
		t.Fatalf("mismatch not audited: %+v", chain.events)
	}
	// The tip written after the check: the chain with its mismatch entry.
	if tip := recordedTip(t, cli, "a"); tip.Seq != 3 || st.LastWritten == nil || st.LastWritten.Seq != 3 {
		t.Fatalf("tip after the check: %+v, last written %+v", tip, st.LastWritten)
	}
}
