package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
)

// Sizes of the approvals scenario.
const (
	pendingApprovals = 10_000
	roundTrips       = 300
	approvalsConfig  = "\n[approval]\nmax_pending_per_agent = 20000\ntimeout_secs = 3600\n"
)

// runApprovals measures issue 7's targets on the real binary: the RSS that
// 10,000 pending approvals (persisted; in memory an index entry and an
// expiry each, the approval/<id> actor started when something needs it)
// add to a daemon, and the approve round trip — from sending
// POST /api/approvals/{id}/approve until a caller long-polling
// GET /api/approvals/{id}?wait=30 has its answer. Then, in-process, the
// same round trip as an agent's gated tool call sees it: an actor future
// waiting on approval.Gate, resolved by a decision.
func runApprovals(ctx context.Context, env *Env) ([]Row, error) {
	home, err := env.tempDir("fangd-approvals-")
	if err != nil {
		return nil, err
	}
	d, err := StartDaemonWith(ctx, env.Opts.Fangd, home, approvalsConfig, nil)
	if d != nil {
		defer func() { d.Stop() }()
	}
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 60 * time.Second}
	call := func(method, path string, body any, out any) (int, error) {
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequestWithContext(ctx, method, d.URL(path), rd)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+d.APIKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		if out != nil {
			json.Unmarshal(raw, out)
		}
		return res.StatusCode, nil
	}
	if code, err := call("POST", "/api/agents", map[string]any{"name": "bench", "model": "openai/gpt-4o-mini"}, nil); err != nil || code != 201 {
		return nil, fmt.Errorf("create agent: %d %v", code, err)
	}
	base, err := d.SettledRSS(ctx)
	if err != nil {
		return nil, err
	}
	baseAnon, baseFile, _ := rssParts(d.cmd.Process.Pid)

	env.logf("approvals: creating %d pending approvals", pendingApprovals)
	ids := make([]string, pendingApprovals)
	begin := time.Now()
	if err := forEach(ctx, 8, pendingApprovals, func(i int) error {
		var rec struct{ ID string }
		code, err := call("POST", "/api/approvals", map[string]any{"agent_id": "bench", "action": "shell_exec",
			"description": "bench request", "payload": map[string]any{"cmd": fmt.Sprintf("echo %d", i)}}, &rec)
		if err != nil || code != 201 {
			return fmt.Errorf("create approval %d: %d %v", i, code, err)
		}
		ids[i] = rec.ID
		return nil
	}); err != nil {
		return nil, err
	}
	created := time.Since(begin)
	// What holding them costs, without the write burst of creating them
	// (Badger's table builders, garbage the GC has not returned yet):
	// restart on the same home, so all 10,000 are loaded from the store
	// with their expiry, and compare with the same
	// daemon's RSS before any existed (as channels-idle does).
	if err := d.Stop(); err != nil {
		return nil, err
	}
	loadBegin := time.Now()
	d, err = StartDaemonWith(ctx, env.Opts.Fangd, home, approvalsConfig, nil)
	if d != nil {
		defer d.Stop()
	}
	if err != nil {
		return nil, err
	}
	var page struct{ Total int }
	if code, err := call("GET", "/api/approvals?status=pending&limit=1", nil, &page); err != nil || code != 200 || page.Total != pendingApprovals {
		return nil, fmt.Errorf("pending after restart: %d %v %d", code, err, page.Total)
	}
	loaded := time.Since(loadBegin)
	rss, err := d.SettledRSS(ctx)
	if err != nil {
		return nil, err
	}
	anon, file, _ := rssParts(d.cmd.Process.Pid)

	env.logf("approvals: %d approve round trips through a long poll", roundTrips)
	var rtt, approveLat []time.Duration
	for i := 0; i < roundTrips; i++ {
		id := ids[i]
		polled := make(chan error, 1)
		var got time.Time
		go func() {
			var rec struct{ Status string }
			code, err := call("GET", "/api/approvals/"+id+"?wait=30", nil, &rec)
			got = time.Now()
			if err == nil && (code != 200 || rec.Status != "approved") {
				err = fmt.Errorf("long poll: %d %s", code, rec.Status)
			}
			polled <- err
		}()
		time.Sleep(2 * time.Millisecond) // let the poll reach the actor; a late poll only makes the number worse
		t0 := time.Now()
		code, err := call("POST", "/api/approvals/"+id+"/approve", map[string]any{}, nil)
		approveLat = append(approveLat, time.Since(t0))
		if err != nil || code != 200 {
			return nil, fmt.Errorf("approve: %d %v", code, err)
		}
		if err := <-polled; err != nil {
			return nil, err
		}
		rtt = append(rtt, got.Sub(t0))
	}
	slices.Sort(rtt)
	slices.Sort(approveLat)

	gate50, gate99, err := gateRoundTrips(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("in-process round trips: %w", err)
	}
	extra := rss - base
	p99 := rtt[len(rtt)*99/100]
	return []Row{
		infoRow(fmt.Sprintf("create %d approvals over HTTP (8 clients)", pendingApprovals), fmt.Sprintf("%s (%s/s)", ms(created), thousands(float64(pendingApprovals)/created.Seconds()))),
		infoRow(fmt.Sprintf("restart with %d pending: process start to all listed", pendingApprovals), ms(loaded)),
		{Metric: fmt.Sprintf("%d pending approvals (loaded at start): RSS above an empty daemon", pendingApprovals),
			Value: fmt.Sprintf("%s (%s total)", mib(extra), mib(rss)), Target: "< 30 MiB", Verdict: verdict(extra < 30<<20)},
		infoRow("  of which anonymous (heap) / file-backed (Badger's mapped files)", mib(anon-baseAnon)+" / "+mib(file-baseFile)),
		infoRow("POST approve latency, p50 / p99", ms(approveLat[len(approveLat)/2])+" / "+ms(approveLat[len(approveLat)*99/100])),
		{Metric: "approve round trip (API call -> long-polling caller answered), p99", Value: ms(p99) + " (p50 " + ms(rtt[len(rtt)/2]) + ")",
			Target: "< 5 ms", Verdict: verdict(p99 < 5*time.Millisecond)},
		{Metric: "approve round trip in-process (decision -> waiting gated tool call resumes), p99", Value: ms(gate99) + " (p50 " + ms(gate50) + ")",
			Target: "< 5 ms", Verdict: verdict(gate99 < 5*time.Millisecond)},
	}, nil
}

