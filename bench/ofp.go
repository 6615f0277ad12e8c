package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// ofpKeepalive is the nodes' keepalive_interval: short, so the kill -9 row
// is measured in intervals without a long wait. Reconnect pacing keeps its
// defaults (500 ms doubling to 5 s), the setting the 5 s target is about.
const ofpKeepalive = time.Second

// ofpSecretEnv holds the bench network's shared secret in both daemons'
// environments (never in their configs).
const ofpSecretEnv = "FANGD_BENCH_OFP_SECRET"

// ofpSends is how many paired local/remote turns the latency rows sample.
const ofpSends = 1000

// ofpNode is one daemon of the scenario and what restarting it needs.
type ofpNode struct {
	d           *Daemon
	home, extra string
	env         []string
	prof        *daemonProfiler // with -profile
}

// runOFP measures the peer network between two real daemons on loopback,
// node-a hosting an agent backed by a zero-latency fake LLM and node-b
// linked to it (node-a is node-b's bootstrap peer), once with links in
// LibreFang's mode (plaintext frames, each with its HMAC) and once with
// fangd's TLS 1.3 links:
//   - the same turn sent with POST /api/comms/send locally on node-a
//     (agent:bench) and from node-b (peer:node-a/agent:bench), one at a
//     time, alternating: p50/p99 of each and their differences;
//   - -connections clients posting that remote send to node-b back to
//     back for -duration (fasthttp, one request per client at a time):
//     every request is one agent_message request and its agent_response
//     on node-b's one link to node-a, each a whole agent turn on node-a;
//   - kill -9 of node-a: time until node-b lists it disconnected, then
//     from its restart until node-b lists it connected again.
func runOFP(ctx context.Context, env *Env) ([]Row, error) {
	fake := llmtest.NewOpenAI(benchLLMKey)
	env.onClose(fake.Close)
	var rows []Row
	for _, mode := range []struct {
		name    string
		encrypt bool
	}{{"plaintext+HMAC", false}, {"TLS 1.3", true}} {
		r, err := ofpMode(ctx, env, fake.BaseURL, mode.name, mode.encrypt)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s links: %w", mode.name, err)
		}
	}
	return rows, nil
}

