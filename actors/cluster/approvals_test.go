package cluster

// Cluster-wide approvals: fangd's real approvals subsystem on two "nodes"
// (each its own kernel, store and audit chain) sharing a real embedded
// etcd, under -race.

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store/storetest"
)

type approvalNode struct {
	once sync.Once
	k    *kernel.Kernel
	al   *audit.Log
	a    *approval.Approvals
	cl   *Approvals
}

// newApprovalNode starts node name's approvals on cli; its watch and
// sweep run unless passive (a node that only writes, as a dead one did).
func newApprovalNode(t *testing.T, cli *clientv3.Client, name string, timeoutSecs int, passive bool) *approvalNode {
	t.Helper()
	return newApprovalNodeWith(t, cli, name, timeoutSecs, passive, nil)
}

// newApprovalNodeWith is newApprovalNode with set changing the options
// (the policy, the clock) first.
func newApprovalNodeWith(t *testing.T, cli *clientv3.Client, name string, timeoutSecs int, passive bool, set func(*approval.Options)) *approvalNode {
	t.Helper()
	home := t.TempDir()
	db, vault := storetest.OpenWithVault(t, home)
	n := &approvalNode{k: kernel.New(zerolog.Nop())}
	t.Cleanup(func() { db.Close() })
	t.Cleanup(n.stop)
	var err error
	if n.al, err = audit.Start(n.k, db, audit.Options{AnchorPath: audit.AnchorPath(home)}); err != nil {
		t.Fatal(err)
	}
	pol := approval.DefaultPolicy()
	pol.TimeoutSecs = timeoutSecs
	opts := approval.Options{Policy: pol}
	if set != nil {
		set(&opts)
	}
	if n.a, err = approval.Start(n.k, db, vault, n.al, opts); err != nil {
		t.Fatal(err)
	}
	n.cl = newApprovals(cli, "t", name, zerolog.Nop(), n.a.ApplyCluster)
	n.a.UseCluster(n.cl)
	if !passive {
		go n.cl.loop()
		t.Cleanup(n.cl.stop)
	}
	return n
}

// stop shuts the node's actors down (its kill, as far as approvals go:
// the request stays pending in its store and in etcd).
func (n *approvalNode) stop() { n.once.Do(func() { kerneltest.Stop(n.k) }) }

// gate asks for an approval the way an agent's tool call does.
func (n *approvalNode) gate(id string) <-chan any {
	return kerneltest.Await(n.k.Root.RequestFuture(n.a.PID(), &approval.Gate{Req: approval.Request{ID: id, AgentID: "a1", AgentName: "ops",
		Action: "shell_exec", Description: "run ls", Payload: json.RawMessage(`{"cmd":"ls"}`), RequestedBy: "agent:a1"}}, time.Minute))
}

func (n *approvalNode) auditTypes(t *testing.T) []string {
	t.Helper()
	r, err := n.al.Recent(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, raw := range r.Entries {
		var e audit.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.EventType)
	}
	return out
}

