package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store/storetest"
)

// fakeChain is an audit chain in memory: entry i's hash is hashes[i-1].
type fakeChain struct {
	mu     sync.Mutex
	name   string
	hashes []string
	events []fakeEntry
}

type fakeEntry struct{ eventType, outcome, details string }

func (c *fakeChain) Tip(context.Context) (uint64, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hashes) == 0 {
		return 0, "", nil
	}
	return uint64(len(c.hashes)), c.hashes[len(c.hashes)-1], nil
}

func (c *fakeChain) HashAt(_ context.Context, seq uint64) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq == 0 || seq > uint64(len(c.hashes)) {
		return "", false, nil
	}
	return c.hashes[seq-1], true, nil
}

func (c *fakeChain) Append(_ context.Context, eventType, outcome, details string) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hashes = append(c.hashes, fmt.Sprintf("%s-%d-%s", c.name, len(c.hashes)+1, eventType))
	c.events = append(c.events, fakeEntry{eventType, outcome, details})
	return uint64(len(c.hashes)), nil
}

// of is the entries of type eventType appended through Append.
func (c *fakeChain) of(eventType string) []fakeEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []fakeEntry
	for _, e := range c.events {
		if e.eventType == eventType {
			out = append(out, e)
		}
	}
	return out
}

func recordedTip(t *testing.T, cli *clientv3.Client, node string) AuditTip {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/fangd/audit/t/tip/"+node)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("tip of %s: %v %v", node, resp, err)
	}
	var tip AuditTip
	if err := json.Unmarshal(resp.Kvs[0].Value, &tip); err != nil {
		t.Fatal(err)
	}
	return tip
}

// checkpointTips decodes a cluster_checkpoint entry's tips.
func checkpointTips(t *testing.T, e fakeEntry) map[string]AuditTip {
	t.Helper()
	var d struct{ Tips []AuditTip }
	if err := json.Unmarshal([]byte(e.details), &d); err != nil {
		t.Fatal(err)
	}
	out := map[string]AuditTip{}
	for _, tip := range d.Tips {
		out[tip.Node] = tip
	}
	return out
}

func TestAuditCheckpointTipsWrittenOthersRecordedOnlyOnChange(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	ctx := context.Background()
	ca := &fakeChain{name: "a"}
	cb := &fakeChain{name: "b"}
	ca.Append(ctx, "api_request", "ok", "")
	ca.Append(ctx, "api_request", "ok", "")
	cb.Append(ctx, "api_request", "ok", "")
	a := newAuditCheckpoints(testClient(t, ep), "t", "a", ca, zerolog.Nop())
	b := newAuditCheckpoints(testClient(t, ep), "t", "b", cb, zerolog.Nop())

	// a alone: its tip is written, nobody else's to record.
	a.round(ctx)
	if tip := recordedTip(t, a.cli, "a"); tip.Seq != 2 || tip.Hash != "a-2-api_request" || tip.Node != "a" {
		t.Fatalf("a's tip in etcd: %+v", tip)
	}
	if n := len(ca.of(EventCheckpoint)); n != 0 {
		t.Fatalf("a recorded %d checkpoints with no other node", n)
	}
	// b records a's tip in one entry of its own chain.
	b.round(ctx)
	cps := cb.of(EventCheckpoint)
	if len(cps) != 1 {
		t.Fatalf("b's checkpoints: %+v", cps)
	}
	if got := checkpointTips(t, cps[0]); len(got) != 1 || got["a"].Seq != 2 || got["a"].Hash != "a-2-api_request" {
		t.Fatalf("b's checkpoint: %s", cps[0].details)
	}
	// a records b's tip (the one written before b's checkpoint).
	a.round(ctx)
	if cps := ca.of(EventCheckpoint); len(cps) != 1 || checkpointTips(t, cps[0])["b"].Seq != 1 {
		t.Fatalf("a's checkpoints: %+v", cps)
	}
	// Idle: each node's tip moves only by its own checkpoint entry,
	// which the other does not answer with another one.
	for range 3 {
		b.round(ctx)
		a.round(ctx)
	}
	if na, nb := len(ca.of(EventCheckpoint)), len(cb.of(EventCheckpoint)); na != 1 || nb != 1 {
		t.Fatalf("idle nodes kept checkpointing: a %d, b %d", na, nb)
	}
	if tip := recordedTip(t, b.cli, "b"); tip.Seq != 2 || !tip.Checkpoint {
		t.Fatalf("b's tip after its checkpoint: %+v", tip)
	}
	// Real activity on a: written, and b records it once.
	ca.Append(ctx, "agent_spawned", "ok", "")
	a.round(ctx)
	b.round(ctx)
	b.round(ctx)
	cps = cb.of(EventCheckpoint)
	if len(cps) != 2 {
		t.Fatalf("b's checkpoints after a's activity: %d", len(cps))
	}
	if got := checkpointTips(t, cps[1])["a"]; got.Seq != 4 || got.Hash != "a-4-agent_spawned" {
		t.Fatalf("b recorded a's tip as %+v", got)
	}
	// A start with the chain as written: it matches.
	a2 := newAuditCheckpoints(testClient(t, ep), "t", "a", ca, zerolog.Nop())
	a2.startCheck(ctx)
	if st := a2.State(); !st.OK || st.Status != "match" || st.Recorded.Seq != 4 {
		t.Fatalf("a's start check: %+v", st)
	}
}

