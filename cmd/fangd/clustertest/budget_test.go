//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// budgetView is the part of GET /api/budget this test reads.
type budgetView struct {
	DailyLimitUSD float64 `json:"daily_limit_usd"`
	TodaySpentUSD float64 `json:"today_spent_usd"`
	ReservedUSD   float64 `json:"reserved_usd"`
	Reservations  int     `json:"reservations"`
	Status        string  `json:"status"`
}

func budgetOf(t *testing.T, n *node) budgetView {
	t.Helper()
	var b budgetView
	if code := getJSON(t, n.url+"/api/budget", &b); code != 200 {
		t.Fatalf("%s: GET /api/budget: %d", n.name, code)
	}
	return b
}

// setDailyLimit sets the global daily limit through one node; the
// cluster shares it (etcd) and every node shows it within a few seconds.
func setDailyLimit(t *testing.T, through *node, all []*node, usd float64) {
	t.Helper()
	if code, b := do(t, "PUT", through.url+"/api/budget", fmt.Sprintf(`{"daily_limit_usd":%v}`, usd)); code != 200 {
		t.Fatalf("%s: PUT /api/budget: %d %s", through.name, code, b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range all {
		for budgetOf(t, n).DailyLimitUSD != usd {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not show the daily limit %v set through %s", n.name, usd, through.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// chat is one turn through n: the status, the turn's cost (on 200) and
// the body. Safe in goroutines (no t).
func chat(n *node, agent, msg string) (int, float64, string, error) {
	code, b, err := tryRequest("POST", n.url+"/api/agents/"+agent+"/message", fmt.Sprintf(`{"message":%q}`, msg), nil)
	if err != nil {
		return 0, 0, "", err
	}
	var v struct {
		CostUSD float64 `json:"cost_usd"`
	}
	_ = json.Unmarshal(b, &v)
	return code, v.CostUSD, string(b), nil
}

// Issue 18's budget target: one daily limit, many concurrent chat calls
// spread over three nodes: the spend settled never passes the limit
// (overspend 0; per-node ledgers would each admit the whole limit; the
// limit is set through one node and shared), the
// calls beyond it are refused as on one node (402 budget_exceeded), every
// node shows the cluster's spend; then a node is killed with -9 while its
// calls hold reservations: the others refuse while those holds count and
// admit again once its lease expired, with the spend it settled before
// dying still counted.
func TestBudgetHoldsAcrossNodesAndKill9ReleasesHolds(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	// The real cost is close to the worst case reserved (max_tokens
	// output), and calls overlap.
	oai.SetOutputTokens(1000)
	oai.SetLatency(300 * time.Millisecond)
	nodes := channelNodes(t, etcd, oai, "n1", "n2", "n3")
	const agents = 5
	for _, n := range nodes {
		for a := 1; a <= agents; a++ {
			if code, body := post(t, n.url+"/api/agents", fmt.Sprintf(`{"name":"b%d","model":"fakeoai/gpt-test","max_tokens":1000}`, a)); code != 201 {
				t.Fatalf("%s: create agent: %d %s", n.name, code, body)
			}
		}
	}
	// About nine calls' worth (1 USD per million tokens, ~1100 tokens
	// worst case each).
	const limit = 0.01
	setDailyLimit(t, nodes[1], nodes, limit)

	// 45 calls at once, 15 through each node, 3 on each of its agents.
	type result struct {
		node   string
		status int
		cost   float64
		body   string
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for _, n := range nodes {
		for a := 1; a <= agents; a++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 3 {
					code, cost, body, err := chat(n, fmt.Sprintf("b%d", a), fmt.Sprintf("question %d", i))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					results = append(results, result{n.name, code, cost, body})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	var spent float64
	admitted, refused := map[string]int{}, 0
	for _, r := range results {
		switch {
		case r.status == 200:
			admitted[r.node]++
			spent += r.cost
		case r.status == 402 && strings.Contains(r.body, "budget_exceeded") && strings.Contains(r.body, "daily limit"):
			refused++
		default:
			t.Fatalf("%s: %d %s", r.node, r.status, r.body)
		}
	}
	total := admitted["n1"] + admitted["n2"] + admitted["n3"]
	t.Logf("admitted %d (%v), refused %d; settled %.6f USD of %.2f", total, admitted, refused, spent, limit)
	if spent > limit+1e-9 {
		t.Fatalf("settled %.9f USD against a daily limit of %.2f: overspent by %.9f", spent, limit, spent-limit)
	}
	if total < 5 || refused == 0 {
		t.Fatalf("admitted %d and refused %d: want most of the limit used and the rest refused", total, refused)
	}
	// Every node shows the cluster's spend, which is exactly what the
	// admitted calls cost.
	for _, n := range nodes {
		b := budgetOf(t, n)
		if math.Abs(b.TodaySpentUSD-spent) > 1e-9 || b.Reservations != 0 || b.DailyLimitUSD != limit {
			t.Fatalf("%s: GET /api/budget %+v, want today_spent_usd %.9f and no reservations", n.name, b, spent)
		}
	}

	// Kill -9 with reservations open. Calls through n3 (to two agents: an
	// agent runs one turn at a time) hang in the provider, holding their
	// worst case cluster-wide.
	oai.SetLatency(time.Minute)
	setDailyLimit(t, nodes[0], nodes, 1) // room for the holds
	victim, other := nodes[2], nodes[0]
	for i := range 2 {
		go chat(victim, fmt.Sprintf("b%d", i+1), "held")
	}
	var held budgetView
	deadline := time.Now().Add(10 * time.Second)
	for held = budgetOf(t, other); held.Reservations != 2; held = budgetOf(t, other) {
		if time.Now().After(deadline) {
			t.Fatalf("n1 sees %+v, want n3's 2 reservations", held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Room for the holds and half a call more: the next call does not fit.
	setDailyLimit(t, nodes[2], nodes, spent+held.ReservedUSD*1.25)
	oai.SetLatency(0)
	if code, _, body, err := chat(other, "b3", "while n3 holds"); err != nil || code != 402 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("a call through n1 while n3's calls hold the budget: %d %s %v, want 402 budget_exceeded", code, body, err)
	}
	killed := victim.kill(t)
	for {
		code, _, body, err := chat(other, "b3", "after the kill")
		if err != nil {
			t.Fatal(err)
		}
		if code == 200 {
			break
		}
		if code != 402 {
			t.Fatalf("after the kill: %d %s", code, body)
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("n3's holds still count %v after its kill -9", time.Since(killed))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("the budget was usable again %v after the kill -9 (reservation lease 5 s)", time.Since(killed).Round(10*time.Millisecond))
	// n3's settled spend from before is still counted (plus the one call
	// just admitted), and no hold is left.
	b := budgetOf(t, nodes[1])
	if b.TodaySpentUSD <= spent || b.Reservations != 0 {
		t.Fatalf("n2 after the kill: %+v, want more than the %.9f settled before and no holds", b, spent)
	}
}
