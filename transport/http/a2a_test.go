package http

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"iter"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2aclient"
	"github.com/a2aproject/a2a-go/v2/a2aclient/agentcard"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/a2aproject/a2a-go/v2/a2asrv"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/a2a"
	"github.com/fangd/fangd/actors/a2a/a2atest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

const peerTok = "peer-token-0123456789abcdef"

// stubAgents is a two-agent runtime whose turns echo, or block until
// cancelled when the text is "block".
type stubAgents struct {
	started chan struct{}
	ended   chan error
}

var (
	agentA = a2a.Agent{ID: "aaaaaaaa-0000-4000-8000-000000000001", Name: "alpha", Description: "first agent", Tools: []string{"web_fetch"}, Available: true}
	agentB = a2a.Agent{ID: "bbbbbbbb-0000-4000-8000-000000000002", Name: "beta", Available: true}
)

func (s *stubAgents) Resolve(_ context.Context, ref string) (a2a.Agent, error) {
	for _, a := range []a2a.Agent{agentA, agentB} {
		if a.ID == ref || a.Name == ref {
			return a, nil
		}
	}
	return a2a.Agent{}, kernel.NotFound("agent %s not found", ref)
}

func (s *stubAgents) List(context.Context) ([]a2a.Agent, error) {
	return []a2a.Agent{agentA, agentB}, nil
}

func (s *stubAgents) Turn(ctx context.Context, req a2a.TurnRequest) (a2a.TurnResult, error) {
	if req.Text == "block" {
		s.started <- struct{}{}
		<-ctx.Done()
		s.ended <- ctx.Err()
		return a2a.TurnResult{}, ctx.Err()
	}
	return a2a.TurnResult{Text: "echo: " + req.Text}, nil
}

// loopbackGuard allows loopback and refuses 10.0.0.0/8, like a policy with
// loopback allowlisted.
type loopbackGuard struct{}

func (loopbackGuard) Check(_ context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, errors.New("url does not parse")
	}
	if strings.HasPrefix(u.Hostname(), "10.") {
		return nil, errors.New("host " + u.Hostname() + " is a private address, which is not allowed")
	}
	return u, nil
}

func (loopbackGuard) Client(timeout time.Duration) *nethttp.Client {
	return &nethttp.Client{Timeout: timeout, CheckRedirect: func(*nethttp.Request, []*nethttp.Request) error { return nethttp.ErrUseLastResponse }}
}

type a2aServer struct {
	*testServer
	svc    *a2a.Service
	agents *stubAgents
}

func newA2AServer(t testing.TB, mutate ...func(*Config)) *a2aServer {
	t.Helper()
	return newA2AServerWith(t, nil, mutate...)
}

// newA2AServerWith is newA2AServer with extra set on the server before
// it serves (cluster fakes).
func newA2AServerWith(t testing.TB, extra func(*Server), mutate ...func(*Config)) *a2aServer {
	t.Helper()
	b := newTestBase(t)
	vault, err := store.OpenVault(b.db, b.home)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.A2APeers = []PeerToken{{Name: "friend", Token: peerTok}}
	for _, m := range mutate {
		m(&cfg)
	}
	agents := &stubAgents{started: make(chan struct{}, 10), ended: make(chan error, 10)}
	opts := a2a.DefaultOptions()
	opts.Agents, opts.Guard, opts.Vault, opts.Version = agents, loopbackGuard{}, vault, "test"
	opts.RetryBackoff = kernel.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	opts.PollInterval = 20 * time.Millisecond
	// Streams write a keep-alive well within the write timeout, which each
	// write pushes forward (as cmd/fangd sets it).
	opts.StreamKeepAlive = min(15*time.Second, cfg.WriteTimeout/3)
	svc, err := a2a.Start(b.k, b.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Deps{LogLevel: new(testLevel), Kernel: b.k, Audit: b.al, Store: b.db, Logs: b.ring, A2A: svc})
	if err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		extra(s)
	}
	url := b.serve(t, s)
	svc.SetBaseURL(url)
	return &a2aServer{testServer: b.testServer(s, url), svc: svc, agents: agents}
}

func jsonOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