func TestAuditCheckpointMismatchOnRolledBackChain(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	ctx := context.Background()
	chain := &fakeChain{name: "a"}
	first := newAuditCheckpoints(testClient(t, ep), "t", "a", chain, zerolog.Nop())
	first.startCheck(ctx)
	if st := first.State(); !st.OK || st.Status != "first" {
		t.Fatalf("first start: %+v", st)
	}
	for range 5 {
		chain.Append(ctx, "api_request", "ok", "")
	}
	first.round(ctx)

	cases := []struct {
		name   string
		hashes []string
		ok     bool
		status string
	}{
		{"rolled back", []string{"a-1-api_request", "a-2-api_request", "a-3-api_request"}, false, "mismatch"},
		{"rewritten", []string{"a-1-api_request", "a-2-api_request", "a-3-api_request", "a-4-api_request", "forged"}, false, "mismatch"},
		{"grown", []string{"a-1-api_request", "a-2-api_request", "a-3-api_request", "a-4-api_request", "a-5-api_request", "a-6-x"}, true, "match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeChain{name: "a", hashes: append([]string{}, tc.hashes...)}
			a := newAuditCheckpoints(testClient(t, ep), "t", "a", c, zerolog.Nop())
			a.startCheck(ctx)
			st := a.State()
			if st.OK != tc.ok || st.Status != tc.status || st.Recorded == nil || st.Recorded.Seq != 5 || st.Recorded.Hash != "a-5-api_request" {
				t.Fatalf("start check: %+v", st)
			}
			mm := c.of(EventCheckpointMismatch)
			if tc.ok {
				if len(mm) != 0 {
					t.Fatalf("a matching chain audited a mismatch: %+v", mm)
				}
				return
			}
			if len(mm) != 1 || mm[0].outcome != "error" || !strings.Contains(mm[0].details, "recorded seq 5 hash a-5-api_request") {
				t.Fatalf("mismatch entries: %+v", mm)
			}
		})
	}
}

// TestAuditLogChainReadsTheRealLog checks the adapter over the daemon's
// audit log: the tip, and the hash at a seq read back through a walk.
func TestAuditLogChainReadsTheRealLog(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	db := storetest.Open(t, home)
	t.Cleanup(func() { db.Close() })
	k := kernel.New(zerolog.Nop())
	t.Cleanup(func() { kerneltest.Stop(k) })
	al, err := audit.Start(k, db, audit.Options{AnchorPath: audit.AnchorPath(home)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := LogChain(al)
	var hashes []string
	for i := range 4 {
		e, err := al.Append(ctx, audit.Event{EventType: "api_request", Details: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, e.Hash)
	}
	seq, tip, err := c.Tip(ctx)
	if err != nil || seq != 4 || tip != hashes[3] {
		t.Fatalf("tip %d %s %v, want 4 %s", seq, tip, err, hashes[3])
	}
	for i, want := range hashes {
		if h, ok, err := c.HashAt(ctx, uint64(i+1)); err != nil || !ok || h != want {
			t.Fatalf("hash at %d: %s %v %v, want %s", i+1, h, ok, err, want)
		}
	}
	if _, ok, err := c.HashAt(ctx, 5); err != nil || ok {
		t.Fatalf("hash past the tip: stored %v %v", ok, err)
	}
	if seq, err := c.Append(ctx, EventCheckpoint, "ok", `{"tips":[]}`); err != nil || seq != 5 {
		t.Fatalf("append: %d %v", seq, err)
	}
}