func pendingOn(t *testing.T, n *approvalNode, id string) *approval.Approval {
	t.Helper()
	p, err := n.a.List(context.Background(), approval.StatusPending, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Approvals {
		if a.ID == id {
			return a
		}
	}
	return nil
}

func api() approval.Decider { return approval.Decider{Identity: "api_key", Via: approval.ViaAPI} }

// What a person approves is the same through any node: a request raised
// on node A shows on node B (listed and read) the description, payload,
// session and summary A shows; an oversized description or payload is cut
// to what etcd keeps, valid UTF-8 and valid JSON, and says so.
func TestApprovalDescriptionAndPayloadShownOnAnotherNode(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a := newApprovalNode(t, testClient(t, ep), "node-a", 300, false)
	b := newApprovalNode(t, testClient(t, ep), "node-b", 300, false)
	ctx := context.Background()
	small, err := a.a.Create(ctx, approval.Request{AgentID: "a1", AgentName: "ops", Action: "shell_exec",
		Description: "Delete the staging bucket's old logs", Payload: json.RawMessage(`{"cmd":"rm -rf /srv/logs/2025"}`),
		SessionID: uuid.NewString(), RequestedBy: "api_key"})
	if err != nil {
		t.Fatal(err)
	}
	big, err := a.a.Create(ctx, approval.Request{AgentID: "a1", AgentName: "ops", Action: "shell_exec",
		Description: strings.Repeat("é", approval.MaxDescription), // 8,000 bytes
		Payload:     json.RawMessage(`{"script":"` + strings.Repeat("x\\n", 5000) + `"}`), RequestedBy: "api_key"})
	if err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "node B to list A's requests", func() bool {
		return pendingOn(t, b, small.ID) != nil && pendingOn(t, b, big.ID) != nil
	})
	mine, err := a.a.Get(ctx, small.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []*approval.Approval{pendingOn(t, b, small.ID), mustGet(t, b, small.ID)} {
		if got.Description != mine.Description || string(got.Payload) != string(mine.Payload) || got.SessionID != mine.SessionID ||
			got.ActionSummary != mine.ActionSummary || got.TimeoutSecs != mine.TimeoutSecs || got.Truncated || got.Node != "node-a" {
			t.Fatalf("B shows %+v\nA shows %+v", got, mine)
		}
	}
	for _, got := range []*approval.Approval{pendingOn(t, b, big.ID), mustGet(t, b, big.ID)} {
		var text string
		if !got.Truncated || len(got.Payload) > 8<<10 || json.Unmarshal(got.Payload, &text) != nil || !strings.HasPrefix(text, `{"script":"x\n`) {
			t.Fatalf("B's cut payload (truncated %v): %.80s…", got.Truncated, got.Payload)
		}
		if len(got.Description) > 4<<10 || len(got.Description) < 4<<10-1 || !utf8.ValidString(got.Description) {
			t.Fatalf("B's cut description: %d bytes, valid UTF-8 %v", len(got.Description), utf8.ValidString(got.Description))
		}
	}
	if mine, _ := a.a.Get(ctx, big.ID); mine.Truncated || len(mine.Description) != 8000 {
		t.Fatalf("the origin shows its own request cut: %d bytes, truncated %v", len(mine.Description), mine.Truncated)
	}
}

func mustGet(t *testing.T, n *approvalNode, id string) *approval.Approval {
	t.Helper()
	got, err := n.a.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A tool call waiting on node A is listed by node B, approved through B
// (audited on B), and A's waiting call resumes with the decision.
func TestApprovalDecidedOnAnotherNodeResumesTheWaiter(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a := newApprovalNode(t, testClient(t, ep), "node-a", 300, false)
	b := newApprovalNode(t, testClient(t, ep), "node-b", 300, false)
	id := uuid.NewString()
	wait := a.gate(id)
	var seen *approval.Approval
	kerneltest.WaitFor(t, "node B to list A's request", func() bool { seen = pendingOn(t, b, id); return seen != nil })
	if seen.Node != "node-a" || seen.ToolName != "shell_exec" || seen.AgentName != "ops" || seen.RiskLevel == "" {
		t.Fatalf("B lists %+v", seen)
	}
	if got, err := b.a.Get(context.Background(), id); err != nil || got.Status != approval.StatusPending {
		t.Fatalf("B gets %+v, %v", got, err)
	}
	// A long poll on B (GET /api/approvals/{id}?wait=) follows etcd.
	polled := make(chan *approval.Approval, 1)
	go func() {
		rec, _ := b.a.Wait(context.Background(), id, 20*time.Second)
		polled <- rec
	}()
	got, err := b.a.Decide(context.Background(), approval.Decide{ID: id, Approve: true, By: api()})
	if err != nil || got.Status != approval.StatusApproved || got.DecidedBy != "api_key" {
		t.Fatalf("B decides %+v, %v", got, err)
	}
	select {
	case v := <-wait:
		rec, ok := v.(*approval.Approval)
		if !ok || rec.Status != approval.StatusApproved {
			t.Fatalf("A's waiter got %v", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's waiting call did not resume")
	}
	if rec := <-polled; rec == nil || rec.Status != approval.StatusApproved {
		t.Fatalf("B's long poll got %+v", rec)
	}
	// Final on both nodes: the same 409 the single node gives.
	for _, n := range []*approvalNode{a, b} {
		_, err := n.a.Decide(context.Background(), approval.Decide{ID: id, Approve: false, By: api()})
		if e := kernel.AsError(err); e == nil || e.Code != "approval_already_decided" {
			t.Fatalf("re-deciding: %v", err)
		}
	}
	if types := b.auditTypes(t); !contains(types, "approval_approved") {
		t.Fatalf("B's audit %v", types)
	}
	kerneltest.WaitFor(t, "A's audit of the applied decision", func() bool { return contains(a.auditTypes(t), "approval_approved") })
}

// Two nodes deciding at once: exactly one wins, the other gets 409, and
// the waiter hears the winner's decision.
func TestApprovalTwoDecidersOneWins(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	a := newApprovalNode(t, testClient(t, ep), "node-a", 300, false)
	b := newApprovalNode(t, testClient(t, ep), "node-b", 300, false)
	for round := 0; round < 5; round++ {
		id := uuid.NewString()
		wait := a.gate(id)
		kerneltest.WaitFor(t, "node B to list A's request", func() bool { return pendingOn(t, b, id) != nil })
		var wg sync.WaitGroup
		res := make([]*approval.Approval, 2)
		errs := make([]error, 2)
		for i, n := range []*approvalNode{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A approves, B rejects: the waiter must hear the winner.
				res[i], errs[i] = n.a.Decide(context.Background(), approval.Decide{ID: id, Approve: i == 0, By: api()})
			}()
		}
		wg.Wait()
		won := -1
		for i := range errs {
			if errs[i] == nil {
				if won >= 0 {
					t.Fatalf("round %d: both deciders won", round)
				}
				won = i
			} else if e := kernel.AsError(errs[i]); e == nil || e.Code != "approval_already_decided" {
				t.Fatalf("round %d: the loser got %v", round, errs[i])
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		var rec *approval.Approval
		select {
		case v := <-wait:
			rec, _ = v.(*approval.Approval)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the waiter did not resume", round)
		}
		if rec == nil || rec.Status != res[won].Status {
			t.Fatalf("round %d: winner %s, waiter got %+v", round, res[won].Status, rec)
		}
	}
}

// The origin dies with its request pending: another node's sweep marks it
// expired at its deadline, lists it expired, and refuses a late decision
// with the single node's 410.
func TestApprovalSweepExpiresWithoutTheOrigin(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA := testClient(t, ep)
	a := newApprovalNode(t, cliA, "node-a", 2, true) // no watch, no sweep: "dead"
	b := newApprovalNode(t, testClient(t, ep), "node-b", 300, false)
	id := uuid.NewString()
	_ = a.gate(id)
	kerneltest.WaitFor(t, "node B to list A's request", func() bool { return pendingOn(t, b, id) != nil })
	a.stop() // the origin is gone: its own timer never fires
	kerneltest.WaitFor(t, "B's sweep to expire it", func() bool {
		got, err := b.a.Get(context.Background(), id)
		return err == nil && got.Status == approval.StatusExpired
	})
	p, err := b.a.List(context.Background(), approval.StatusExpired, 0, 50)
	if err != nil || len(p.Approvals) != 1 || p.Approvals[0].ID != id {
		t.Fatalf("B's expired list %+v, %v", p, err)
	}
	_, err = b.a.Decide(context.Background(), approval.Decide{ID: id, Approve: true, By: api()})
	if e := kernel.AsError(err); e == nil || e.Code != "approval_expired" {
		t.Fatalf("a late decision: %v", err)
	}
}

// A decision that reaches etcd after the deadline, before any sweep, is
// refused and turns the record expired (the CAS checks the deadline).
func TestApprovalDecideAfterDeadlineExpires(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cl := newApprovals(testClient(t, ep), "t", "node-b", zerolog.Nop(), func(approval.ClusterRecord) {})
	now := time.Now()
	rec := approval.ClusterRecord{ID: "x1", Node: "node-a", Status: approval.StatusPending, CreatedAt: now.Add(-time.Minute), Deadline: now.Add(-time.Second)}
	if err := cl.Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	cur, won, ok, err := cl.Decide(context.Background(), "x1", func(c approval.ClusterRecord) approval.ClusterRecord {
		c.Status = approval.StatusApproved
		return c
	})
	if err != nil || !ok || won || cur.Status != approval.StatusExpired {
		t.Fatalf("late decide: %+v won=%v ok=%v %v", cur, won, ok, err)
	}
	// Put never moves a record back to pending.
	if err := cl.Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := cl.Get(context.Background(), "x1"); got.Status != approval.StatusExpired {
		t.Fatalf("after a second put: %+v", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// With etcd away from the origin, a decision through its API is refused
// (503) and changes nothing, but its own deadline still holds: the waiter
// hears the expiry.
func TestApprovalOriginExpiresWithEtcdAway(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA := testClient(t, ep)
	a := newApprovalNode(t, cliA, "node-a", 3, false)
	id := uuid.NewString()
	wait := a.gate(id)
	kerneltest.WaitFor(t, "the record in etcd", func() bool {
		_, ok, _ := a.cl.Get(context.Background(), id)
		return ok
	})
	cliA.Close() // every etcd call of node a fails from now on
	_, err := a.a.Decide(context.Background(), approval.Decide{ID: id, Approve: true, By: api()})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindUnavailable {
		t.Fatalf("a decision with etcd away: %v", err)
	}
	select {
	case v := <-wait:
		rec, ok := v.(*approval.Approval)
		if !ok || rec.Status != approval.StatusExpired {
			t.Fatalf("the waiter got %v", v)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the deadline did not hold with etcd away")
	}
}
