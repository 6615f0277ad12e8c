package approval

import (
	"strings"
	"testing"
	"time"
)

// The other nodes' records merge into a page of this node's: pending
// oldest first, then decided newest first, the total counting both, and
// the page cut after the merge.
func TestMergeClusterOrdersAndPages(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(m int) *time.Time { x := t0.Add(time.Duration(m) * time.Minute); return &x }
	local := &Page{Total: 3, Approvals: []*Approval{
		{ID: "l1", Status: StatusPending, RequestedAt: t0.Add(2 * time.Minute)},
		{ID: "l2", Status: StatusApproved, RequestedAt: t0, DecidedAt: at(5)},
		{ID: "l3", Status: StatusRejected, RequestedAt: t0, DecidedAt: at(1)},
	}}
	others := []ClusterRecord{
		{ID: "r1", Node: "b", Status: StatusPending, CreatedAt: t0.Add(time.Minute)},
		{ID: "r2", Node: "b", Status: StatusExpired, CreatedAt: t0, DecidedAt: at(3)},
		{ID: "r3", Node: "c", Status: StatusPending, CreatedAt: t0.Add(3 * time.Minute)},
	}
	ids := func(p *Page) string {
		var s []string
		for _, a := range p.Approvals {
			s = append(s, a.ID)
		}
		return strings.Join(s, ",")
	}
	p := mergeCluster(local, others, "", 0, 10)
	if ids(p) != "r1,l1,r3,l2,r2,l3" || p.Total != 6 {
		t.Fatalf("merged %s total %d", ids(p), p.Total)
	}
	if p.Approvals[0].Node != "b" || p.Approvals[1].Node != "" {
		t.Fatalf("origin not shown: %+v", p.Approvals[:2])
	}
	if p = mergeCluster(local, others, "", 2, 2); ids(p) != "r3,l2" || p.Offset != 2 || p.Limit != 2 {
		t.Fatalf("page 2: %s", ids(p))
	}
	if p = mergeCluster(&Page{Total: 1, Approvals: local.Approvals[:1]}, others, StatusPending, 0, 10); ids(p) != "r1,l1,r3" || p.Total != 3 {
		t.Fatalf("pending only: %s total %d", ids(p), p.Total)
	}
	if p = mergeCluster(local, others, "", 9, 10); len(p.Approvals) != 0 {
		t.Fatalf("past the end: %s", ids(p))
	}
}
