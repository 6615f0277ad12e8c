package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

// routeRequests is how many reads cluster-route sends to each node, after
// routeWarmup discarded ones.
const (
	routeRequests = 3000
	routeWarmup   = 300
)

// runClusterRoute measures issue 18's cross-node request overhead: three
// fangd nodes in cluster mode on an embedded etcd, one Telegram channel
// (the telegramtest fake) hosted on one of them (A). The same read, GET
// /api/channels/{name} (the live status, which only the host has), is
// sent to A directly and to another node B, which forwards it to A
// (docs/cluster.md "Request routing"); sequential requests alternate
// between the two so both see the same machine load. The overhead is the
// difference of the two distributions' percentiles. The same comparison
// runs for an agent on A, GET /api/agents/{id}, which B routes through the
// cluster's agent directory.
func runClusterRoute(ctx context.Context, env *Env) ([]Row, error) {
	c, err := startCluster(env, "route")
	if err != nil {
		return nil, err
	}
	tg := telegramtest.New("4343:route")
	env.onClose(tg.Close)
	// A forwarded request carries the caller's credential and the host
	// checks it again: every node needs the same API key, and the same
	// vault key to open the channel's sealed token.
	apiKey, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	nodes := map[string]*Daemon{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("r%d", i)
		d, err := c.node(ctx, name, name, "", "FANGD_API_KEY="+apiKey)
		if err != nil {
			return nil, err
		}
		d.APIKey = apiKey
		nodes[name] = d
	}
	if err := requestWant(ctx, nodes["r1"], "POST", "/api/channels/tg/configure", map[string]any{"adapter": "telegram",
		"token": "4343:route", "api_url": tg.URL(), "poll_interval_secs": 30}, 200, nil); err != nil {
		return nil, fmt.Errorf("configure the channel: %w", err)
	}
	var host string
	for begin := time.Now(); host == "" && time.Since(begin) < 30*time.Second; {
		for name, d := range nodes {
			if v, err := getJSON(d, "/api/channels/tg"); err == nil && v["status"] == "connected" && v["node"] == name {
				host = name
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if host == "" {
		return nil, fmt.Errorf("no node ran the channel within 30 s")
	}
	var other string
	for name := range nodes {
		if name != host {
			other = name
			break
		}
	}
	// The forwarded answer is the host's live status, not B's "remote",
	// once B's ownership round has seen the channel (a second or so).
	for begin := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		v, err := getJSON(nodes[other], "/api/channels/tg")
		if err == nil && v["status"] == "connected" {
			break
		}
		if time.Since(begin) > 30*time.Second {
			return nil, fmt.Errorf("GET /api/channels/tg on %s (not the host): %v %v", other, v, err)
		}
	}
	// An agent on the same host: GET /api/agents/{id} asked of the other
	// node is forwarded through the agent directory (one etcd read, then
	// the forward; docs/cluster.md "Agents across the cluster").
	var created struct {
		ID string `json:"id"`
	}
	if err := requestWant(ctx, nodes[host], "POST", "/api/agents", map[string]any{"name": "routed", "model": "openai/gpt-4o-mini"}, 201, &created); err != nil || created.ID == "" {
		return nil, fmt.Errorf("create an agent on %s: %v", host, err)
	}
	agentPath := "/api/agents/" + created.ID
	for begin := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		v, err := getJSON(nodes[other], agentPath)
		if err == nil && v["id"] == created.ID {
			break
		}
		if time.Since(begin) > 30*time.Second {
			return nil, fmt.Errorf("GET %s on %s (not the host): %v %v", agentPath, other, v, err)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(d *Daemon, path string) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", d.URL(path), nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+d.APIKey)
		begin := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		took := time.Since(begin)
		if res.StatusCode != 200 {
			return 0, fmt.Errorf("GET %s on %s: %d", path, d.URL(""), res.StatusCode)
		}
		return took, nil
	}
	// compare sends path alternately to the host and the other node and
	// answers both sorted distributions.
	compare := func(path string) (direct, routed []time.Duration, err error) {
		direct = make([]time.Duration, 0, routeRequests)
		routed = make([]time.Duration, 0, routeRequests)
		for i := range routeWarmup + routeRequests {
			a, err := get(nodes[host], path)
			if err != nil {
				return nil, nil, err
			}
			b, err := get(nodes[other], path)
			if err != nil {
				return nil, nil, err
			}
			if i >= routeWarmup {
				direct, routed = append(direct, a), append(routed, b)
			}
		}
		slices.Sort(direct)
		slices.Sort(routed)
		return direct, routed, nil
	}
	pct := func(s []time.Duration, q float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*q))] }
	direct, routed, err := compare("/api/channels/tg")
	if err != nil {
		return nil, err
	}
	d50, d99, r50, r99 := pct(direct, 0.5), pct(direct, 0.99), pct(routed, 0.5), pct(routed, 0.99)
	direct, routed, err = compare(agentPath)
	if err != nil {
		return nil, err
	}
	ad50, ad99, ar50, ar99 := pct(direct, 0.5), pct(direct, 0.99), pct(routed, 0.5), pct(routed, 0.99)
	fmt.Fprintf(env.Log, "  cluster-route: host %s, forwarded through %s\n", host, other)
	return []Row{
		infoRow(fmt.Sprintf("GET /api/channels/{name} on the host, p50 / p99 (%d sequential)", routeRequests), ms(d50)+" / "+ms(d99)),
		{Metric: "the same read sent to a node that does not host the channel (forwarded), p99", Value: ms(r99) + " (p50 " + ms(r50) + ")",
			Target: "< 2 ms", Verdict: verdict(r99 < 2*time.Millisecond)},
		infoRow("cross-node overhead (forwarded minus direct), p50 / p99", ms(r50-d50)+" / "+ms(r99-d99)),
		infoRow(fmt.Sprintf("GET /api/agents/{id} on the host, p50 / p99 (%d sequential)", routeRequests), ms(ad50)+" / "+ms(ad99)),
		// The agent directory is read from etcd on every routed request
		// (no watched cache yet), so this costs more than a channel's.
		infoRow("the same agent read sent to a node that does not host it (directory lookup + forward), p50 / p99", ms(ar50)+" / "+ms(ar99)),
		infoRow("agent cross-node overhead (forwarded minus direct), p50 / p99", ms(ar50-ad50)+" / "+ms(ar99-ad99)),
	}, nil
}
