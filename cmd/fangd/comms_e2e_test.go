package main

// Black-box tests of the comms layer and the webhook engine: the real
// binary, killed with SIGKILL, restarted, and spoken to over HTTP and SSE.

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

const hookToken = "hook-token-0123456789abcdef0123456789"

// e2eReceiver verifies Standard Webhooks signatures with its own code
// (from the spec, not fangd's) and records each acknowledged event id.
type e2eReceiver struct {
	srv    *httptest.Server
	secret string

	mu       sync.Mutex
	down     bool
	events   []uint64 // bus event ids acknowledged, in arrival order
	ids      map[string]int
	badSigns int
}

func newE2EReceiver(t *testing.T, secret string) *e2eReceiver {
	r := &e2eReceiver{secret: secret, ids: map[string]int{}, down: true}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
		mac := hmac.New(sha256.New, []byte(r.secret))
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		legacy := hmac.New(sha256.New, []byte(r.secret))
		legacy.Write(body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 ||
			req.Header.Get("X-Webhook-Signature") != "sha256="+hex.EncodeToString(legacy.Sum(nil)) {
			r.badSigns++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var p struct {
			Type string `json:"type"`
			Data struct {
				ID uint64 `json:"id"`
			} `json:"data"`
		}
		json.Unmarshal(body, &p)
		r.ids[id]++
		if r.ids[id] == 1 { // receivers dedupe on webhook-id, as the spec says
			r.events = append(r.events, p.Data.ID)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *e2eReceiver) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *e2eReceiver) acked() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.events...)
}

func commsConfig(extra string) string {
	return `api_key = "` + e2eKey + `"
[rate_limit]
api_requests_per_minute = 0
[network_policy]
allow_hosts = ["127.0.0.1/32"]
[webhook_triggers]
enabled = true
` + extra
}

func (p *proc) hook(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	return p.requestAs(t, hookToken, "POST", path, body)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQueuedDeliveriesSurviveKill9 queues 1,000 deliveries to a receiver
// that is down, kills fangd with SIGKILL, restarts it with the receiver up,
// and checks that every event arrives, in order, none lost.
func TestQueuedDeliveriesSurviveKill9(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	rcv := newE2EReceiver(t, "e2e-webhook-secret")
	// Long enough retries that the head never runs out while 1,000 events
	// are queued; short enough that it is retried soon after the restart.
	backoff := strings.Repeat(`"2s", `, 50)
	config := commsConfig(fmt.Sprintf("[webhooks]\nretry_backoff = [%s]\n", strings.TrimSuffix(backoff, ", ")))
	env := "FANGD_WEBHOOK_TOKEN=" + hookToken
	p := startFangd(t, home, config, env)

	code, body := p.request(t, "POST", "/api/webhooks", fmt.Sprintf(
		`{"name":"e2e","url":%q,"events":["hook.wake"],"secret":"e2e-webhook-secret"}`, rcv.srv.URL+"/hook"))
	if code != 201 {
		t.Fatalf("create webhook: %d %s", code, body)
	}
	var wh struct{ ID string }
	json.Unmarshal(body, &wh)

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if code, body := p.hook(t, "/hooks/wake", fmt.Sprintf(`{"text":"event %d"}`, i)); code != 200 {
					errs <- fmt.Sprintf("%d %s", code, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal("wake:", e)
	}
	eventually(t, 60*time.Second, "1,000 queued deliveries", func() bool {
		_, body := p.request(t, "GET", "/api/webhooks/"+wh.ID, "")
		var v struct{ Pending int }
		json.Unmarshal(body, &v)
		return v.Pending == n
	})
	if got := rcv.acked(); len(got) != 0 {
		t.Fatalf("receiver acknowledged %d while down", len(got))
	}
	_, body = p.request(t, "GET", "/api/comms/events?type=hook.wake&limit=500", "")
	var evs struct {
		Total int `json:"total"`
	}
	json.Unmarshal(body, &evs)
	if evs.Total != n {
		t.Fatalf("%d hook.wake events in the log", evs.Total)
	}

	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil

	rcv.setDown(false)
	p = startFangd(t, home, config, env)
	eventually(t, 120*time.Second, "every queued event delivered after the restart", func() bool {
		return len(rcv.acked()) >= n
	})
	got := rcv.acked()
	if len(got) != n {
		t.Fatalf("receiver got %d distinct messages, want %d", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order at %d: %d after %d", i, got[i], got[i-1])
		}
	}
	if rcv.badSigns != 0 {
		t.Fatalf("%d deliveries failed signature verification", rcv.badSigns)
	}
	eventually(t, 10*time.Second, "an empty outbox", func() bool {
		_, body := p.request(t, "GET", "/api/webhooks/"+wh.ID, "")
		var v struct{ Pending, DeadLetters int }
		json.Unmarshal(body, &v)
		return v.Pending == 0 && v.DeadLetters == 0
	})
}

type sseEvent struct {
	id   uint64
	typ  string
	data string
}

// readSSE connects to the comms stream and sends parsed events on the
// returned channel until the body ends.
func readSSE(t *testing.T, p *proc, lastID string) (<-chan sseEvent, func()) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.url+"/api/comms/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e2eKey)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("stream: %d %s", res.StatusCode, b)
	}
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.typ != "" {
					out <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				e.id, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				e.typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()
	return out, func() { res.Body.Close() }
}

func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
	}
	return sseEvent{}
}