// gateRoundTrips runs the approvals actors in the harness's own process on
// a real store and audit log, the way an agent waits: a Gate future per
// request, then a decision, timed until the future resolves.
func gateRoundTrips(ctx context.Context, env *Env) (p50, p99 time.Duration, err error) {
	n, err := startInProc(env, "approvals-gate-")
	if err != nil {
		return 0, 0, err
	}
	defer n.close()
	k, db := n.k, n.db
	vault, err := n.vault()
	if err != nil {
		return 0, 0, err
	}
	al, err := n.audit(audit.Options{})
	if err != nil {
		return 0, 0, err
	}
	p := approval.DefaultPolicy()
	p.MaxPendingPerAgent = 100_000
	apps, err := approval.Start(k, db, vault, al, approval.Options{Policy: p})
	if err != nil {
		return 0, 0, err
	}
	var lat []time.Duration
	for i := 0; i < 2*roundTrips && ctx.Err() == nil; i++ {
		rec, err := apps.Create(context.Background(), approval.Request{AgentID: "bench", Action: "shell_exec"})
		if err != nil {
			return 0, 0, err
		}
		f := k.Root.RequestFuture(apps.PID(), &approval.Gate{Req: approval.Request{ID: rec.ID, AgentID: "bench", Action: "shell_exec"}}, 30*time.Second)
		if _, err := apps.Get(context.Background(), rec.ID); err != nil { // the Gate is in place once this answers
			return 0, 0, err
		}
		t0 := time.Now()
		if _, err := apps.Decide(context.Background(), approval.Decide{ID: rec.ID, Approve: true, By: approval.Decider{Identity: "bench", Via: approval.ViaAPI}}); err != nil {
			return 0, 0, err
		}
		res, err := f.Result()
		if err != nil {
			return 0, 0, err
		}
		if a, ok := res.(*approval.Approval); !ok || a.Status != approval.StatusApproved {
			return 0, 0, fmt.Errorf("the waiter got %v", res)
		}
		lat = append(lat, time.Since(t0))
	}
	if len(lat) == 0 {
		return 0, 0, ctx.Err()
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// rssParts reads RssAnon and RssFile (bytes) of pid: heap and stacks
// versus pages of memory-mapped files (Badger maps its tables and WAL).
func rssParts(pid int) (anon, file int64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb << 10
		case "RssFile:":
			file = kb << 10
		}
	}
	return anon, file, nil
}
