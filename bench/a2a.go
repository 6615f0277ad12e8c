package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/transport/ssrf"
)

// benchLLMKey is the fake provider's key (only the harness and the daemon
// it starts know it).
const benchLLMKey = "sk-fangd-bench-0f1e2d3c"

// a2aSendBody is one blocking A2A 1.0 SendMessage. fangd makes a new task
// (and a new agent session) for every request, so one body serves the run.
const a2aSendBody = `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"bench","role":"ROLE_USER","parts":[{"text":"bench"}]}}}`

// fakeProviderConfig is the config of the fake provider at baseURL, model
// fakebench/instant (the daemon reads its key from FANGD_BENCH_LLM_KEY).
func fakeProviderConfig(baseURL string) string {
	return fmt.Sprintf(`
[providers.fakebench]
api = "openai"
base_url = %q
trusted = true # a local fake on loopback
api_key_env = "FANGD_BENCH_LLM_KEY"

[[models]]
provider = "fakebench"
id = "instant"
input_per_m = 0.1
output_per_m = 0.1
context_window = 128000
`, baseURL)
}

// keptTasks is how many finished tasks the in-process memory run keeps.
const keptTasks = 2000

// runA2A measures A2A SendMessage round trips: wrk posts JSON-RPC
// SendMessage to one local agent of a dedicated daemon, whose agent is
// backed by a fake OpenAI-compatible provider (in this process) that
// answers at once. Each round trip is the whole path: auth, the SDK's
// JSON-RPC handler, the task actor and its two journal writes, the agent's
// turn (budget reservation, the provider call, the usage event, the session
// write, its audit entry) and the request's own audit entry. Every answer
// is checked afterwards: the daemon's count of completed tasks must match
// wrk's count of requests. Then, in this process, the heap a finished
// task leaves behind while it is kept.
func runA2A(ctx context.Context, env *Env) ([]Row, error) {
	fake := llmtest.NewOpenAI(benchLLMKey)
	env.onClose(fake.Close)
	home, err := env.tempDir("fangd-a2a-")
	if err != nil {
		return nil, err
	}
	extra := fakeProviderConfig(fake.BaseURL)
	prof, err := newDaemonProfiler(env, "")
	if err != nil {
		return nil, err
	}
	d, err := StartDaemonWith(ctx, env.Opts.Fangd, home, extra, append(prof.pprofEnv(), "FANGD_BENCH_LLM_KEY="+benchLLMKey))
	if d != nil {
		env.onClose(func() {
			if err := d.Stop(); err != nil {
				env.logf("stopping the A2A daemon: %v", err)
			}
		})
	}
	if err != nil {
		return nil, err
	}
	status, body, err := post(d, "/api/agents", `{"name":"bench","model":"fakebench/instant","max_tokens":64}`)
	if err != nil || status != fasthttp.StatusCreated {
		return nil, fmt.Errorf("creating the agent: %d %s %v", status, body, err)
	}
	var agent struct{ ID string }
	if err := json.Unmarshal(body, &agent); err != nil || agent.ID == "" {
		return nil, fmt.Errorf("creating the agent: %s", body)
	}
	path := "/a2a/agents/" + agent.ID
	status, body, err = post(d, path, a2aSendBody)
	if err != nil || status != fasthttp.StatusOK || !strings.Contains(string(body), "TASK_STATE_COMPLETED") {
		return nil, fmt.Errorf("one SendMessage: %d %s %v", status, body, err)
	}
	script := filepath.Join(home, "send.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", a2aSendBody)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return nil, err
	}
	load := wrkLoad{URL: d.URL(path), Headers: []string{d.AuthHeader()}, Connections: env.Opts.Connections, Script: script}
	if env.Opts.Warmup > 0 {
		load.Duration = env.Opts.Warmup
		if _, err := runWrk(ctx, load); err != nil {
			return nil, err
		}
	}
	before, err := completedTasks(d)
	if err != nil {
		return nil, err
	}
	rssBefore, _ := d.RSS()
	load.Duration = env.Opts.Duration
	env.logf("wrk -t1 -c%d -d%s -s send.lua %s", load.Connections, load.Duration, load.URL)
	wait := prof.start(ctx, "a2a-send", load.Duration)
	res, err := runWrk(ctx, load)
	wait()
	if err != nil {
		return nil, err
	}
	after, err := completedTasks(d)
	if err != nil {
		return nil, err
	}
	rssAfter, _ := d.RSS()
	completed := after - before
	if res.Non2xx > 0 || res.SocketErrors > 0 || float64(completed) < 0.99*float64(res.Requests) {
		return nil, fmt.Errorf("A2A load: %d requests, %d non-2xx, %d socket errors, but %d tasks completed", res.Requests, res.Non2xx, res.SocketErrors, completed)
	}
	// Requests wrk cut off at the end of the run finish within moments;
	// then every finished task should have passivated.
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	live, err := liveTaskActors(d)
	if err != nil {
		return nil, err
	}
	rows := []Row{
		{Metric: "A2A SendMessage round trips/s (JSON-RPC, local agent, zero-latency fake LLM)",
			Value: thousands(res.RequestsPerSec), Target: ">= 3,000", Verdict: verdict(res.RequestsPerSec >= 3000)},
		infoRow("A2A SendMessage p50 / p99", ms(res.P50)+" / "+ms(res.P99)),
		infoRow("  tasks completed during the run / live task actors after", fmt.Sprintf("%d / %d", completed, live)),
	}
	if completed > 0 && rssAfter > 0 && rssBefore > 0 {
		rows = append(rows, infoRow("  daemon RSS growth per finished task kept (whole process)",
			fmt.Sprintf("%d B (%s -> %s)", (rssAfter-rssBefore)/completed, mib(rssBefore), mib(rssAfter))))
	}
	perTask, actors, err := keptTaskHeap(ctx, env)
	if err != nil {
		return rows, fmt.Errorf("kept-task memory: %w", err)
	}
	return append(rows, Row{
		Metric:  fmt.Sprintf("heap per finished A2A task kept (%d tasks, in process; %d live task actors)", keptTasks, actors),
		Value:   fmt.Sprintf("%.0f B", perTask),
		Target:  "< 4 KB",
		Verdict: verdict(perTask < 4096),
	}), nil
}