// TestSSEResumesAcrossRestart reads the stream, kills the daemon, and
// resumes with Last-Event-ID on the new one: exactly the events after the
// last one seen, in order, with no gap; an id older than the log gets an
// explicit resync first.
func TestSSEResumesAcrossRestart(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	config := commsConfig("[comms]\nevent_log_size = 100\nmax_streams_per_key = 2\n")
	env := "FANGD_WEBHOOK_TOKEN=" + hookToken
	p := startFangd(t, home, config, env)

	stream, stop := readSSE(t, p, "0")
	if e := next(t, stream); e.typ != "daemon.started" || e.id != 1 {
		t.Fatalf("first event %+v", e)
	}
	for i := range 3 {
		p.hook(t, "/hooks/wake", fmt.Sprintf(`{"text":"before %d"}`, i))
	}
	var last sseEvent
	for range 3 {
		last = next(t, stream)
		if last.typ != "hook.wake" {
			t.Fatalf("event %+v", last)
		}
	}
	// The per-key cap: two streams are fine, a third is 429. (A closed
	// stream frees its slot when the server next writes to it: an event
	// or the 15 s heartbeat.)
	_, stop2 := readSSE(t, p, "")
	code, body := p.request(t, "GET", "/api/comms/events/stream", "")
	if code != 429 || !strings.Contains(string(body), "comms_stream_limit") {
		t.Fatalf("third stream: %d %s", code, body)
	}
	stop()
	stop2()

	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil
	p = startFangd(t, home, config, env)
	for i := range 2 {
		p.hook(t, "/hooks/wake", fmt.Sprintf(`{"text":"after %d"}`, i))
	}
	stream, stop = readSSE(t, p, strconv.FormatUint(last.id, 10))
	defer stop()
	want := []string{"daemon.started", "hook.wake", "hook.wake"}
	for i, typ := range want {
		e := next(t, stream)
		if e.typ != typ || e.id != last.id+uint64(i)+1 {
			t.Fatalf("resumed event %d: %+v (last seen %d)", i, e, last.id)
		}
		if i == 2 && !strings.Contains(e.data, "after 1") {
			t.Fatalf("event %+v", e)
		}
	}
	stop()

	// Push the log past its size, then resume from an id it dropped.
	for i := range 120 {
		p.hook(t, "/hooks/wake", fmt.Sprintf(`{"text":"fill %d"}`, i))
	}
	stream, stop = readSSE(t, p, "2")
	defer stop()
	e := next(t, stream)
	var gap struct {
		Reason string `json:"reason"`
		Missed uint64 `json:"missed"`
	}
	json.Unmarshal([]byte(e.data), &gap)
	if e.typ != "resync" || gap.Reason != "trimmed" || gap.Missed == 0 {
		t.Fatalf("expected a resync, got %+v", e)
	}
	if e := next(t, stream); e.id != 3+gap.Missed {
		t.Fatalf("first replayed event after the gap: %+v (missed %d)", e, gap.Missed)
	}
}

