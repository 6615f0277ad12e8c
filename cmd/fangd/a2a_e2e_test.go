package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2aclient"

	"github.com/fangd/fangd/actors/a2a/a2atest"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// a2aConfig allowlists loopback for outbound A2A calls: every peer in these
// tests runs on 127.0.0.1.
const a2aConfig = `
[network_policy]
allow_hosts = ["127.0.0.1/32"]
`

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return m
}

// sendOutbound sends message to the external agent agentID (POST
// /api/a2a/send) and waits for the outbound task to end.
func (p *proc) sendOutbound(t *testing.T, agentID, message string) map[string]any {
	t.Helper()
	code, body := p.request(t, "POST", "/api/a2a/send", `{"agent_id":"`+agentID+`","message":"`+message+`"}`)
	if code != 202 {
		t.Fatalf("send: %d %s", code, body)
	}
	return p.waitOutbound(t, decodeMap(t, body)["task_id"].(string))
}

func (p *proc) waitOutbound(t *testing.T, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := p.request(t, "GET", "/api/a2a/tasks/"+id+"/status", "")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		st := decodeMap(t, body)
		switch st["status"] {
		case "completed", "failed", "cancelled", "rejected":
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbound task %s did not finish: %s", id, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The real binary as an A2A client of an external agent built with the
// official JavaScript SDK; the outbound task and the discovered agent
// survive a restart.
func TestA2AFangdCallsAJavaScriptAgent(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := startFangd(t, home, a2aConfig, "FANGD_API_KEY="+e2eKey)
	peer := a2atest.StartServer(t, "")

	// The card is public, cacheable and names the A2A 1.0 interface.
	res, err := http.Get(p.url + "/.well-known/agent-card.json")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("ETag") == "" || !strings.Contains(res.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("card: %d %v", res.StatusCode, res.Header)
	}

	code, body := p.request(t, "POST", "/api/a2a/discover", `{"url":"`+peer+`"}`)
	if code != 201 {
		t.Fatalf("discover: %d %s", code, body)
	}
	id := decodeMap(t, body)["id"].(string)
	// Private addresses stay refused even with loopback allowlisted.
	if code, body := p.request(t, "POST", "/api/a2a/discover", `{"url":"http://10.1.2.3:8080"}`); code != 400 || !strings.Contains(string(body), "a2a_ssrf_blocked") {
		t.Fatalf("private address: %d %s", code, body)
	}
	code, body = p.request(t, "POST", "/api/a2a/send", `{"agent_id":"`+id+`","message":"hello from the binary"}`)
	if code != 202 {
		t.Fatalf("send: %d %s", code, body)
	}
	task := decodeMap(t, body)["task_id"].(string)
	st := p.waitOutbound(t, task)
	raw, _ := json.Marshal(st)
	if st["status"] != "completed" || !strings.Contains(string(raw), "js says: hello from the binary") {
		t.Fatalf("outbound: %s", raw)
	}

	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.stderr)
	}
	p = startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	code, body = p.request(t, "GET", "/api/a2a/tasks/"+task+"/status", "")
	if code != 200 || decodeMap(t, body)["status"] != "completed" {
		t.Fatalf("after restart: %d %s", code, body)
	}
	code, body = p.request(t, "GET", "/api/a2a/agents/"+id, "")
	if code != 200 || decodeMap(t, body)["name"] != "JS Echo Agent" {
		t.Fatalf("agent after restart: %d %s", code, body)
	}
}

// A bad [a2a] section stops the daemon with a message that names the field.
func TestA2ABadConfigNamesTheField(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ config, want string }{
		{"[a2a]\ntask_retention = \"soon\"\n", "a2a.task_retention"},
		{"[a2a]\nmax_attempts = 0\n", "a2a.max_attempts"},
		{"[[a2a.peers]]\nname = \"b\"\ntoken_env = \"FANGD_TEST_NO_SUCH_VAR\"\n", "a2a.peers[0]"},
		{"[[a2a.external_agents]]\nname = \"x\"\nurl = \"ftp://x\"\n", "a2a.external_agents[0].url"},
		{"[network_policy]\nallow_hosts = [\"not a cidr/\"]\n", "network_policy"},
		{"[a2a]\nlisten_path = \"/x\"\n", "a2a.listen_path"},
	} {
		p := launch(t, t.TempDir(), c.config)
		select {
		case err := <-p.done:
			p.done <- err
			if err == nil || !strings.Contains(p.stderr.String(), c.want) {
				t.Errorf("config %q: exit %v, stderr %s", c.config, err, p.stderr)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("config %q: fangd did not refuse to start", c.config)
		}
	}
}

