//go:build cluster

package clustertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// usageView is the part of the usage reports this test reads, with the
// cluster's coverage.
type usageView struct {
	RequestCount int64   `json:"request_count"`
	TotalCostUSD float64 `json:"total_cost_usd"`
	ActiveAgents int     `json:"active_agents"`
	Total        int     `json:"total"`
	Items        []struct {
		AgentID   string `json:"agent_id"`
		CallCount int64  `json:"call_count"`
	} `json:"items"`
	Today struct {
		Requests int64   `json:"requests"`
		CostUSD  float64 `json:"cost_usd"`
	} `json:"today"`
	Models []struct {
		Model        string `json:"model"`
		RequestCount int64  `json:"request_count"`
		CallCount    int64  `json:"call_count"`
	} `json:"models"`
	Days []struct {
		Requests int64 `json:"requests"`
	} `json:"days"`
	Nodes        []string `json:"nodes"`
	Partial      *bool    `json:"partial"`
	MissingNodes []string `json:"missing_nodes"`
}

func usageOf(t *testing.T, url string, hdr ...string) usageView {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var v usageView
	if res.StatusCode != 200 || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	return v
}

// Usage is metered per node; the reports asked of any node add up every
// node's (1, 2 and 3 calls on three nodes: 6 everywhere), say which nodes
// answered, and a member that does not answer (stopped with SIGSTOP, its
// record still in etcd) is named in missing_nodes with partial: true
// instead of being silently left out. A member's own question
// (X-Fangd-Forwarded-By) is answered from its ledger alone.
func TestUsageReportsAddUpAcrossNodes(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := llmtest.NewOpenAI(llmKey)
	t.Cleanup(oai.Close)
	nodes := channelNodes(t, etcd, oai, "n1", "n2", "n3")
	var spent float64
	for i, n := range nodes {
		for range i + 1 {
			code, cost, body, err := chat(n, "helper", "count me")
			if err != nil || code != 200 {
				t.Fatalf("%s: chat: %d %s %v", n.name, code, body, err)
			}
			spent += cost
		}
	}
	all := []string{"n1", "n2", "n3"}
	covered := func(what string, v usageView) {
		t.Helper()
		got := append([]string{}, v.Nodes...)
		slices.Sort(got)
		if !slices.Equal(got, all) || v.Partial == nil || *v.Partial || len(v.MissingNodes) != 0 {
			t.Fatalf("%s: nodes %v partial %v missing %v, want all three", what, v.Nodes, v.Partial, v.MissingNodes)
		}
	}
	for _, n := range nodes {
		u := usageOf(t, n.url+"/api/usage?period=day")
		covered(n.name+" /api/usage", u)
		if u.RequestCount != 6 || u.ActiveAgents != 3 || math.Abs(u.TotalCostUSD-spent) > 1e-9 {
			t.Fatalf("%s: /api/usage %+v, want 6 requests by 3 agents costing %.9f", n.name, u, spent)
		}
		if u.Nodes[0] != n.name {
			t.Fatalf("%s: nodes %v start with another node", n.name, u.Nodes)
		}
		// LibreFang's per-agent items: the three nodes' agents, one page
		// of two and the next of one, costliest (most calls) first.
		p1 := usageOf(t, n.url+"/api/usage?limit=2")
		p2 := usageOf(t, n.url+"/api/usage?offset=2&limit=2")
		if p1.Total != 3 || len(p1.Items) != 2 || p1.Items[0].CallCount != 3 || p1.Items[1].CallCount != 2 ||
			len(p2.Items) != 1 || p2.Items[0].CallCount != 1 {
			t.Fatalf("%s: agent pages %+v / %+v", n.name, p1.Items, p2.Items)
		}
		s := usageOf(t, n.url+"/api/usage/summary")
		covered(n.name+" summary", s)
		if s.Today.Requests != 6 || math.Abs(s.Today.CostUSD-spent) > 1e-9 {
			t.Fatalf("%s: summary today %+v", n.name, s.Today)
		}
		m := usageOf(t, n.url+"/api/usage/by-model")
		covered(n.name+" by-model", m)
		if len(m.Models) != 1 || m.Models[0].RequestCount != 6 || m.Models[0].CallCount != 6 {
			t.Fatalf("%s: by-model %+v", n.name, m.Models)
		}
		d := usageOf(t, n.url+"/api/usage/daily?days=2")
		covered(n.name+" daily", d)
		if len(d.Days) != 2 || d.Days[1].Requests != 6 {
			t.Fatalf("%s: daily %+v", n.name, d.Days)
		}
		p := usageOf(t, n.url+"/api/usage/by-model/performance")
		covered(n.name+" performance", p)
		if len(p.Models) != 1 || p.Models[0].CallCount != 6 {
			t.Fatalf("%s: performance %+v", n.name, p.Models)
		}
	}
	// A member's own question: its ledger only, no coverage.
	if u := usageOf(t, nodes[1].url+"/api/usage?period=day", "X-Fangd-Forwarded-By", "n1"); u.RequestCount != 2 || u.Nodes != nil || u.Partial != nil {
		t.Fatalf("n2 answering a member: %+v", u)
	}

	// n3 stops answering (its record stays in etcd for a few seconds):
	// n1's report is partial and names it.
	victim := nodes[2]
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.cmd.Process.Signal(syscall.SIGCONT) })
	// SIGSTOP takes effect asynchronously: wait until the process is
	// stopped ("T" in /proc/<pid>/stat) before asking.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", victim.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n3 not stopped: %s", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	u := usageOf(t, nodes[0].url+"/api/usage?period=day")
	if u.Partial == nil || !*u.Partial || !slices.Equal(u.MissingNodes, []string{"n3"}) || u.RequestCount != 3 {
		t.Fatalf("with n3 stopped: %+v, want partial, n3 missing, 3 requests", u)
	}
}