func TestA2ACardsArePublicWithETags(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	r := ts.do(t, "GET", "/.well-known/agent.json", "")
	if r.status != 200 {
		t.Fatalf("agent.json: %d %s", r.status, r.body)
	}
	seed := jsonOf(t, r.body)
	for _, k := range []string{"name", "description", "url", "version", "capabilities", "skills"} {
		if _, ok := seed[k]; !ok {
			t.Fatalf("seed card lacks %q: %s", k, r.body)
		}
	}
	caps := seed["capabilities"].(map[string]any)
	if caps["streaming"] != true || caps["pushNotifications"] != false || seed["url"] != ts.url+"/a2a" {
		t.Fatalf("seed card %s", r.body)
	}
	if len(seed["skills"].([]any)) != 2 {
		t.Fatalf("want one skill per agent: %s", r.body)
	}
	etag := r.header.Get("ETag")
	if etag == "" || !strings.Contains(r.header.Get("Cache-Control"), "max-age") {
		t.Fatalf("headers %v", r.header)
	}
	if r := ts.do(t, "GET", "/.well-known/agent.json", "", "If-None-Match", etag); r.status != 304 || len(r.body) != 0 {
		t.Fatalf("conditional GET: %d %s", r.status, r.body)
	}

	r = ts.do(t, "GET", "/.well-known/agent-card.json", "")
	if r.status != 200 || r.header.Get("ETag") == "" {
		t.Fatalf("agent-card.json: %d %v", r.status, r.header)
	}
	card := jsonOf(t, r.body)
	ifaces := card["supportedInterfaces"].([]any)
	if len(ifaces) != 2 || card["defaultInputModes"] == nil || card["defaultOutputModes"] == nil {
		t.Fatalf("1.0 card %s", r.body)
	}
	versions := map[string]bool{}
	for _, i := range ifaces {
		m := i.(map[string]any)
		if m["url"] != ts.url+"/a2a" || m["protocolBinding"] != "JSONRPC" {
			t.Fatalf("interface %v", m)
		}
		versions[m["protocolVersion"].(string)] = true
	}
	if !versions["1.0"] || !versions["0.3"] {
		t.Fatalf("versions %v", versions)
	}
	schemes := card["securitySchemes"].(map[string]any)
	if _, ok := schemes["bearer"]; !ok || !strings.Contains(string(r.body), `"Bearer"`) {
		t.Fatalf("security schemes %v", schemes)
	}
	// The SDK's own parser reads it.
	parsed, err := agentcard.DefaultCardParser(r.body)
	if err != nil || parsed.Name != "fangd" || len(parsed.Skills) != 2 {
		t.Fatalf("SDK parse: %+v %v", parsed, err)
	}

	r = ts.do(t, "GET", "/a2a/agents", "")
	if r.status != 200 {
		t.Fatalf("/a2a/agents: %d %s", r.status, r.body)
	}
	list := jsonOf(t, r.body)
	items := list["items"].([]any)
	if len(items) != 2 || list["total"].(float64) != 2 {
		t.Fatalf("local cards %s", r.body)
	}
	first := items[0].(map[string]any)
	if first["name"] != "alpha" || !strings.HasSuffix(first["supportedInterfaces"].([]any)[0].(map[string]any)["url"].(string), "/a2a/agents/"+agentA.ID) {
		t.Fatalf("alpha card %v", first)
	}
	r = ts.do(t, "GET", "/a2a/agents/alpha/.well-known/agent-card.json", "")
	if r.status != 200 || jsonOf(t, r.body)["name"] != "alpha" {
		t.Fatalf("per-agent card: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/a2a/agents/ghost/.well-known/agent-card.json", ""); r.status != 404 {
		t.Fatalf("unknown agent card: %d", r.status)
	}
}

func TestA2ASeedRoutes(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	body := `{"agent_id":"alpha","message":{"role":"user","parts":[{"text":"Review this code"}]}}`
	if r := ts.do(t, "POST", "/a2a/tasks/send", body, "Content-Type", "application/json"); r.status != 401 {
		t.Fatalf("no key: %d %s", r.status, r.body)
	}
	r := ts.authed(t, "POST", "/a2a/tasks/send", body)
	if r.status != 200 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	var task struct {
		TaskID string `json:"task_id"`
		Status string `json:"status"`
		Result struct {
			Role  string `json:"role"`
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.body, &task); err != nil || task.TaskID == "" || task.Status != "completed" ||
		task.Result.Role != "agent" || task.Result.Parts[0].Text != "echo: Review this code" {
		t.Fatalf("seed answer %s", r.body)
	}
	r = ts.authed(t, "GET", "/a2a/tasks/"+task.TaskID, "")
	if r.status != 200 || jsonOf(t, r.body)["status"] != "completed" {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "POST", "/a2a/tasks/"+task.TaskID+"/cancel", "")
	if r.status != 409 || r.envelope(t).Code != "task_not_cancelable" {
		t.Fatalf("cancel finished: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/a2a/tasks/no-such-task", ""); r.status != 404 || r.envelope(t).Code != "task_not_found" {
		t.Fatalf("unknown task: %d %s", r.status, r.body)
	}
	// LibreFang's variant of the body.
	r = ts.authed(t, "POST", "/a2a/tasks/send", `{"params":{"agentId":"`+agentB.ID+`","message":{"role":"user","parts":[{"type":"text","text":"hi"}]}}}`)
	if r.status != 200 || jsonOf(t, r.body)["agent_id"] != agentB.ID {
		t.Fatalf("LibreFang body: %d %s", r.status, r.body)
	}

	bad := []struct {
		body   string
		status int
		code   string
	}{
		{`{"agent_id":"ghost","message":{"parts":[{"text":"x"}]}}`, 404, "not_found"},
		{`{"message":{"parts":[{"text":"x"}]}}`, 400, "missing_agent_id"},
		{`{"agent_id":"alpha"}`, 400, "missing_message"},
		{`{"agent_id":"alpha","message":{"role":"user","parts":[]}}`, 400, "invalid_message"},
		{`{"agent_id":"alpha","message":{"parts":[{"type":"video","text":"x"}]}}`, 400, "invalid_message"},
		{`{"agent_id":"alpha","message":{"parts":[{"type":"file","name":"a.pdf"}]}}`, 400, "unsupported_content"},
		{`{"agent_id":"alpha","message":{"parts":[{"text":"x","colour":"red"}]}}`, 400, "unknown_field"},
		{`{"agent_id":"alpha","message":{"parts":[{"text":"` + strings.Repeat("x", 1<<20) + `"}]}}`, 413, "body_too_large"},
	}
	for _, c := range bad {
		r := ts.authed(t, "POST", "/a2a/tasks/send", c.body)
		if r.status != c.status || r.envelope(t).Code != c.code {
			t.Errorf("%.60s: %d %s, want %d %s", c.body, r.status, r.body, c.status, c.code)
		}
	}
}

func TestA2ASeedCancelStopsTheTurn(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	res := make(chan response, 1)
	go func() {
		res <- ts.authed(t, "POST", "/a2a/tasks/send", `{"agent_id":"alpha","message":{"parts":[{"text":"block"}]}}`)
	}()
	<-ts.agents.started
	// The turn starts while the task's first write commits; the task is
	// listed once it is on disk.
	var list *sdk.ListTasksResponse
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		list, err = ts.svc.Handler("").ListTasks(context.WithValue(context.Background(), a2a.CallerKey, a2a.Caller{Admin: true}), &sdk.ListTasksRequest{})
		if err != nil || len(list.Tasks) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil || len(list.Tasks) != 1 {
		t.Fatalf("list %v %v", list, err)
	}
	id := string(list.Tasks[0].ID)
	r := ts.authed(t, "POST", "/a2a/tasks/"+id+"/cancel", "")
	if r.status != 200 || jsonOf(t, r.body)["status"] != "cancelled" || jsonOf(t, r.body)["task_id"] != id {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if cause := <-ts.agents.ended; !errors.Is(cause, context.Canceled) {
		t.Fatalf("turn ended with %v", cause)
	}
	sent := <-res
	if sent.status != 200 || jsonOf(t, sent.body)["status"] != "cancelled" {
		t.Fatalf("the waiting send got %d %s", sent.status, sent.body)
	}
}

func TestA2AGoClientAgainstFangd(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	ctx := context.Background()
	c := a2atest.GoClient(t, ts.url+"/a2a/agents/"+agentA.ID, testKey)
	res, err := c.SendMessage(ctx, &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("hello from go"))})
	if err != nil {
		t.Fatal(err)
	}
	task := res.(*sdk.Task)
	if task.Status.State != sdk.TaskStateCompleted || task.Artifacts[0].Parts[0].Text() != "echo: hello from go" {
		t.Fatalf("task %+v", task)
	}
	got, err := c.GetTask(ctx, &sdk.GetTaskRequest{ID: task.ID})
	if err != nil || got.Status.State != sdk.TaskStateCompleted {
		t.Fatalf("GetTask %+v %v", got, err)
	}
	if _, err := c.CancelTask(ctx, &sdk.CancelTaskRequest{ID: task.ID}); !errors.Is(err, sdk.ErrTaskNotCancelable) {
		t.Fatalf("CancelTask of finished: %v", err)
	}
	if _, err := c.GetTask(ctx, &sdk.GetTaskRequest{ID: "nope"}); !errors.Is(err, sdk.ErrTaskNotFound) {
		t.Fatalf("GetTask unknown: %v", err)
	}
	var events []sdk.Event
	for ev, err := range c.SendStreamingMessage(ctx, &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("stream"))}) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	if len(events) != 3 {
		t.Fatalf("stream events %#v", events)
	}
	if st, ok := events[2].(*sdk.TaskStatusUpdateEvent); !ok || st.Status.State != sdk.TaskStateCompleted {
		t.Fatalf("last event %#v", events[2])
	}
	list, err := c.ListTasks(ctx, &sdk.ListTasksRequest{})
	if err != nil || list.TotalSize != 2 {
		t.Fatalf("ListTasks %+v %v", list, err)
	}
	// The shared endpoint routes by metadata; a 0.3 client works too.
	legacy := a2aclient.NewFactory(
		a2aclient.WithDefaultsDisabled(),
		a2aclient.WithCompatTransport(a2av0.Version, sdk.TransportProtocolJSONRPC, a2av0.NewJSONRPCTransportFactory(a2av0.JSONRPCTransportConfig{})),
		a2aclient.WithCallInterceptors(a2atest.Bearer{Token: peerTok}),
	)
	card, err := (&agentcard.Resolver{CardParser: a2av0.NewAgentCardParser()}).Resolve(ctx, ts.url)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := legacy.CreateFromCard(ctx, card)
	if err != nil {
		t.Fatal(err)
	}
	req := &sdk.SendMessageRequest{Message: sdk.NewMessage(sdk.MessageRoleUser, sdk.NewTextPart("old client")), Metadata: map[string]any{"agent_id": "beta"}}
	res, err = lc.SendMessage(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if tk := res.(*sdk.Task); tk.Status.State != sdk.TaskStateCompleted || tk.Artifacts[0].Parts[0].Text() != "echo: old client" {
		t.Fatalf("0.3 task %+v", tk)
	}
	// The peer sees its own task, not the API key's.
	if _, err := lc.GetTask(ctx, &sdk.GetTaskRequest{ID: task.ID}); !errors.Is(err, sdk.ErrTaskNotFound) {
		t.Fatalf("peer read another caller's task: %v", err)
	}
}

func rpcBody(t *testing.T, r response) map[string]any {
	t.Helper()
	m := jsonOf(t, r.body)
	if m["jsonrpc"] != "2.0" {
		t.Fatalf("not a JSON-RPC body: %s", r.body)
	}
	return m
}

func rpcCode(t *testing.T, r response) float64 {
	t.Helper()
	e, ok := rpcBody(t, r)["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error in %s", r.body)
	}
	return e["code"].(float64)
}

