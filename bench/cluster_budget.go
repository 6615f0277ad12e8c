package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// budgetLimitUSD is cluster-budget's daily limit: about 45 calls'
	// worth (1 USD per million tokens, ~1100 tokens per call).
	budgetLimitUSD = 0.05
	// budgetWorkers agents per node, each sending budgetCalls calls in a
	// row: 3 x 8 x 8 = 192 calls, about four times what fits.
	budgetWorkers = 8
	budgetCalls   = 8
)

// runClusterBudget measures issue 18's budget target: three fangd nodes
// in cluster mode on an embedded etcd, one daily limit set on each,
// concurrent chat calls spread over the three (a priced fake model whose
// answers cost close to the worst case reserved). Overspend is what the
// calls that got a 200 cost beyond the limit; it must be 0. The
// reservation latency is each node's fangd_cluster_budget_reserve_seconds
// histogram (request to committed hold in etcd), merged.
func runClusterBudget(ctx context.Context, env *Env) ([]Row, error) {
	c, err := startCluster(env, "bench")
	if err != nil {
		return nil, err
	}
	llm := c.withLLM("bench-budget")
	llm.SetOutputTokens(1000)
	llm.SetLatency(100 * time.Millisecond)
	var nodes []*Daemon
	for i := 1; i <= 3; i++ {
		d, err := c.node(ctx, fmt.Sprintf("budget-n%d", i), fmt.Sprintf("n%d", i), fakeOAIConfig(llm.BaseURL, 1))
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, d)
		for a := 1; a <= budgetWorkers; a++ {
			if err := requestWant(ctx, d, "POST", "/api/agents", map[string]any{"name": fmt.Sprintf("w%d", a), "model": "fakeoai/gpt-test", "max_tokens": 1000}, 201, nil); err != nil {
				return nil, fmt.Errorf("n%d: create agent: %w", i, err)
			}
		}
		if err := requestWant(ctx, d, "PUT", "/api/budget", map[string]any{"daily_limit_usd": budgetLimitUSD}, 200, nil); err != nil {
			return nil, fmt.Errorf("n%d: set the limit: %w", i, err)
		}
	}

	var mu sync.Mutex
	var spent float64
	admitted, refused, other := 0, 0, 0
	var wg sync.WaitGroup
	begin := time.Now()
	for _, d := range nodes {
		for a := 1; a <= budgetWorkers; a++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range budgetCalls {
					var turn struct {
						CostUSD float64 `json:"cost_usd"`
					}
					resp, err := channelRequest(ctx, d, "POST", fmt.Sprintf("/api/agents/w%d/message", a), map[string]any{"message": fmt.Sprintf("question %d", i)})
					mu.Lock()
					switch {
					case err != nil:
						other++
					case resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&turn) == nil:
						admitted++
						spent += turn.CostUSD
					case resp.StatusCode == 402:
						refused++
					default:
						other++
					}
					mu.Unlock()
					if resp != nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(begin)

	// Every node's view of the cluster's spend, and the histograms.
	var views []string
	buckets := map[float64]float64{}
	var commits, conflicts float64
	for i, d := range nodes {
		var b struct {
			TodaySpentUSD float64 `json:"today_spent_usd"`
		}
		if err := requestWant(ctx, d, "GET", "/api/budget", nil, 200, &b); err != nil {
			return nil, err
		}
		views = append(views, fmt.Sprintf("n%d %.6f", i+1, b.TodaySpentUSD))
		if err := scrapeBudgetMetrics(ctx, d, buckets, &commits, &conflicts); err != nil {
			return nil, err
		}
	}
	p50, p99, n := histQuantile(buckets, 0.5), histQuantile(buckets, 0.99), buckets[math.Inf(1)]
	overspend := math.Max(0, spent-budgetLimitUSD)
	fmt.Fprintf(env.Log, "  cluster-budget: %d admitted, %d refused, %d other in %s; spend %.6f of %.2f USD; GET /api/budget: %s; %0.f reservations, %.0f Txns, %.0f conflicts\n",
		admitted, refused, other, ms(took), spent, budgetLimitUSD, strings.Join(views, ", "), n, commits, conflicts)
	calls := float64(admitted + refused)
	return []Row{
		infoRow("cluster-budget: chat calls admitted / refused (402) / other, 3 nodes, 192 concurrent-ish calls",
			fmt.Sprintf("%d / %d / %d", admitted, refused, other)),
		infoRow("cluster-budget: spend of the admitted calls vs the daily limit", fmt.Sprintf("%.6f of %.2f USD", spent, budgetLimitUSD)),
		{Metric: "cluster-budget: overspend (issue 18)", Value: fmt.Sprintf("%.6f USD", overspend), Target: "0", Verdict: verdict(overspend == 0 && other == 0)},
		infoRow("cluster-budget: reservation latency (request to hold committed in etcd), p50 / p99 (bucket bounds)",
			fmt.Sprintf("<= %s / <= %s", secs(p50), secs(p99))),
		infoRow("cluster-budget: etcd Txns per call (reserve + settle, batched per node) / CAS conflicts per call",
			fmt.Sprintf("%.2f / %.2f", commits/calls, conflicts/calls)),
	}, nil
}

// scrapeBudgetMetrics adds d's reservation histogram buckets (cumulative,
// by upper bound) and Txn counters to the totals.
func scrapeBudgetMetrics(ctx context.Context, d *Daemon, buckets map[float64]float64, commits, conflicts *float64) error {
	resp, err := channelRequest(ctx, d, "GET", "/metrics", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, `fangd_cluster_budget_reserve_seconds_bucket{le="`):
			le := strings.TrimSuffix(strings.TrimPrefix(name, `fangd_cluster_budget_reserve_seconds_bucket{le="`), `"}`)
			bound := math.Inf(1)
			if le != "+Inf" {
				if bound, err = strconv.ParseFloat(le, 64); err != nil {
					continue
				}
			}
			buckets[bound] += v
		case name == "fangd_cluster_budget_commits_total":
			*commits += v
		case name == "fangd_cluster_budget_conflicts_total":
			*conflicts += v
		}
	}
	return sc.Err()
}

// histQuantile is the upper bound of the bucket holding quantile q.
func histQuantile(buckets map[float64]float64, q float64) float64 {
	var bounds []float64
	for b := range buckets {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := buckets[math.Inf(1)]
	for _, b := range bounds {
		if buckets[b] >= q*total {
			return b
		}
	}
	return math.Inf(1)
}

func secs(s float64) string {
	if math.IsInf(s, 1) {
		return "inf"
	}
	return ms(time.Duration(s * float64(time.Second)))
}