// TestInboundHooksAuth covers the token, Standard Webhooks signatures
// (stale timestamp, bad signature, replayed id), the size cap and 404 when
// not configured.
func TestInboundHooksAuth(t *testing.T) {
	t.Parallel()
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("inbound-hook-signing-key-32bytes"))
	config := commsConfig(`secret_env = "E2E_HOOK_SECRET"
max_payload_bytes = 2048
`)
	p := startFangd(t, t.TempDir(), config, "FANGD_WEBHOOK_TOKEN="+hookToken, "E2E_HOOK_SECRET="+secret)

	signed := func(id string, ts int64, body string, key []byte) (int, string) {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%d.%s", id, ts, body)
		req, _ := http.NewRequest("POST", p.url+"/api/hooks/wake", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	key := []byte("inbound-hook-signing-key-32bytes")
	body := `{"text":"signed wake"}`
	now := time.Now().Unix()
	if code, b := signed("msg_1", now, body, key); code != 200 || !strings.Contains(b, `"status":"accepted"`) {
		t.Fatalf("signed: %d %s", code, b)
	}
	if code, b := signed("msg_1", now, body, key); code != 409 || !strings.Contains(b, "webhook_replayed") {
		t.Fatalf("replayed id: %d %s", code, b)
	}
	if code, _ := signed("msg_2", now-600, body, key); code != 401 {
		t.Fatalf("stale timestamp: %d", code)
	}
	if code, _ := signed("msg_3", now, body, []byte("another-key-entirely-32-bytes!!!")); code != 401 {
		t.Fatalf("bad signature: %d", code)
	}
	if code, b := p.hook(t, "/hooks/wake", `{"text":"token wake","mode":"next"}`); code != 200 {
		t.Fatalf("token: %d %s", code, b)
	}
	req, _ := http.NewRequest("POST", p.url+"/hooks/wake", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Authorization", "Bearer "+e2eKey) // the API key is not a hook credential
	req.Header.Set("Content-Type", "application/json")
	res, _ := http.DefaultClient.Do(req)
	res.Body.Close()
	if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("API key on a hook: %d", res.StatusCode)
	}
	if code, _ := p.hook(t, "/hooks/wake", `{"text":"`+strings.Repeat("x", 3000)+`"}`); code != 413 {
		t.Fatalf("oversized: %d", code)
	}
	if code, _ := p.hook(t, "/hooks/wake", `{"text":"a\u0000b"}`); code != 400 {
		t.Fatalf("control characters: %d", code)
	}
	if code, _ := p.hook(t, "/hooks/wake", `{"text":"x","mode":"later"}`); code != 400 {
		t.Fatalf("bad mode: %d", code)
	}
	// No agent exists yet.
	if code, _ := p.hook(t, "/hooks/agent", `{"message":"hi"}`); code != 404 {
		t.Fatalf("hooks/agent without agents: %d", code)
	}
	_, b := p.request(t, "GET", "/api/comms/events?type=hook.wake", "")
	var evs struct{ Total int }
	json.Unmarshal(b, &evs)
	if evs.Total != 2 {
		t.Fatalf("%d hook.wake events, want 2 (signed + token)", evs.Total)
	}

	off := startFangd(t, t.TempDir(), `api_key = "`+e2eKey+`"`+"\n")
	if code, _ := off.hook(t, "/hooks/wake", `{"text":"x"}`); code != 404 {
		t.Fatalf("hooks when not configured: %d", code)
	}
	if code, _ := off.hook(t, "/api/hooks/agent", `{"message":"x"}`); code != 404 {
		t.Fatalf("hooks when not configured: %d", code)
	}
}

func TestCommsSecurityAndBadWebhookInput(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), commsConfig(""), "FANGD_WEBHOOK_TOKEN="+hookToken)
	_, body := p.request(t, "GET", "/api/security", "")
	var st struct {
		Systems map[string]string `json:"security_systems"`
	}
	json.Unmarshal(body, &st)
	if st.Systems["loop_guard"] != "active" || st.Systems["ssrf_protection"] != "active" {
		t.Fatalf("security: %v", st.Systems)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{`{"name":"x","url":"http://10.0.0.8/hook","events":["*"]}`, 400},
		{`{"name":"x","url":"http://[::ffff:192.168.1.1]/","events":["*"]}`, 400},
		{`{"name":"x","url":"gopher://127.0.0.1/","events":["*"]}`, 400},
		{`{"name":"x","url":"http://127.0.0.1:9/","events":["agent.spawnd"]}`, 400},
		{`{"name":"x","url":"http://127.0.0.1:9/","events":["*"],"extra":1}`, 400},
	} {
		if code, b := p.request(t, "POST", "/api/webhooks", c.body); code != c.code {
			t.Errorf("%s: %d %s", c.body, code, b)
		}
	}
	if code, b := p.request(t, "POST", "/api/webhooks/events", `{"event_type":"agent_spawned","url":"http://127.0.0.1:9/x","secret":"s3cret-value"}`); code != 201 || !strings.Contains(string(b), `"secret":"***"`) || strings.Contains(string(b), "s3cret-value") {
		t.Fatalf("event webhook: %d %s", code, b)
	}
	_, b := p.request(t, "GET", "/api/webhooks", "")
	if !strings.Contains(string(b), `"total":0`) {
		t.Fatalf("bad input was stored: %s", b)
	}
	if code, _ := p.request(t, "GET", "/api/webhooks/nope", ""); code != 404 {
		t.Fatalf("unknown webhook: %d", code)
	}
	if code, _ := p.request(t, "GET", "/api/comms/events?type=nope", ""); code != 400 {
		t.Fatalf("unknown type filter: %d", code)
	}
}