func TestA2AJSONRPCErrorsUseTheSpecCodes(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	send := `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hi"}]}}}`
	if r := ts.do(t, "POST", "/a2a", send, "Content-Type", "application/json"); r.status != 401 || rpcCode(t, r) != -31401 {
		t.Fatalf("no credentials: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/a2a", send, "Content-Type", "application/json", "Authorization", "Bearer wrong-wrong-wrong-wrong"); r.status != 401 || rpcCode(t, r) != -31401 {
		t.Fatalf("bad credentials: %d %s", r.status, r.body)
	}
	// Two agents and no agent named: invalid params.
	if r := ts.authed(t, "POST", "/a2a", send); rpcCode(t, r) != -32602 {
		t.Fatalf("ambiguous: %s", r.body)
	}
	r := ts.authed(t, "POST", "/a2a/agents/alpha", send)
	res := rpcBody(t, r)["result"].(map[string]any)
	if res["task"].(map[string]any)["status"].(map[string]any)["state"] != "TASK_STATE_COMPLETED" {
		t.Fatalf("per-agent send: %s", r.body)
	}
	cases := []struct {
		name, body string
		headers    []string
		code       float64
	}{
		{"parse error", `{"jsonrpc":"2.0","id":1,`, nil, -32700},
		{"unknown method", `{"jsonrpc":"2.0","id":2,"method":"NoSuchMethod","params":{}}`, nil, -32601},
		{"task not found", `{"jsonrpc":"2.0","id":3,"method":"GetTask","params":{"id":"nope"}}`, nil, -32001},
		{"no parts", `{"jsonrpc":"2.0","id":4,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[]}}}`, nil, -32602},
		{"file part", `{"jsonrpc":"2.0","id":5,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"url":"https://x/y.pdf"}]}}}`, nil, -32005},
		{"version", send, []string{"A2A-Version", "2.0"}, -32009},
		{"0.3 unknown task", `{"jsonrpc":"2.0","id":6,"method":"tasks/get","params":{"id":"nope"}}`, nil, -32001},
		{"extended card", `{"jsonrpc":"2.0","id":7,"method":"GetExtendedAgentCard","params":{}}`, nil, -32007},
		{"push not supported", `{"jsonrpc":"2.0","id":8,"method":"CreateTaskPushNotificationConfig","params":{"taskId":"x","url":"http://127.0.0.1:1/"}}`, nil, -32003},
	}
	for _, c := range cases {
		r := ts.authed(t, "POST", "/a2a/agents/alpha", c.body, c.headers...)
		if got := rpcCode(t, r); got != c.code {
			t.Errorf("%s: code %v, want %v: %s", c.name, got, c.code, r.body)
		}
	}
	big := `{"jsonrpc":"2.0","id":9,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"` + strings.Repeat("x", 1<<20) + `"}]}}}`
	if r := ts.authed(t, "POST", "/a2a/agents/alpha", big); r.status != 413 || rpcCode(t, r) != -32600 {
		t.Fatalf("oversized: %d %.200s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/a2a/agents/ghost", send); r.status != 404 || rpcCode(t, r) != -32602 {
		t.Fatalf("unknown agent endpoint: %d %s", r.status, r.body)
	}
	// Cancel of a finished task through JSON-RPC: TaskNotCancelable.
	id := res["task"].(map[string]any)["id"].(string)
	r = ts.authed(t, "POST", "/a2a/agents/alpha", `{"jsonrpc":"2.0","id":10,"method":"CancelTask","params":{"id":"`+id+`"}}`)
	if rpcCode(t, r) != -32002 {
		t.Fatalf("cancel finished: %s", r.body)
	}
	// 0.3 names on the same endpoint.
	r = ts.authed(t, "POST", "/a2a/agents/alpha", `{"jsonrpc":"2.0","id":11,"method":"message/send","params":{"message":{"kind":"message","messageId":"m2","role":"user","parts":[{"kind":"text","text":"legacy"}]}}}`)
	legacy := rpcBody(t, r)["result"].(map[string]any)
	if legacy["kind"] != "task" || legacy["status"].(map[string]any)["state"] != "completed" {
		t.Fatalf("0.3 message/send: %s", r.body)
	}
}

func TestA2AStreamingOverSSE(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	resp := a2aStream(t, ts, "s1", "sse")
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream answer %d %v", resp.StatusCode, resp.Header)
	}
	var kinds []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var msg struct {
			Result map[string]json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			t.Fatalf("bad event %q", line)
		}
		for k := range msg.Result {
			kinds = append(kinds, k)
		}
	}
	if strings.Join(kinds, ",") != "task,artifactUpdate,statusUpdate" {
		t.Fatalf("events %v", kinds)
	}
}