func ofpMode(ctx context.Context, env *Env, llmURL, mode string, encrypt bool) ([]Row, error) {
	aAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	bAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	secret := []string{ofpSecretEnv + "=bench-ofp-shared-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36), "FANGD_BENCH_LLM_KEY=" + benchLLMKey}
	a, err := startOFPNode(ctx, env, "node-a", aAddr, "", encrypt, llmURL, secret)
	if err != nil {
		return nil, err
	}
	b, err := startOFPNode(ctx, env, "node-b", bAddr, aAddr, encrypt, llmURL, secret)
	if err != nil {
		return nil, err
	}
	status, body, err := post(a.d, "/api/agents", `{"name":"bench","model":"fakebench/instant","max_tokens":64}`)
	if err != nil || status != fasthttp.StatusCreated {
		return nil, fmt.Errorf("creating the agent: %d %s %v", status, body, err)
	}
	const localBody = `{"to":"agent:bench","content":"bench"}`
	const remoteBody = `{"to":"peer:node-a/agent:bench","content":"bench"}`
	// node-b learns the agent from node-a's agent_spawned notification.
	if err := waitFor(ctx, 30*time.Second, "node-b to reach node-a's agent", func() bool {
		status, _, err := post(b.d, "/api/comms/send", remoteBody)
		return err == nil && status == fasthttp.StatusOK
	}); err != nil {
		return nil, err
	}
	link, err := linkMode(b.d, "node-a")
	if err != nil {
		return nil, err
	}
	env.logf("ofp %s: link %s; %d paired local/remote turns", mode, link, ofpSends)

	// Latency: one request at a time, local and remote alternating, so
	// load from elsewhere on the machine falls on both alike.
	send := func(d *Daemon, body string) (time.Duration, error) {
		begin := time.Now()
		status, resp, err := post(d, "/api/comms/send", body)
		if err == nil && (status != fasthttp.StatusOK || !strings.Contains(string(resp), `"status":"delivered"`)) {
			err = fmt.Errorf("comms/send: %d %s", status, resp)
		}
		return time.Since(begin), err
	}
	for range 50 { // warm both paths
		if _, err := send(a.d, localBody); err != nil {
			return nil, err
		}
		if _, err := send(b.d, remoteBody); err != nil {
			return nil, err
		}
	}
	wait := startProfiles(ctx, env, a, b, "ofp-"+profileSlug(mode)+"-latency", 0)
	local, remote := make([]time.Duration, 0, ofpSends), make([]time.Duration, 0, ofpSends)
	for i := 0; i < ofpSends && ctx.Err() == nil; i++ {
		l, err := send(a.d, localBody)
		if err != nil {
			return nil, err
		}
		r, err := send(b.d, remoteBody)
		if err != nil {
			return nil, err
		}
		local, remote = append(local, l), append(remote, r)
	}
	wait()
	slices.Sort(local)
	slices.Sort(remote)
	p50, p99 := pct(remote, 50)-pct(local, 50), pct(remote, 99)-pct(local, 99)
	rows := []Row{
		infoRow(fmt.Sprintf("ofp %s: local comms/send turn p50 / p99 (node-a, %d sequential)", mode, len(local)), ms(pct(local, 50))+" / "+ms(pct(local, 99))),
		infoRow(fmt.Sprintf("ofp %s: cross-node comms/send turn p50 / p99 (node-b -> node-a)", mode), ms(pct(remote, 50))+" / "+ms(pct(remote, 99))),
		{Metric: fmt.Sprintf("ofp %s: cross-node overhead p50 (remote p50 - local p50)", mode), Value: ms(p50), Target: "< 1 ms", Verdict: verdict(p50 < time.Millisecond)},
		{Metric: fmt.Sprintf("ofp %s: cross-node overhead p99 (remote p99 - local p99)", mode), Value: ms(p99), Target: "< 5 ms", Verdict: verdict(p99 < 5*time.Millisecond)},
	}

	// Throughput over node-b's one link to node-a.
	r, err := ofpThroughput(ctx, env, a, b, mode)
	rows = append(rows, r...)
	if err != nil {
		return rows, err
	}

	// kill -9 of node-a, then its restart.
	r, err = ofpKill(ctx, env, a, b, mode)
	rows = append(rows, r...)
	if err != nil {
		return rows, err
	}

	// The link alone: the same requests between in-process nodes whose
	// agent answers at once.
	r, err = ofpLinkRate(ctx, env, mode, encrypt, env.Opts.Connections, env.Opts.Duration)
	return append(rows, r...), err
}

// startOFPNode starts one daemon of the network: OFP on ofpAddr, bootstrap
// peer boot (if any), no per-peer message or concurrency limit (they would
// turn the throughput run into 429s), the fake LLM as provider.
func startOFPNode(ctx context.Context, env *Env, name, ofpAddr, boot string, encrypt bool, llmURL string, extraEnv []string) (*ofpNode, error) {
	home, err := env.tempDir("fangd-ofp-")
	if err != nil {
		return nil, err
	}
	boots := ""
	if boot != "" {
		boots = strconv.Quote(boot)
	}
	extra := fakeProviderConfig(llmURL) + fmt.Sprintf(`
[network]
network_enabled = true
node_name = %q
listen_addresses = [%q]
bootstrap_peers = [%s]
shared_secret_env = %q
keepalive_interval = %q
encrypt_links = %t
max_messages_per_peer_per_minute = 0
max_concurrent_requests = 10000
`, name, ofpAddr, boots, ofpSecretEnv, ofpKeepalive.String(), encrypt)
	n := &ofpNode{home: home, extra: extra, env: extraEnv}
	return n, n.start(ctx, env)
}

func (n *ofpNode) start(ctx context.Context, env *Env) error {
	prof, err := newDaemonProfiler(env, "")
	if err != nil {
		return err
	}
	// A restart writes the config again; the API port changes, the OFP
	// address (in extra) does not.
	d, err := StartDaemonWith(ctx, env.Opts.Fangd, n.home, n.extra, append(prof.pprofEnv(), n.env...))
	if d != nil {
		env.onClose(func() {
			if n.d != d {
				return // killed and restarted: the new process is stopped
			}
			if err := d.Stop(); err != nil {
				env.logf("stopping an OFP daemon: %v", err)
			}
		})
	}
	n.d, n.prof = d, prof
	return err
}

// startProfiles profiles both daemons over a run of d (0: until wait is
// called, bounded by 2 minutes) when -profile is set.
func startProfiles(ctx context.Context, env *Env, a, b *ofpNode, name string, d time.Duration) (wait func()) {
	if env.Opts.ProfileDir == "" {
		return func() {}
	}
	if d == 0 {
		d = 10 * time.Second // the latency loop takes a few seconds on a quiet machine
	}
	wa := a.prof.start(ctx, name+"-node-a", d)
	wb := b.prof.start(ctx, name+"-node-b", d)
	return func() { wa(); wb() }
}

func ofpThroughput(ctx context.Context, env *Env, a, b *ofpNode, mode string) ([]Row, error) {
	// Each client sends from its own sender, so each has its own session
	// on node-a (peer:<node-b>/<sender>): one session's turns run one at a
	// time, which would measure the agent's queue, not the link. (A local
	// comms/send always runs in the agent's default session, so there is
	// no local run at the same concurrency to compare with.)
	run := func(n *ofpNode, to, name string) (float64, int64, error) {
		body := func(i int) string {
			return fmt.Sprintf(`{"to":%q,"content":"bench","from":"bench-%d"}`, to, i)
		}
		before, err := networkCounter(a.d, "messages_in")
		if err != nil {
			return 0, 0, err
		}
		env.logf("%s: %d clients posting to %s for %s, each from its own sender", mode, env.Opts.Connections, to, env.Opts.Duration)
		wait := startProfiles(ctx, env, a, b, "ofp-"+profileSlug(mode)+"-"+name, env.Opts.Duration)
		rate, statuses, err := sendFlatOut(ctx, n.d, body, env.Opts.Connections, env.Opts.Duration)
		wait()
		if err != nil {
			return 0, 0, err
		}
		if len(statuses) > 1 || statuses[fasthttp.StatusOK] == 0 {
			return 0, 0, fmt.Errorf("%s: answers by status %v", name, statuses)
		}
		after, err := networkCounter(a.d, "messages_in")
		return rate, after - before, err
	}
	remote, framesIn, err := run(b, "peer:node-a/agent:bench", "remote")
	if err != nil {
		return nil, err
	}
	links, err := peerLinks(b.d, "node-a")
	if err != nil {
		return nil, err
	}
	return []Row{
		{Metric: fmt.Sprintf("ofp %s: OFP agent_message requests/s over node-b's %d link(s) (cross-node comms/send, %d clients; %s frames in on node-a)", mode, links, env.Opts.Connections, thousands(float64(framesIn))),
			Value: thousands(remote), Target: ">= 5,000", Verdict: verdict(remote >= 5000)},
	}, nil
}

func ofpKill(ctx context.Context, env *Env, a, b *ofpNode, mode string) ([]Row, error) {
	state := func() string {
		st, _ := peerField(b.d, "node-a", "state")
		s, _ := st.(string)
		return s
	}
	_ = a.d.cmd.Process.Kill()
	killed := time.Now()
	<-a.d.exited
	if err := waitFor(ctx, 30*time.Second, "node-b to list the killed node-a disconnected", func() bool { return state() == "disconnected" }); err != nil {
		return nil, err
	}
	seen := time.Since(killed)
	restart := time.Now()
	if err := a.start(ctx, env); err != nil {
		return nil, err
	}
	healthy := a.d.Healthy
	if err := waitFor(ctx, 60*time.Second, "node-b to list the restarted node-a connected", func() bool { return state() == "connected" }); err != nil {
		return nil, err
	}
	back := time.Since(restart)
	intervals := seen.Seconds() / ofpKeepalive.Seconds()
	return []Row{
		{Metric: fmt.Sprintf("ofp %s: kill -9 of node-a until node-b lists it disconnected (keepalive %s)", mode, ofpKeepalive), Value: fmt.Sprintf("%s (%.2f intervals)", ms(seen), intervals),
			Target: "<= 2 intervals", Verdict: verdict(intervals <= 2)},
		{Metric: fmt.Sprintf("ofp %s: node-a's restart (exec) until node-b lists it connected (healthy after %s)", mode, ms(healthy)), Value: ms(back),
			Target: "< 5 s", Verdict: verdict(back < 5*time.Second)},
	}, nil
}

// sendFlatOut has n clients post body to d's /api/comms/send back to back
// for dur, client i the body body(i); it returns the answers per second and their count by status.
func sendFlatOut(ctx context.Context, d *Daemon, body func(client int) string, n int, dur time.Duration) (float64, map[int]int, error) {
	client := &fasthttp.Client{MaxConnsPerHost: n, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	stop := time.Now().Add(dur)
	var mu sync.Mutex
	statuses := map[int]int{}
	var firstErr error
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := body(i)
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			mine := map[int]int{}
			var err error
			for time.Now().Before(stop) && ctx.Err() == nil {
				req.SetRequestURI(d.URL("/api/comms/send"))
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.Set("Authorization", "Bearer "+d.APIKey)
				req.Header.SetContentType("application/json")
				req.SetBodyString(body)
				if err = client.Do(req, resp); err != nil {
					break
				}
				mine[resp.StatusCode()]++
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range mine {
				statuses[k] += v
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if firstErr != nil {
		return 0, statuses, firstErr
	}
	return float64(statuses[fasthttp.StatusOK]) / elapsed.Seconds(), statuses, ctx.Err()
}

// waitFor polls ok every 5 ms until it holds, ctx ends or limit passes.
func waitFor(ctx context.Context, limit time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// getJSON fetches an authenticated path of d and decodes its JSON object.
func getJSON(d *Daemon, path string) (map[string]any, error) {
	resp, err := fetch(d.URL(path), []string{d.AuthHeader()})
	if err != nil {
		return nil, err
	}
	defer fasthttp.ReleaseResponse(resp)
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode(), resp.Body())
	}
	var out map[string]any
	err = json.Unmarshal(resp.Body(), &out)
	return out, err
}

func peerField(d *Daemon, peer, field string) (any, error) {
	p, err := getJSON(d, "/api/peers/"+peer)
	if err != nil {
		return nil, err
	}
	return p[field], nil
}

func linkMode(d *Daemon, peer string) (string, error) {
	v, err := peerField(d, peer, "link_mode")
	s, _ := v.(string)
	return s, err
}

func peerLinks(d *Daemon, peer string) (int, error) {
	v, err := peerField(d, peer, "links")
	f, _ := v.(float64)
	return int(f), err
}

func networkCounter(d *Daemon, field string) (int64, error) {
	st, err := getJSON(d, "/api/network/status")
	if err != nil {
		return 0, err
	}
	f, _ := st[field].(float64)
	return int64(f), nil
}