// agentOn creates an agent backed by the fake OpenAI provider and returns its id.
func (p *proc) agentOn(t *testing.T, name string) string {
	t.Helper()
	code, body := p.request(t, "POST", "/api/agents", `{"name":"`+name+`","model":"fakeoai/gpt-test","description":"answers over A2A"}`)
	if code != 201 {
		t.Fatalf("create agent: %d %s", code, body)
	}
	return decodeMap(t, body)["id"].(string)
}

const peerToken = "daemon-a-token-0123456789"

// Two fangd daemons talking A2A: A discovers B's agent (with the per-peer
// token B gave A) and sends it a task that B's agent answers through its
// LLM; A follows B's stream to the end.
func TestA2ATwoDaemonsTalk(t *testing.T) {
	t.Parallel()
	oai, _, cfgB := fakes(t, `
[[a2a.peers]]
name = "daemon-a"
token_env = "FANGD_TEST_PEER_A"
`)
	oai.SetReply(func(r llmtest.Request) string { return "B's agent says: " + r.Messages[len(r.Messages)-1].Content })
	b := startFangd(t, t.TempDir(), cfgB, append(keyEnv, "FANGD_API_KEY="+e2eKey, "FANGD_TEST_PEER_A="+peerToken)...)
	agentID := b.agentOn(t, "assistant")
	a := startFangd(t, t.TempDir(), a2aConfig, "FANGD_API_KEY="+e2eKey)

	// A2A URL of one agent of B; A presents B's peer token, not B's API key.
	code, body := a.request(t, "POST", "/api/a2a/discover", `{"url":"`+b.url+`/a2a/agents/`+agentID+`","token":"`+peerToken+`"}`)
	if code != 201 {
		t.Fatalf("discover: %d %s", code, body)
	}
	ext := decodeMap(t, body)
	if ext["name"] != "assistant" || ext["capabilities"].(map[string]any)["streaming"] != true {
		t.Fatalf("B's card as A sees it: %s", body)
	}
	st := a.sendOutbound(t, ext["id"].(string), "hello B")
	raw, _ := json.Marshal(st)
	if st["status"] != "completed" || st["streaming"] != true || !strings.Contains(string(raw), "B's agent says: hello B") {
		t.Fatalf("A's outbound task: %s", raw)
	}
	// B holds the task A created, under A's peer identity.
	remote := st["remote_task_id"].(string)
	code, body = b.request(t, "GET", "/a2a/tasks/"+remote, "")
	if code != 200 || decodeMap(t, body)["status"] != "completed" {
		t.Fatalf("B's task: %d %s", code, body)
	}
	// B's shared endpoint (one agent: it takes the message) through B's root URL.
	code, body = a.request(t, "POST", "/api/a2a/discover", `{"url":"`+b.url+`","token":"`+peerToken+`"}`)
	if code != 201 {
		t.Fatalf("discover B's root: %d %s", code, body)
	}
	st = a.sendOutbound(t, decodeMap(t, body)["id"].(string), "via the root card")
	raw, _ = json.Marshal(st)
	if st["status"] != "completed" || !strings.Contains(string(raw), "B's agent says: via the root card") {
		t.Fatalf("via B's root card: %s", raw)
	}
	// Both daemons saw the route on their comms bus: A's topology has B's
	// agent as a node with an a2a edge to it, B's an a2a edge from A's peer
	// identity to its agent.
	waitUntil(t, "the A2A routes in the topologies", func() bool {
		_, ta := a.request(t, "GET", "/api/comms/topology", "")
		_, tb := b.request(t, "GET", "/api/comms/topology", "")
		return strings.Contains(string(ta), `"id":"a2a:`+ext["id"].(string)+`","kind":"a2a_agent","name":"assistant"`) &&
			strings.Contains(string(ta), `"to":"a2a:`+ext["id"].(string)+`","kind":"a2a"`) &&
			strings.Contains(string(tb), `"from":"a2a:peer:daemon-a","to":"agent:`+agentID+`","kind":"a2a"`)
	})
	if code, body := a.request(t, "GET", "/api/comms/events?type=a2a.task.sent", ""); code != 200 || !strings.Contains(string(body), `"type":"a2a.task.sent"`) {
		t.Fatalf("A's bus: %d %s", code, body)
	}
	// A wrong token is refused by B, and A reports it without retrying.
	code, body = a.request(t, "POST", "/api/a2a/discover", `{"url":"`+b.url+`/a2a/agents/`+agentID+`","token":"wrong-token-0123456789"}`)
	if code != 200 {
		t.Fatalf("rediscover with another token: %d %s", code, body)
	}
	st = a.sendOutbound(t, ext["id"].(string), "let me in")
	if st["status"] != "failed" || !strings.Contains(st["error"].(string), "401") || st["attempts"].(float64) != 1 {
		t.Fatalf("refused by B: %v", st)
	}
}