// TestCommsWithRealAgents drives the comms layer against the real agent
// runtime (and a fake OpenAI-compatible provider): events from agents reach
// the bus and a webhook, send/task/hooks run real turns, the topology shows
// agents and observed routes, and the loop guard stops a bounce.
func TestCommsWithRealAgents(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, `
[network_policy]
allow_hosts = ["127.0.0.1/32"]
[webhook_triggers]
enabled = true
[comms]
loop_guard_max_bounces = 2
`)
	var mu sync.Mutex
	var hooked []string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct{ Type string }
		json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		hooked = append(hooked, p.Type)
		mu.Unlock()
		w.WriteHeader(200)
	}))
	defer rcv.Close()
	p := startFangd(t, t.TempDir(), cfg, append(keyEnv, "FANGD_WEBHOOK_TOKEN="+hookToken)...)
	if code, b := p.request(t, "POST", "/api/webhooks/events", `{"event_type":"agent.*","url":"`+rcv.URL+`"}`); code != 201 {
		t.Fatalf("subscribe: %d %s", code, b)
	}
	ids := map[string]string{}
	for _, a := range []struct{ name, desc, tags string }{
		{"coder", "reviews Go code for bugs", `["code","review"]`},
		{"ops", "deploys services and watches alerts", `["deploy"]`},
	} {
		code, b := p.request(t, "POST", "/api/agents", fmt.Sprintf(`{"name":%q,"model":"fakeoai/gpt-test","description":%q,"tags":%s}`, a.name, a.desc, a.tags))
		if code != 201 {
			t.Fatalf("create agent: %d %s", code, b)
		}
		var ag struct{ ID string }
		json.Unmarshal(b, &ag)
		ids[a.name] = ag.ID
	}

	code, b := p.request(t, "POST", "/api/comms/send", `{"to":"agent:coder","content":"look at PR 7"}`)
	if code != 200 || !strings.Contains(string(b), `"response":"echo: look at PR 7"`) || !strings.Contains(string(b), ids["coder"]) {
		t.Fatalf("send: %d %s", code, b)
	}
	code, b = p.request(t, "POST", "/api/comms/task", `{"title":"Deploy the release","description":"roll out and watch the alerts"}`)
	var task struct {
		TaskID     string `json:"task_id"`
		AssignedTo string `json:"assigned_to"`
	}
	json.Unmarshal(b, &task)
	if code != 201 || task.AssignedTo != ids["ops"] {
		t.Fatalf("task: %d %s", code, b)
	}
	eventually(t, 20*time.Second, "the task to complete", func() bool {
		_, b := p.request(t, "GET", "/api/comms/tasks/"+task.TaskID, "")
		return strings.Contains(string(b), `"status":"completed"`) && strings.Contains(string(b), "Deploy the release")
	})
	code, b = p.hook(t, "/hooks/agent", `{"message":"status report","agent":"ops"}`)
	if code != 200 || !strings.Contains(string(b), `"status":"completed"`) || !strings.Contains(string(b), `"response":"echo: status report"`) {
		t.Fatalf("hooks/agent: %d %s", code, b)
	}

	// Bounce coder <-> ops: the third message is blocked.
	for i, route := range [][2]string{{"coder", "ops"}, {"ops", "coder"}, {"coder", "ops"}} {
		code, b := p.request(t, "POST", "/api/comms/send", fmt.Sprintf(`{"from":"agent:%s","to":"agent:%s","content":"bounce %d"}`, route[0], route[1], i))
		want := 200
		if i == 2 {
			want = 429
		}
		if code != want {
			t.Fatalf("bounce %d: %d %s", i, code, b)
		}
	}

	_, b = p.request(t, "GET", "/api/comms/topology", "")
	var topo struct {
		Nodes []struct{ ID, Kind, Name, State string }
		Edges []struct {
			From, To, Kind string
			Messages       int
		}
	}
	json.Unmarshal(b, &topo)
	agentsSeen := 0
	for _, n := range topo.Nodes {
		if n.Kind == "agent" && n.State == "running" {
			agentsSeen++
		}
	}
	edges := map[string]int{}
	for _, e := range topo.Edges {
		edges[e.From+">"+e.To+":"+e.Kind] = e.Messages
	}
	if agentsSeen != 2 || edges["system>agent:"+ids["coder"]+":agent_message"] != 1 ||
		edges["agent:"+ids["coder"]+">agent:"+ids["ops"]+":agent_message"] != 1 ||
		edges["hook:agent>agent:"+ids["ops"]+":hook"] != 1 || edges["task:"+task.TaskID+">agent:"+ids["ops"]+":task"] != 1 {
		t.Fatalf("topology: %s", b)
	}
	for _, typ := range []string{"agent.spawned", "agent.message", "loop.blocked", "task.completed", "hook.agent"} {
		_, b := p.request(t, "GET", "/api/comms/events?type="+typ, "")
		if !strings.Contains(string(b), `"type":"`+typ+`"`) {
			t.Errorf("no %s event: %s", typ, b)
		}
	}
	eventually(t, 20*time.Second, "agent events at the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		spawned, msgs := 0, 0
		for _, h := range hooked {
			switch h {
			case "agent.spawned":
				spawned++
			case "agent.message":
				msgs++
			}
		}
		return spawned == 2 && msgs >= 5
	})
}

