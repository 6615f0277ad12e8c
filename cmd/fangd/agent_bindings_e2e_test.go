package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

// LibreFang's agent binding routes against the real binary: the channels
// allow-list (GET/PUT with LibreFang's body or a bare array) really stops
// a channel's messages from reaching the agent and lets them through
// again; bad input is a 400 that changes nothing; /events lists the
// agent's turns with model, provider and tokens; /deliveries lists the
// replies its channel delivered.
func TestAgentBindingsEventsAndDeliveries(t *testing.T) {
	t.Parallel()
	oai, _, config := fakes(t, loopbackPolicy)
	tg := telegramtest.New("555:bind")
	defer tg.Close()
	p := startFangd(t, t.TempDir(), config, append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)...)
	code, body := p.request(t, "POST", "/api/agents", `{"name":"helper","model":"fakeoai/gpt-test","channels":["elsewhere"]}`)
	if code != 201 {
		t.Fatalf("create agent: %d %s", code, body)
	}
	var ag struct{ ID string }
	json.Unmarshal(body, &ag)
	connectTelegram(t, p, tg, "555:bind", "helper")

	code, body = p.request(t, "GET", "/api/agents/helper/channels", "")
	var view struct {
		Assigned, Available, Unknown []string
		Mode                         string
	}
	json.Unmarshal(body, &view)
	if code != 200 || view.Mode != "allowlist" || strings.Join(view.Assigned, ",") != "elsewhere" ||
		!strings.Contains(strings.Join(view.Available, ","), "telegram") || strings.Join(view.Unknown, ",") != "elsewhere" {
		t.Fatalf("channels view: %d %s", code, body)
	}
	// Not allowed: the message is not answered.
	tg.UserMessage(88, 9, "bob", "are you there?")
	eventually(t, 20*time.Second, "the refused message recorded", func() bool {
		_, body := p.request(t, "GET", "/api/comms/events?type=channel.message.received", "")
		return strings.Contains(string(body), "are you there?")
	})

	for _, bad := range []string{`{"channels":"telegram"}`, `{"channels":["ok"],"extra":1}`, `{"channels":["no spaces"]}`, `{}`} {
		if code, body := p.request(t, "PUT", "/api/agents/helper/channels", bad); code != 400 {
			t.Fatalf("PUT %s: %d %s", bad, code, body)
		}
	}
	code, body = p.request(t, "PUT", "/api/agents/helper/channels", `{"channels":["telegram"]}`)
	if code != 200 || !strings.Contains(string(body), `"status":"ok"`) || !strings.Contains(string(body), `"channels":["telegram"]`) {
		t.Fatalf("PUT channels: %d %s", code, body)
	}
	tg.UserMessage(88, 10, "bob", "now?")
	eventually(t, 20*time.Second, "the agent's reply in the chat", func() bool { return len(tg.Sent()) >= 1 })
	// One chat's messages are handled in order, so the refused one was
	// done with before this reply: it never reached the provider.
	if reqs := oai.Requests(); len(tg.Sent()) != 1 || len(reqs) != 1 || !strings.Contains(reqs[0].LastMessage().Content, "now?") {
		t.Fatalf("%d replies, %d provider calls: the refused message got through", len(tg.Sent()), len(reqs))
	}
	if code, body := p.request(t, "PUT", "/api/agents/helper/mcp_servers", `["github"]`); code != 200 || !strings.Contains(string(body), `"mcp_servers":["github"]`) {
		t.Fatalf("PUT mcp_servers as an array: %d %s", code, body)
	}
	code, body = p.request(t, "GET", "/api/agents/"+ag.ID+"/mcp_servers", "")
	if code != 200 || !strings.Contains(string(body), `"assigned":["github"]`) || !strings.Contains(string(body), `"mode":"allowlist"`) {
		t.Fatalf("mcp_servers view: %d %s", code, body)
	}

	code, body = p.request(t, "GET", "/api/agents/helper/events?limit=5", "")
	var evs struct {
		AgentID string           `json:"agent_id"`
		Events  []map[string]any `json:"events"`
	}
	json.Unmarshal(body, &evs)
	if code != 200 || evs.AgentID != ag.ID || len(evs.Events) != 1 {
		t.Fatalf("events: %d %s", code, body)
	}
	e := evs.Events[0]
	if e["provider"] != "fakeoai" || e["model"] == "" || e["input_tokens"].(float64) <= 0 || e["outcome"] != "ok" || e["timestamp"] == "" {
		t.Fatalf("event row: %v", e)
	}
	code, body = p.request(t, "GET", "/api/agents/helper/deliveries", "")
	if code != 200 || !strings.Contains(string(body), `"count":1`) || !strings.Contains(string(body), `"recipient":"88"`) ||
		!strings.Contains(string(body), `"status":"delivered"`) || !strings.Contains(string(body), `"channel":"telegram"`) {
		t.Fatalf("deliveries: %d %s", code, body)
	}
	if code, _ := p.request(t, "GET", "/api/agents/helper/events?limit=0", ""); code != 400 {
		t.Fatalf("limit=0: %d", code)
	}
	if code, _ := p.request(t, "GET", "/api/agents/nobody/deliveries", ""); code != 404 {
		t.Fatalf("unknown agent: %d", code)
	}
}