// The official SDK clients against the binary: the JavaScript client
// (card, SendMessage, GetTask, stream, CancelTask) and the Go client,
// whose CancelTask of a running task stops the agent's provider call.
func TestA2ASDKClientsAgainstTheBinary(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, "")
	p := startFangd(t, t.TempDir(), cfg, append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	id := p.agentOn(t, "coder")

	// Every provider call takes a moment, so the client's "block" task is
	// still running when it cancels it.
	oai.SetLatency(1500 * time.Millisecond)
	out := a2atest.RunClient(t, p.url+"/a2a/agents/"+id+"/", e2eKey)
	raw, _ := json.Marshal(out)
	for _, want := range []string{`"artifact":"echo: hello from js"`, `"state":"TASK_STATE_COMPLETED"`,
		`"stream":["task:TASK_STATE_WORKING","artifact:echo: stream from js","status:TASK_STATE_COMPLETED"]`,
		`"JsonRpcTaskNotCancelableError"`, `"cancel":{`, `"TASK_STATE_CANCELED"`, `"JsonRpcTaskNotFoundError"`} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("JavaScript client: want %s in %s", want, raw)
		}
	}

	// The Go client: a task whose provider call never returns is cancelled,
	// then the same conversation answers at once.
	oai.SetLatency(time.Hour)
	c := goClient(t, p.url+"/a2a/agents/"+id)
	ctx := context.Background()
	res, err := c.SendMessage(ctx, &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("think forever")),
		Config: &sdk.SendMessageConfig{ReturnImmediately: true}})
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*sdk.Task)
	waitUntil(t, "the provider call", func() bool {
		for _, r := range oai.Requests() {
			if r.Messages[len(r.Messages)-1].Content == "think forever" {
				return true
			}
		}
		return false
	})
	got, err := c.CancelTask(ctx, &sdk.CancelTaskRequest{ID: task.ID})
	if err != nil || got.Status.State != sdk.TaskStateCanceled {
		t.Fatalf("CancelTask: %+v %v", got, err)
	}
	oai.SetLatency(0)
	follow := sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("are you free?"))
	follow.ContextID = task.ContextID
	done := make(chan error, 1)
	go func() {
		res, err := c.SendMessage(ctx, &sdk.SendMessageRequest{Message: follow})
		if err == nil && res.(*sdk.Task).Status.State != sdk.TaskStateCompleted {
			err = fmt.Errorf("follow-up ended %s", res.(*sdk.Task).Status.State)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // the provider timeout is 120 s
		t.Fatal("the cancelled turn still holds the agent's session: its provider call was not cancelled")
	}
}

// A task that was running when fangd was killed is failed, with a reason,
// after the restart.
func TestA2AInterruptedTaskFailsAfterKill(t *testing.T) {
	t.Parallel()
	oai, home, p, c := startMidTurnA2A(t)
	res, err := c.SendMessage(context.Background(), &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("long job")),
		Config: &sdk.SendMessageConfig{ReturnImmediately: true}})
	if err != nil {
		t.Fatal(err)
	}
	taskID := string(res.(*sdk.Task).ID)
	failedAfterKill(t, p, oai, home, taskID)
}

// startMidTurnA2A starts a daemon in a new home whose agent "slow" stays
// mid-turn (the model answers after an hour) and an A2A client for it.
func startMidTurnA2A(t *testing.T) (*llmtest.Fake, string, *proc, *a2aclient.Client) {
	oai, _, cfg := fakes(t, "")
	home := t.TempDir()
	p := startFangd(t, home, cfg, append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	id := p.agentOn(t, "slow")
	oai.SetLatency(time.Hour)
	return oai, home, p, goClient(t, p.url+"/a2a/agents/"+id)
}

// failedAfterKill kills p mid-turn, restarts the daemon on home and
// checks that taskID is failed with the restart as its reason.
func failedAfterKill(t *testing.T, p *proc, oai *llmtest.Fake, home, taskID string) {
	t.Helper()
	p.stop(t, syscall.SIGKILL)
	oai.SetLatency(0)
	p = startFangd(t, home, "", append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	code, body := p.request(t, "GET", "/a2a/tasks/"+taskID, "")
	m := decodeMap(t, body)
	if code != 200 || m["status"] != "failed" || !strings.Contains(m["error"].(string), "restarted") {
		t.Fatalf("after kill -9: %d %s", code, body)
	}
}

// A blocking SendMessage whose turn runs longer than the first write's
// delay is stored as working while it runs (only quick turns are stored
// once, in their final state), so a kill -9 mid-turn leaves it failed,
// with a reason, after the restart.
func TestA2ALongBlockingTaskFailsAfterKill(t *testing.T) {
	oai, home, p, c := startMidTurnA2A(t)
	go func() {
		// Its answer never comes: the daemon is killed mid-turn.
		_, _ = c.SendMessage(context.Background(), &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("long job"))})
	}()
	var taskID string
	waitUntil(t, "the running task to be stored", func() bool {
		list, err := c.ListTasks(context.Background(), &sdk.ListTasksRequest{})
		if err != nil || len(list.Tasks) != 1 || list.Tasks[0].Status.State != sdk.TaskStateWorking {
			return false
		}
		taskID = string(list.Tasks[0].ID)
		return true
	})
	failedAfterKill(t, p, oai, home, taskID)
}