// TestCommsThroughARealChannel: a Telegram channel (against a local fake
// of the Bot API) bound to a real agent. An inbound chat message becomes a
// channel.message.received event and a channel -> agent edge; POST
// /api/comms/send to "channel:telegram:<chat>" reaches the chat; the
// channel is a node of the topology.
func TestCommsThroughARealChannel(t *testing.T) {
	t.Parallel()
	_, _, config := fakes(t, loopbackPolicy)
	tg := telegramtest.New("444:comms")
	defer tg.Close()
	p := startFangd(t, t.TempDir(), config, append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)...)
	code, body := p.request(t, "POST", "/api/agents", `{"name":"helper","model":"fakeoai/gpt-test"}`)
	if code != 201 {
		t.Fatalf("create agent: %d %s", code, body)
	}
	var ag struct{ ID string }
	json.Unmarshal(body, &ag)
	connectTelegram(t, p, tg, "444:comms", "helper")

	tg.UserMessage(77, 9, "bob", "hello agent")
	eventually(t, 20*time.Second, "the agent's reply in the chat", func() bool { return len(tg.Sent()) == 1 })
	code, body = p.request(t, "POST", "/api/comms/send", `{"to":"channel:telegram:77","content":"a note from ops","from":"ops-team"}`)
	if code != 200 || !strings.Contains(string(body), `"status":"queued"`) {
		t.Fatalf("send to channel: %d %s", code, body)
	}
	eventually(t, 20*time.Second, "the comms message in the chat", func() bool {
		s := tg.Sent()
		return len(s) == 2 && s[1].Text == "a note from ops" && s[1].ChatID == "77"
	})
	if code, _ := p.request(t, "POST", "/api/comms/send", `{"to":"channel:nosuch:1","content":"x"}`); code != 404 {
		t.Fatalf("unknown channel: %d", code)
	}

	_, body = p.request(t, "GET", "/api/comms/events?type=channel.message.received", "")
	if !strings.Contains(string(body), `"source":"channel:telegram:77"`) || !strings.Contains(string(body), `"target":"agent:`+ag.ID+`"`) {
		t.Fatalf("received event: %s", body)
	}
	_, body = p.request(t, "GET", "/api/comms/topology", "")
	for _, want := range []string{
		`{"id":"channel:telegram","kind":"channel","name":"telegram","state":"connected"}`,
		`{"from":"channel:telegram:77","to":"agent:` + ag.ID + `","kind":"channel_message","messages":1}`,
		`{"from":"ops-team","to":"channel:telegram:77","kind":"channel_message","messages":1}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("topology lacks %s: %s", want, body)
		}
	}
}