// post sends an authenticated JSON POST to the daemon.
func post(d *Daemon, path, body string) (int, []byte, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(d.URL(path))
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set("Authorization", "Bearer "+d.APIKey)
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	if err := fasthttp.DoTimeout(req, resp, 30*time.Second); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// completedTasks reads fangd_a2a_tasks_finished_total for completed
// inbound tasks from /metrics.
func completedTasks(d *Daemon) (int64, error) {
	resp, err := fetch(d.URL("/metrics"), []string{d.AuthHeader()})
	if err != nil {
		return 0, err
	}
	defer fasthttp.ReleaseResponse(resp)
	sc := bufio.NewScanner(strings.NewReader(string(resp.Body())))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "fangd_a2a_tasks_finished_total{") && strings.Contains(line, `direction="inbound"`) &&
			strings.Contains(line, `status="completed"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return int64(v), err
		}
	}
	return 0, nil
}

// liveTaskActors reads the a2a-task actor count from /api/health/detail.
func liveTaskActors(d *Daemon) (int, error) {
	resp, err := fetch(d.URL("/api/health/detail"), []string{d.AuthHeader()})
	if err != nil {
		return 0, err
	}
	defer fasthttp.ReleaseResponse(resp)
	var detail struct {
		Actors map[string]int `json:"actors"`
	}
	if err := json.Unmarshal(resp.Body(), &detail); err != nil {
		return 0, err
	}
	return detail.Actors["a2a-task"], nil
}

// keptTaskHeap runs the A2A actors in this process on a real store, sends
// keptTasks blocking messages to an agent that answers at once, and
// measures the live heap they leave behind (after a GC on both sides).
func keptTaskHeap(ctx context.Context, env *Env) (float64, int, error) {
	n, err := startInProc(env, "fangd-a2a-heap-")
	if err != nil {
		return 0, 0, err
	}
	defer n.close()
	k, db := n.k, n.db
	guard, err := ssrf.New(nil)
	if err != nil {
		return 0, 0, err
	}
	opts := a2a.DefaultOptions()
	opts.Agents, opts.Guard = instantAgent{}, guard
	svc, err := a2a.Start(k, db, opts)
	if err != nil {
		return 0, 0, err
	}
	admin := context.WithValue(ctx, a2a.CallerKey, a2a.Caller{Name: "bench", Admin: true})
	send := func(n int) error {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 16 {
					res, err := svc.Handler("").SendMessage(admin, &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("keep me"))})
					if err == nil && res.(*sdk.Task).Status.State != sdk.TaskStateCompleted {
						err = fmt.Errorf("task ended %s", res.(*sdk.Task).Status.State)
					}
					if err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	if err := send(200); err != nil { // warm up pools, caches and the store
		return 0, 0, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := send(keptTasks); err != nil {
		return 0, 0, err
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / keptTasks, k.ActorCounts()["a2a-task"], nil
}

// instantAgent is one local agent that answers at once.
type instantAgent struct{}

var benchAgent = a2a.Agent{ID: "00000000-0000-4000-8000-00000000be0c", Name: "bench", Available: true}

func (instantAgent) Resolve(context.Context, string) (a2a.Agent, error) { return benchAgent, nil }
func (instantAgent) List(context.Context) ([]a2a.Agent, error)          { return []a2a.Agent{benchAgent}, nil }
func (instantAgent) Turn(_ context.Context, req a2a.TurnRequest) (a2a.TurnResult, error) {
	return a2a.TurnResult{Text: "ok: " + req.Text}, nil
}
