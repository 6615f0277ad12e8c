package http

import (
	"context"
	"encoding/json"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/webhook"
)

// fakeAgents stands in for the agent runtime.
type fakeAgents struct {
	agents []comms.Agent
	turns  atomic.Int32
}

func (f *fakeAgents) Resolve(_ context.Context, ref string) (*comms.Agent, error) {
	for i := range f.agents {
		if f.agents[i].ID == ref || f.agents[i].Name == ref {
			a := f.agents[i]
			return &a, nil
		}
	}
	return nil, kernel.NotFound("agent %s not found", ref)
}

func (f *fakeAgents) List(context.Context) ([]comms.Agent, error) { return f.agents, nil }

func (f *fakeAgents) Turn(_ context.Context, id, _, msg string) (*comms.TurnResult, error) {
	f.turns.Add(1)
	return &comms.TurnResult{Response: "reply to " + msg, InputTokens: 7, OutputTokens: 5}, nil
}

// fakeChannels records what was queued for each channel.
type fakeChannels struct {
	mu   sync.Mutex
	sent []string
}

func (f *fakeChannels) Has(name string) bool { return name == "telegram" }

func (f *fakeChannels) Send(_ context.Context, name, chat, content string) error {
	f.mu.Lock()
	f.sent = append(f.sent, name+"/"+chat+": "+content)
	f.mu.Unlock()
	return nil
}

func (f *fakeChannels) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

const testHookToken = "hook-token-for-tests-0123456789abcdef"

type commsServer struct {
	*testServer
	agents   *fakeAgents
	channels *fakeChannels
}

func newCommsServer(t *testing.T) *commsServer {
	t.Helper()
	return newCommsServerWith(t, nil)
}