func TestA2APeerTokensOnlyOpenTheProtocolRoutes(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	h := []string{"Authorization", "Bearer " + peerTok, "Content-Type", "application/json"}
	r := ts.do(t, "POST", "/a2a/tasks/send", `{"agent_id":"alpha","message":"hello"}`, h...)
	if r.status != 200 {
		t.Fatalf("peer on protocol route: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/api/a2a/agents", "", h...); r.status != 401 {
		t.Fatalf("peer token on management route: %d", r.status)
	}
	// The API key's tasks are not the peer's.
	own := ts.authed(t, "POST", "/a2a/tasks/send", `{"agent_id":"alpha","message":"mine"}`)
	id := jsonOf(t, own.body)["task_id"].(string)
	if r := ts.do(t, "GET", "/a2a/tasks/"+id, "", h...); r.status != 404 {
		t.Fatalf("peer read the API key's task: %d", r.status)
	}
}

// sdkPeer is an external agent built with the official SDK: it answers
// each message with one text artifact, answer's (whose error refuses the
// message instead).
type sdkPeer func(ec *a2asrv.ExecutorContext) (string, error)

// remotePeer answers "remote: <text>".
var remotePeer = sdkPeer(func(ec *a2asrv.ExecutorContext) (string, error) {
	return "remote: " + ec.Message.Parts[0].Text(), nil
})

func (answer sdkPeer) Execute(ctx context.Context, ec *a2asrv.ExecutorContext) iter.Seq2[sdk.Event, error] {
	return func(yield func(sdk.Event, error) bool) {
		text, err := answer(ec)
		if err != nil {
			yield(nil, err)
			return
		}
		if ec.StoredTask == nil && !yield(sdk.NewSubmittedTask(ec, ec.Message), nil) {
			return
		}
		if !yield(sdk.NewArtifactEvent(ec, sdk.NewTextPart(text)), nil) {
			return
		}
		yield(sdk.NewStatusUpdateEvent(ec, sdk.TaskStateCompleted, nil), nil)
	}
}

func (sdkPeer) Cancel(ctx context.Context, ec *a2asrv.ExecutorContext) iter.Seq2[sdk.Event, error] {
	return func(yield func(sdk.Event, error) bool) {
		yield(sdk.NewStatusUpdateEvent(ec, sdk.TaskStateCanceled, nil), nil)
	}
}

func TestA2AManagementDiscoverSendStatus(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	mux := nethttp.NewServeMux()
	peer := httptest.NewServer(mux)
	defer peer.Close()
	caps := sdk.AgentCapabilities{Streaming: true}
	card := &sdk.AgentCard{Name: "Remote", Description: "sdk peer", Version: "9", Capabilities: caps,
		SupportedInterfaces: []*sdk.AgentInterface{sdk.NewAgentInterface(peer.URL+"/rpc", sdk.TransportProtocolJSONRPC)},
		Skills:              []sdk.AgentSkill{{ID: "s", Name: "S", Description: "d", Tags: []string{}}}}
	mux.Handle("/rpc", a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(remotePeer, a2asrv.WithCapabilityChecks(&caps))))
	mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))

	r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"`+peer.URL+`","token":"remote-secret-token"}`)
	if r.status != 201 {
		t.Fatalf("discover: %d %s", r.status, r.body)
	}
	agent := jsonOf(t, r.body)
	if agent["name"] != "Remote" || agent["has_token"] != true || strings.Contains(string(r.body), "remote-secret-token") {
		t.Fatalf("discovered %s", r.body)
	}
	id := agent["id"].(string)
	if r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"`+peer.URL+`/"}`); r.status != 200 || jsonOf(t, r.body)["id"] != id {
		t.Fatalf("rediscover: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"http://10.0.0.5"}`); r.status != 400 || r.envelope(t).Code != "a2a_ssrf_blocked" {
		t.Fatalf("private address: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"http://127.0.0.1:1"}`); r.status != 502 || r.envelope(t).Code != "connection_refused" {
		t.Fatalf("unreachable: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "GET", "/api/v1/a2a/agents", "")
	if r.status != 200 || jsonOf(t, r.body)["total"].(float64) != 1 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/api/a2a/agents/"+id, ""); r.status != 200 || jsonOf(t, r.body)["card"] == nil {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/api/a2a/agents/nope", ""); r.status != 404 {
		t.Fatalf("unknown: %d", r.status)
	}

	send := `{"agent_id":"` + id + `","message":"Summarize this document"}`
	r = ts.authed(t, "POST", "/api/a2a/send", send, "Idempotency-Key", "k-1")
	if r.status != 202 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	receipt := jsonOf(t, r.body)
	taskID := receipt["task_id"].(string)
	if receipt["status"] != "submitted" {
		t.Fatalf("receipt %s", r.body)
	}
	again := ts.authed(t, "POST", "/api/a2a/send", send, "Idempotency-Key", "k-1")
	if again.status != 202 || string(again.body) != string(r.body) || again.header.Get("Idempotency-Replayed") != "true" {
		t.Fatalf("replay: %d %s", again.status, again.body)
	}
	if r := ts.authed(t, "POST", "/api/a2a/send", `{"agent_id":"`+id+`","message":"other"}`, "Idempotency-Key", "k-1"); r.status != 409 {
		t.Fatalf("key reuse: %d %s", r.status, r.body)
	}
	var st map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = ts.authed(t, "GET", "/api/a2a/tasks/"+taskID+"/status", "")
		st = jsonOf(t, r.body)
		if st["status"] == "completed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	result, _ := st["result"].(map[string]any)
	if st["status"] != "completed" || result == nil || result["parts"].([]any)[0].(map[string]any)["text"] != "remote: Summarize this document" {
		t.Fatalf("status %v", st)
	}
	if r := ts.authed(t, "GET", "/api/a2a/tasks/nope/status", ""); r.status != 404 {
		t.Fatalf("unknown task status: %d", r.status)
	}
	for _, bad := range []string{`{"agent_id":"` + id + `"}`, `{"message":"x"}`, `{"agent_id":"nope","message":"x"}`, `{"agent_id":"` + id + `","message":{"parts":[]}}`} {
		if r := ts.authed(t, "POST", "/api/a2a/send", bad); r.status != 400 && r.status != 404 {
			t.Errorf("%s: %d %s", bad, r.status, r.body)
		}
	}
	if r := ts.authed(t, "DELETE", "/api/a2a/agents/"+id, ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/api/a2a/agents/"+id, ""); r.status != 404 {
		t.Fatalf("after delete: %d", r.status)
	}
}

// LibreFang's client speaks the early draft: it discovers <base>/a2a and
// POSTs JSON-RPC "tasks/send" there, expecting its own task shape.
func TestA2ALibreFangDraftTasksSend(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	if r := ts.do(t, "GET", "/a2a/.well-known/agent.json", ""); r.status != 200 || jsonOf(t, r.body)["url"] != ts.url+"/a2a" {
		t.Fatalf("card under /a2a: %d %s", r.status, r.body)
	}
	r := ts.authed(t, "POST", "/a2a", `{"jsonrpc":"2.0","id":1,"method":"tasks/send","params":{"agentId":"`+agentB.ID+`","sessionId":"lf-session","message":{"role":"user","parts":[{"type":"text","text":"from librefang"}]}}}`)
	res, ok := rpcBody(t, r)["result"].(map[string]any)
	if !ok {
		t.Fatalf("tasks/send: %s", r.body)
	}
	msgs := res["messages"].([]any)
	last := msgs[len(msgs)-1].(map[string]any)["parts"].([]any)[0].(map[string]any)
	if res["status"].(map[string]any)["state"] != "completed" || res["sessionId"] != "lf-session" || res["agentId"] != agentB.ID ||
		last["type"] != "text" || last["text"] != "echo: from librefang" {
		t.Fatalf("LibreFang task: %s", r.body)
	}
	r = ts.authed(t, "POST", "/a2a/agents/alpha", `{"jsonrpc":"2.0","id":2,"method":"tasks/send","params":{"message":{"role":"user","parts":[{"type":"file","name":"x.pdf"}]}}}`)
	if rpcCode(t, r) != -32005 {
		t.Fatalf("file part: %s", r.body)
	}
	r = ts.authed(t, "POST", "/a2a/agents/alpha", `{"jsonrpc":"2.0","id":3,"method":"tasks/send"}`)
	if rpcCode(t, r) != -32602 {
		t.Fatalf("no params: %s", r.body)
	}
}

// SendMessage's shortcut hands the SDK the A2A-* headers, whatever their
// case, and none of the others (the bearer token among them).
func TestA2AServiceParamsKeepsOnlyA2AHeaders(t *testing.T) {
	var h fasthttp.RequestHeader
	h.DisableNormalizing()
	h.Set("Authorization", "Bearer secret")
	h.Set("Content-Type", "application/json")
	h.Set("a2a-version", "1.0")
	h.Add("A2A-Extensions", "https://x/ext1")
	h.Add("A2A-Extensions", "https://x/ext2")
	h.Set("A2A-", "empty name")
	got := a2aServiceParams(&h)
	want := nethttp.Header{"A2a-Version": {"1.0"}, "A2a-Extensions": {"https://x/ext1", "https://x/ext2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("service params %v, want %v", got, want)
	}
	var none fasthttp.RequestHeader
	none.Set("Authorization", "Bearer secret")
	if got := a2aServiceParams(&none); got != nil {
		t.Fatalf("no A2A headers: %v, want nil", got)
	}
}