// Every task a blocking SendMessage answered as completed is stored as
// completed: the answer waits for the task's final write (overlapped with
// the request's audit entry, not skipped), so a kill -9 right after the
// last answer loses none of them.
func TestA2ACompletedAnswersSurviveKill(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	home := t.TempDir()
	p := startFangd(t, home, cfg, append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	id := p.agentOn(t, "quick")
	c := goClient(t, p.url+"/a2a/agents/"+id)
	const n = 24
	ids := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			res, err := c.SendMessage(context.Background(), &sdk.SendMessageRequest{
				Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart(fmt.Sprintf("job %d", i)))})
			if err != nil {
				errs <- err
				return
			}
			task, ok := res.(*sdk.Task)
			if !ok || task.Status.State != sdk.TaskStateCompleted {
				errs <- fmt.Errorf("answer %#v: want a completed task", res)
				return
			}
			ids <- string(task.ID)
		}()
	}
	var got []string
	for range n {
		select {
		case id := <-ids:
			got = append(got, id)
		case err := <-errs:
			t.Fatal(err)
		}
	}
	p.stop(t, syscall.SIGKILL)
	p = startFangd(t, home, "", append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	for _, taskID := range got {
		code, body := p.request(t, "GET", "/a2a/tasks/"+taskID, "")
		if m := decodeMap(t, body); code != 200 || m["status"] != "completed" {
			t.Fatalf("task %s answered completed before kill -9, after the restart: %d %s", taskID, code, body)
		}
	}
}

func goClient(t *testing.T, base string) *a2aclient.Client { return a2atest.GoClient(t, base, e2eKey) }

var waitUntil = kerneltest.WaitFor

// Push notifications go through the webhook engine: the client's URL gets
// each update as the spec's StreamResponse JSON, with the A2A token it
// registered and a Standard Webhooks signature keyed by that token.
func TestA2APushNotificationsThroughTheWebhookEngine(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, a2aConfig)
	p := startFangd(t, t.TempDir(), cfg, append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	id := p.agentOn(t, "notifier")
	type push struct {
		token, sig, id, ts string
		body               []byte
	}
	got := make(chan push, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- push{token: r.Header.Get("A2A-Notification-Token"), sig: r.Header.Get("webhook-signature"),
			id: r.Header.Get("webhook-id"), ts: r.Header.Get("webhook-timestamp"), body: b}
	}))
	defer recv.Close()

	res, err := http.Get(p.url + "/.well-known/agent-card.json")
	if err != nil {
		t.Fatal(err)
	}
	card, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(card), `"pushNotifications":true`) {
		t.Fatalf("card does not offer push: %s", card)
	}
	c := goClient(t, p.url+"/a2a/agents/"+id)
	_, err = c.SendMessage(context.Background(), &sdk.SendMessageRequest{
		Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("tell my webhook")),
		Config:  &sdk.SendMessageConfig{PushConfig: &sdk.PushConfig{ID: "hook1", URL: recv.URL + "/a2a-updates", Token: "client-token-0123456789"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var final push
	deadline := time.After(20 * time.Second)
	for final.body == nil {
		select {
		case p := <-got:
			var sr sdk.StreamResponse
			if err := json.Unmarshal(p.body, &sr); err != nil {
				t.Fatalf("push body is not a StreamResponse: %s", p.body)
			}
			if st, ok := sr.Event.(*sdk.TaskStatusUpdateEvent); ok && st.Status.State == sdk.TaskStateCompleted {
				final = p
			}
		case <-deadline:
			t.Fatal("no push for the completed task")
		}
	}
	if final.token != "client-token-0123456789" || final.id == "" {
		t.Fatalf("push headers: token %q id %q", final.token, final.id)
	}
	mac := hmac.New(sha256.New, []byte("client-token-0123456789"))
	mac.Write([]byte(final.id + "." + final.ts + "."))
	mac.Write(final.body)
	if final.sig != "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Fatalf("webhook-signature %q does not verify with the client's token", final.sig)
	}
	// A push URL in a private network is refused with the spec's error.
	_, err = c.SendMessage(context.Background(), &sdk.SendMessageRequest{
		Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("x")),
		Config:  &sdk.SendMessageConfig{PushConfig: &sdk.PushConfig{URL: "http://10.9.8.7/hook"}},
	})
	if !errors.Is(err, sdk.ErrInvalidParams) {
		t.Fatalf("private push URL: %v", err)
	}
}