// newCommsServerWith lets a test change the webhook engine's options.
func newCommsServerWith(t *testing.T, hooks func(*webhook.Options)) *commsServer {
	t.Helper()
	cs := &commsServer{agents: &fakeAgents{agents: []comms.Agent{
		{ID: "a-1", Name: "coder", Description: "reviews Go code", Tags: []string{"code"}, State: "running", Model: "fake/m"},
		{ID: "a-2", Name: "writer", Description: "writes docs", Tags: []string{"docs"}, State: "running", Model: "fake/m"},
	}}, channels: &fakeChannels{}}
	cs.testServer = newTestServer(t, nil, func(s *Server) {
		k, db := s.deps.Kernel, s.deps.Store
		bus := testBus(t, s, comms.BusOptions{MaxStreamsPerKey: 3})
		router, err := comms.StartRouter(k, db, comms.RouterOptions{Bus: bus, Audit: s.deps.Audit, Agents: cs.agents,
			Channels: cs.channels, LoopMaxBounces: 3, LoopWindow: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		eng := testWebhooks(t, s, bus, testVault(t, s), hooks)
		s.deps.Bus, s.deps.Router, s.deps.Webhooks = bus, router, eng
		s.SetHooks(HooksConfig{Token: testHookToken, MaxPayload: 64 << 10})
	})
	return cs
}

func decodeTo[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	return v
}

func TestCommsSendTaskTopologyAndEvents(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	r := ts.authed(t, "POST", "/api/comms/send", `{"to":"agent:coder","content":"Please review the latest PR","from":"system"}`)
	got := decodeTo[map[string]any](t, r)
	if r.status != 200 || got["status"] != "delivered" || got["response"] != "reply to Please review the latest PR" ||
		got["agent_id"] != "a-1" || got["ok"] != true || !strings.HasPrefix(got["message_id"].(string), "msg-") {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	// A free turn (the fake prices nothing) still says cost_usd 0, as
	// /message does; it was left out.
	if got["cost_usd"] != float64(0) || got["input_tokens"] != float64(7) || got["output_tokens"] != float64(5) {
		t.Fatalf("send lacks cost_usd or tokens: %s", r.body)
	}
	// LibreFang's handler shape works too (CommsSendRequest: thread_id is
	// echoed; attachments, image URLs, are refused: agents take text).
	r = ts.authed(t, "POST", "/api/v1/comms/send", `{"from_agent_id":"a-2","to_agent_id":"a-1","message":"hi","thread_id":"th-1","attachments":[]}`)
	got = decodeTo[map[string]any](t, r)
	if r.status != 200 || got["ok"] != true || got["response"] != "reply to hi" || got["input_tokens"] == nil || got["output_tokens"] == nil || got["thread_id"] != "th-1" {
		t.Fatalf("librefang shape: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/comms/send", `{"from_agent_id":"a-2","to_agent_id":"a-1","message":"hi","attachments":[{"url":"https://x/y.png"}]}`); r.status != 400 || r.envelope(t).Code != "unsupported_field" {
		t.Fatalf("attachments: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "POST", "/api/comms/send", `{"to":"channel:telegram:42","content":"hello chat"}`)
	if got := decodeTo[map[string]any](t, r); r.status != 200 || got["status"] != "queued" || got["cost_usd"] != float64(0) ||
		got["input_tokens"] != float64(0) || ts.channels.list()[0] != "telegram/42: hello chat" {
		t.Fatalf("channel send: %d %s %v", r.status, r.body, ts.channels.list())
	}
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"to":"agent:ghost","content":"x"}`, 404, "not_found"},
		{`{"to":"channel:slack:1","content":"x"}`, 404, "not_found"},
		{`{"to":"mars:x","content":"x"}`, 400, "invalid_input"},
		{`{"content":"x"}`, 400, "invalid_input"},
		{`{"to":"agent:coder","content":""}`, 400, "invalid_input"},
		{`{"to":"agent:coder","content":"x","bogus":1}`, 400, "unknown_field"},
		{`{"to":"agent:coder","content":"` + strings.Repeat("y", comms.MaxMessageChars+1) + `"}`, 413, "message_too_large"},
	} {
		r := ts.authed(t, "POST", "/api/comms/send", c.body)
		if r.status != c.status || r.envelope(t).Code != c.code {
			t.Errorf("%.60s: %d %s", c.body, r.status, r.body)
		}
	}

	r = ts.authed(t, "POST", "/api/comms/task", `{"title":"Review the code","description":"check the Go code for races","tags":["code"]}`)
	task := decodeTo[comms.Task](t, r)
	if r.status != 201 || task.AssignedTo != "a-1" || task.Status != "running" || task.Reason == "" || decodeTo[map[string]any](t, r)["ok"] != true {
		t.Fatalf("task: %d %s", r.status, r.body)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		r := ts.authed(t, "GET", "/api/comms/tasks/"+task.ID, "")
		return r.status == 200 && decodeTo[comms.Task](t, r).Status == "completed"
	})
	if r := ts.authed(t, "GET", "/api/comms/tasks/task-nope", ""); r.status != 404 {
		t.Fatalf("unknown task: %d", r.status)
	}
	if r := ts.authed(t, "POST", "/api/comms/task", `{"title":""}`); r.status != 400 {
		t.Fatalf("empty title: %d", r.status)
	}

	kerneltest.WaitFor(t, "condition", func() bool {
		topo := decodeTo[comms.Topology](t, ts.authed(t, "GET", "/api/comms/topology", ""))
		return len(topo.Edges) == 4
	})
	topo := decodeTo[comms.Topology](t, ts.authed(t, "GET", "/api/comms/topology", ""))
	// LibreFang's TopoNode {id, name, state, model}: agents say their model.
	for _, n := range topo.Nodes {
		if n.Kind == "agent" && n.Model == "" {
			t.Fatalf("agent node without its model: %+v", n)
		}
	}
	edges := map[string]int{}
	for _, e := range topo.Edges {
		edges[e.From+">"+e.To+":"+e.Kind] = e.Messages
	}
	for _, want := range []string{"system>agent:a-1:agent_message", "agent:a-2>agent:a-1:agent_message",
		"system>channel:telegram:42:channel_message", "task:" + task.ID + ">agent:a-1:task"} {
		if edges[want] != 1 {
			t.Fatalf("edge %s missing: %v", want, edges)
		}
	}
	// Paged: the same offset and limit over nodes and edges, the totals
	// and the next offset added to the seed's {nodes, edges}.
	pg := decodeTo[topologyPage](t, ts.authed(t, "GET", "/api/comms/topology?limit=3&offset=2", ""))
	if len(pg.Edges) != 2 || pg.TotalEdges != 4 || pg.TotalNodes != len(topo.Nodes) || len(pg.Nodes) != min(3, max(0, len(topo.Nodes)-2)) {
		t.Fatalf("topology page %+v (all: %d nodes)", pg, len(topo.Nodes))
	}
	if (pg.Next != nil) != (len(topo.Nodes) > 5) {
		t.Fatalf("next_offset %v with %d nodes", pg.Next, len(topo.Nodes))
	}

	r = ts.authed(t, "GET", "/api/comms/events?limit=2&type=message.*", "")
	evs := decodeTo[struct {
		Items []comms.Event `json:"items"`
		Total int           `json:"total"`
	}](t, r)
	if len(evs.Items) != 2 || evs.Items[0].ID < evs.Items[1].ID || evs.Total < 6 || !strings.HasPrefix(evs.Items[0].Type, "message.") {
		t.Fatalf("events: %s", r.body)
	}
	// LibreFang's CommsEvent fields beside the seed's.
	for _, e := range decodeTo[struct{ Items []map[string]any }](t, r).Items {
		if e["kind"] == nil || e["source_id"] == nil || e["source_name"] == nil || e["target_id"] == nil || e["target_name"] == nil {
			t.Fatalf("event without LibreFang's fields: %v", e)
		}
	}
	for _, q := range []string{"limit=0", "limit=501", "type=bogus", "since_id=-1"} {
		if r := ts.authed(t, "GET", "/api/comms/events?"+q, ""); r.status != 400 {
			t.Errorf("%s: %d", q, r.status)
		}
	}
}

func TestLoopGuardOverHTTP(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	for i := range 3 {
		from, to := "agent:coder", "agent:writer"
		if i%2 == 1 {
			from, to = to, from
		}
		if r := ts.authed(t, "POST", "/api/comms/send", fmt.Sprintf(`{"from":%q,"to":%q,"content":"ping %d"}`, from, to, i)); r.status != 200 {
			t.Fatalf("bounce %d: %d %s", i, r.status, r.body)
		}
	}
	r := ts.authed(t, "POST", "/api/comms/send", `{"from":"agent:writer","to":"agent:coder","content":"again"}`)
	if r.status != 429 || r.envelope(t).Code != "loop_blocked" {
		t.Fatalf("4th bounce: %d %s", r.status, r.body)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		for _, e := range ts.recent(t, 20) {
			if e.EventType == "loop_blocked" && e.Outcome == "denied" {
				return true
			}
		}
		return false
	})
	sec := decodeTo[securityStatus](t, ts.authed(t, "GET", "/api/security", ""))
	if sec.Systems["loop_guard"] != kernel.StateActive || sec.Systems["ssrf_protection"] != kernel.StateActive {
		t.Fatalf("security %v", sec.Systems)
	}
}

func TestHooksAgentAndWake(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	hook := func(path, body string, token string) response {
		return ts.do(t, "POST", path, body, "Content-Type", "application/json", "Authorization", "Bearer "+token)
	}
	r := hook("/hooks/agent", `{"message":"summarise the news","agent":"writer","deliver":"channel:telegram:7"}`, testHookToken)
	got := decodeTo[map[string]any](t, r)
	if r.status != 200 || got["status"] != "completed" || got["agent_id"] != "a-2" || got["response"] != "reply to summarise the news" ||
		got["usage"].(map[string]any)["input_tokens"] != 7.0 || got["delivered_to"] != "channel:telegram:7" {
		t.Fatalf("hooks/agent: %d %s", r.status, r.body)
	}
	if sent := ts.channels.list(); len(sent) != 1 || sent[0] != "telegram/7: reply to summarise the news" {
		t.Fatalf("not delivered to the channel: %v", sent)
	}
	// No agent named: the first one.
	if r := hook("/api/hooks/agent", `{"message":"hi"}`, testHookToken); r.status != 200 || decodeTo[map[string]any](t, r)["agent_id"] != "a-1" {
		t.Fatalf("default agent: %d %s", r.status, r.body)
	}
	// LibreFang's AgentHookPayload: deliver is a bool with the target in
	// channel, timeout_secs bounds the turn.
	r = hook("/api/hooks/agent", `{"message":"again","agent":"writer","deliver":true,"channel":"telegram:8","timeout_secs":30}`, testHookToken)
	if got := decodeTo[map[string]any](t, r); r.status != 200 || got["status"] != "completed" || got["delivered_to"] != "channel:telegram:8" {
		t.Fatalf("librefang deliver: %d %s", r.status, r.body)
	}
	if sent := ts.channels.list(); len(sent) != 2 || sent[1] != "telegram/8: reply to again" {
		t.Fatalf("not delivered the LibreFang way: %v", sent)
	}
	if r := hook("/api/hooks/agent", `{"message":"x","deliver":false,"timeout_secs":120}`, testHookToken); r.status != 200 {
		t.Fatalf("deliver false: %d %s", r.status, r.body)
	}
	turns := ts.agents.turns.Load()
	for _, c := range []struct {
		path, body, token string
		status            int
	}{
		{"/hooks/agent", `{"message":"x","agent":"ghost"}`, testHookToken, 404},
		{"/hooks/agent", `{"message":"x","deliver":"channel:slack:1"}`, testHookToken, 404},
		{"/hooks/agent", `{"message":"x","deliver":"agent:coder"}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","deliver":true}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","deliver":true,"channel":"telegram"}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","channel":"telegram:1"}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","deliver":"channel:telegram:1","channel":"telegram:1"}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","deliver":1}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","timeout_secs":5}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","timeout_secs":601}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x","model":"gpt-4o"}`, testHookToken, 400},
		{"/hooks/agent", `{"message":""}`, testHookToken, 400},
		{"/hooks/agent", `{"message":"x"}`, "wrong-token", 401},
		{"/hooks/agent", `{"message":"x"}`, testKey, 401},
		{"/hooks/wake", `{"text":"x","mode":"sometime"}`, testHookToken, 400},
	} {
		r := hook(c.path, c.body, c.token)
		if r.status != c.status {
			t.Errorf("%s %s: %d %s", c.path, c.body, r.status, r.body)
		}
		if c.status == 401 && (r.envelope(t).Code != "webhook_invalid_token" || r.header.Get("WWW-Authenticate") == "") {
			t.Errorf("401 without the hook challenge: %s", r.body)
		}
	}
	if ts.agents.turns.Load() != turns {
		t.Fatal("a refused hook ran an agent turn")
	}
	r = hook("/hooks/wake", `{"text":"deploy finished","agent":"coder"}`, testHookToken)
	if r.status != 200 || decodeTo[comms.WakeResult](t, r).AgentID != "a-1" {
		t.Fatalf("wake: %d %s", r.status, r.body)
	}
	kerneltest.WaitFor(t, "condition", func() bool { return ts.agents.turns.Load() == turns+1 })
	// Failed hook auth is audited; the token never is.
	for _, e := range ts.recent(t, 50) {
		if strings.Contains(e.Details, testHookToken) || strings.Contains(e.Details, "wrong-token") {
			t.Fatalf("token in the audit log: %+v", e)
		}
	}
}

func TestWebhookRoutes(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	var hits atomic.Int32
	rcv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		hits.Add(1)
		w.WriteHeader(202)
	}))
	defer rcv.Close()

	r := ts.authed(t, "POST", "/api/webhooks", `{"name":"ops","url":"`+rcv.URL+`/in","events":["agent.*","message.routed"],"secret":"very-secret-value","headers":{"X-Team":"ops"}}`)
	v := decodeTo[webhook.View](t, r)
	if r.status != 201 || v.Secret == nil || *v.Secret != "***" || v.Headers["X-Team"] != "***" || strings.Contains(string(r.body), "very-secret") {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "POST", "/api/webhooks/events", `{"event_type":"message.routed","url":"`+rcv.URL+`/ev"}`)
	ev := decodeTo[webhook.View](t, r)
	if r.status != 201 || ev.EventType != "message.routed" || ev.Kind != "event" {
		t.Fatalf("create event webhook: %d %s", r.status, r.body)
	}
	list := decodeTo[struct {
		Webhooks []webhook.View `json:"webhooks"`
		Total    int            `json:"total"`
	}](t, ts.authed(t, "GET", "/api/webhooks", ""))
	if list.Total != 1 || list.Webhooks[0].ID != v.ID {
		t.Fatalf("list: %+v", list)
	}
	if arr := decodeTo[[]webhook.View](t, ts.authed(t, "GET", "/api/webhooks/events", "")); len(arr) != 1 || arr[0].ID != ev.ID {
		t.Fatalf("event list: %+v", arr)
	}
	// A routed message reaches both endpoints.
	ts.authed(t, "POST", "/api/comms/send", `{"to":"agent:coder","content":"x"}`)
	kerneltest.WaitFor(t, "condition", func() bool { return hits.Load() == 2 })
	// The receiver counts a hit before the engine has recorded the attempt:
	// wait for the record too.
	type deliveries struct {
		Deliveries []webhook.Attempt `json:"deliveries"`
	}
	var d deliveries
	kerneltest.WaitFor(t, "condition", func() bool {
		r = ts.authed(t, "GET", "/api/webhooks/"+v.ID+"/deliveries", "")
		d = decodeTo[deliveries](t, r)
		return len(d.Deliveries) >= 1
	})
	if len(d.Deliveries) != 1 || d.Deliveries[0].StatusCode != 202 || d.Deliveries[0].EventType != "message.routed" {
		t.Fatalf("deliveries: %s", r.body)
	}
	r = ts.authed(t, "POST", "/api/webhooks/"+v.ID+"/test", "")
	if res := decodeTo[webhook.TestResult](t, r); r.status != 200 || res.Status != "sent" || res.ResponseStatus != 202 {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "PUT", "/api/webhooks/"+v.ID, `{"enabled":false,"events":["hook.wake"]}`)
	if u := decodeTo[webhook.View](t, r); r.status != 200 || u.Enabled || u.Events[0] != "hook.wake" || u.DisabledReason == "" {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "PUT", "/api/webhooks/events/"+ev.ID, `{"event_type":"nope.*"}`); r.status != 400 || r.envelope(t).Code != "unknown_event_type" {
		t.Fatalf("bad update: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/webhooks/"+v.ID+"/replay", ""); r.status != 200 || decodeTo[webhook.ReplayResult](t, r).Replayed != 0 {
		t.Fatalf("replay nothing: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/api/webhooks/"+v.ID+"/dead-letters", ""); r.status != 200 {
		t.Fatalf("dead letters: %d", r.status)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/webhooks/nope", ""},
		{"GET", "/api/webhooks/" + ev.ID, ""}, // an event webhook is not an outbound one
		{"PUT", "/api/webhooks/nope", `{"enabled":true}`},
		{"DELETE", "/api/webhooks/events/nope", ""},
		{"POST", "/api/webhooks/nope/test", ""},
		{"GET", "/api/webhooks/nope/deliveries", ""},
	} {
		if r := ts.authed(t, c.method, c.path, c.body); r.status != 404 {
			t.Errorf("%s %s: %d", c.method, c.path, r.status)
		}
	}
	if r := ts.authed(t, "DELETE", "/api/webhooks/"+v.ID, ""); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if r := ts.authed(t, "DELETE", "/api/webhooks/events/"+ev.ID, ""); r.status != 204 {
		t.Fatalf("delete event webhook: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "GET", "/api/webhooks/"+v.ID, ""); r.status != 404 {
		t.Fatalf("after delete: %d", r.status)
	}
	// Mutations were audited without secrets.
	for _, e := range ts.recent(t, 50) {
		if strings.Contains(e.Details, "very-secret") {
			t.Fatalf("secret in audit: %+v", e)
		}
	}
}

func TestCommsStreamReplaysAndCaps(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	for i := range 3 {
		ts.authed(t, "POST", "/api/comms/send", fmt.Sprintf(`{"to":"agent:coder","content":"m%d"}`, i))
	}
	br, stop := ts.openStream(t, "/api/comms/events/stream?type=message.routed&since_id=0")
	evs := readEvents(t, br, 3, func(e sseEvent) bool { return e.event != "" })
	for i, e := range evs {
		if e.event != "message.routed" || e.id == "" || !strings.Contains(e.data, `"kind":"agent_message"`) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	ts.authed(t, "POST", "/api/comms/send", `{"to":"agent:writer","content":"live"}`)
	live := readEvents(t, br, 1, func(e sseEvent) bool { return e.event != "" })
	if !strings.Contains(live[0].data, "agent:a-2") {
		t.Fatalf("live event %+v", live[0])
	}
	_, stop2 := ts.openStream(t, "/api/comms/events/stream")
	_, stop3 := ts.openStream(t, "/api/v1/comms/events/stream")
	r := ts.authed(t, "GET", "/api/comms/events/stream", "")
	if r.status != 429 || r.envelope(t).Code != "comms_stream_limit" {
		t.Fatalf("4th stream: %d %s", r.status, r.body)
	}
	stop()
	stop2()
	stop3()
	if r := ts.authed(t, "GET", "/api/comms/events/stream", "", "Last-Event-ID", "abc"); r.status != 400 {
		t.Fatalf("bad Last-Event-ID: %d", r.status)
	}
}

// SetHooks (config reload) turns the trigger routes on, changes the token
// and turns them off, on the running server.
func TestSetHooksSwapsTheTriggerSettings(t *testing.T) {
	t.Parallel()
	ts := newCommsServer(t)
	hook := func(token string) int {
		return ts.do(t, "POST", "/hooks/agent", `{"message":"hi"}`, "Content-Type", "application/json", "Authorization", "Bearer "+token).status
	}
	if got := hook(testHookToken); got != 200 {
		t.Fatalf("with the first token: %d", got)
	}
	next := "another-hook-token-0123456789abcdef"
	ts.SetHooks(HooksConfig{Token: next, MaxPayload: 64 << 10})
	if got, gotNew := hook(testHookToken), hook(next); got != 401 || gotNew != 200 {
		t.Fatalf("after the token changed: old token %d, new token %d", got, gotNew)
	}
	ts.SetHooks(HooksConfig{})
	if got := hook(next); got != 404 {
		t.Fatalf("after the triggers were turned off: %d", got)
	}
}
