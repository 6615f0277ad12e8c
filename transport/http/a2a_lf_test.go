package http

import (
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2asrv"
)

// sdkPeerServer is an A2A peer on loopback (the official SDK's server)
// that answers "remote: <text>".
func sdkPeerServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := nethttp.NewServeMux()
	peer := httptest.NewServer(mux)
	t.Cleanup(peer.Close)
	caps := sdk.AgentCapabilities{Streaming: true}
	card := &sdk.AgentCard{Name: "Remote", Description: "sdk peer", Version: "9", Capabilities: caps,
		SupportedInterfaces: []*sdk.AgentInterface{sdk.NewAgentInterface(peer.URL+"/rpc", sdk.TransportProtocolJSONRPC)},
		Skills:              []sdk.AgentSkill{{ID: "s", Name: "S", Description: "d", Tags: []string{}}}}
	mux.Handle("/rpc", a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(remotePeer, a2asrv.WithCapabilityChecks(&caps))))
	mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))
	return peer
}

// LibreFang's POST /api/a2a/send {"url", "message", "session_id"?}
// (routes/network.rs) answers the peer's finished task in its A2aTask
// shape; fangd discovers a URL it does not know yet, then sends.
func TestA2ASendByURLLibreFangShape(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	peer := sdkPeerServer(t)

	// Not discovered yet: discover-and-send, 200 with the finished task.
	r := ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+peer.URL+`/","message":"hello there","session_id":"s-1"}`)
	if r.status != 200 {
		t.Fatalf("send by url: %d %s", r.status, r.body)
	}
	task := jsonOf(t, r.body)
	st, _ := task["status"].(map[string]any)
	arts, _ := task["artifacts"].([]any)
	if task["id"] == nil || task["id"] != task["task_id"] || st["state"] != "completed" || task["sessionId"] != "s-1" ||
		task["agentId"] != task["agent_id"] || len(arts) != 1 || task["messages"] == nil {
		t.Fatalf("task: %s", r.body)
	}
	if txt := arts[0].(map[string]any)["parts"].([]any)[0].(map[string]any)["text"]; txt != "remote: hello there" {
		t.Fatalf("artifact text %v", txt)
	}
	agents := jsonOf(t, ts.authed(t, "GET", "/api/a2a/agents", "").body)
	if agents["total"].(float64) != 1 {
		t.Fatalf("the URL was not discovered: %v", agents)
	}
	id := agents["items"].([]any)[0].(map[string]any)["id"].(string)
	if task["agent_id"] != id {
		t.Fatalf("sent to %v, discovered %s", task["agent_id"], id)
	}

	// Known now: the same agent, whatever the URL's spelling.
	r = ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+strings.ToUpper(peer.URL[:4])+peer.URL[4:]+`","message":"again"}`)
	if r.status != 200 || jsonOf(t, r.body)["agent_id"] != id {
		t.Fatalf("second send: %d %s", r.status, r.body)
	}

	// Approve (LibreFang's step after discovery): by URL-encoded URL, or
	// by id; fangd trusted the agent at discovery.
	for _, ref := range []string{url.PathEscape(peer.URL), id} {
		r = ts.authed(t, "POST", "/api/a2a/agents/"+ref+"/approve", "")
		a := jsonOf(t, r.body)
		if r.status != 200 || a["status"] != "trusted" || a["url"] == nil || a["message"] == nil || a["agent"].(map[string]any)["id"] != id {
			t.Fatalf("approve %s: %d %s", ref, r.status, r.body)
		}
	}

	for _, c := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/api/a2a/send", `{"url":"` + peer.URL + `","agent_id":"nobody","message":"x"}`, 400, "a2a_unknown_remote_agent"},
		{"/api/a2a/send", `{"url":"ftp://x.example","message":"x"}`, 400, "a2a_invalid_url"},
		{"/api/a2a/send", `{"url":"http://10.0.0.5","message":"x"}`, 400, "a2a_ssrf_blocked"},
		{"/api/a2a/send", `{"url":"` + peer.URL + `"}`, 400, "a2a_missing_message"},
		{"/api/a2a/send", `{"message":"x"}`, 400, "missing_agent_id"},
		{"/api/a2a/agents/" + url.PathEscape("http://127.0.0.1:9") + "/approve", "", 404, "agent_not_found"},
		{"/api/a2a/agents/nope/approve", "", 404, "agent_not_found"},
	} {
		r := ts.authed(t, "POST", c.path, c.body)
		if r.status != c.status || r.envelope(t).Code != c.code {
			t.Errorf("%s %s: %d %s", c.path, c.body, r.status, r.body)
		}
	}
	if agents := jsonOf(t, ts.authed(t, "GET", "/api/a2a/agents", "").body); agents["total"].(float64) != 1 {
		t.Fatalf("refused sends discovered something: %v", agents)
	}
}

// multiPeer serves several agents behind one URL, as a fangd peer does:
// its card lists one skill per agent and it routes by the message's
// metadata.agent_id, answering "<agent>: <text>" (or refusing a message
// that names none, as fangd's shared endpoint does).
var multiPeer = sdkPeer(func(ec *a2asrv.ExecutorContext) (string, error) {
	who, _ := ec.Message.Metadata["agent_id"].(string)
	if who == "" {
		return "", fmt.Errorf("%w: several agents are served here; name one in metadata.agent_id", sdk.ErrInvalidParams)
	}
	return who + ": " + ec.Message.Parts[0].Text(), nil
})

// A peer that serves several agents: url names the peer and agent_id one of
// its agents (by the card skill's id or name), or agent_id alone names an
// agent exactly one discovered peer serves. The peer gets it in the
// message's metadata.agent_id.
func TestA2ASendPicksOneRemoteAgent(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	mux := nethttp.NewServeMux()
	peer := httptest.NewServer(mux)
	defer peer.Close()
	caps := sdk.AgentCapabilities{}
	card := &sdk.AgentCard{Name: "Fleet", Description: "two agents", Version: "1", Capabilities: caps,
		SupportedInterfaces: []*sdk.AgentInterface{sdk.NewAgentInterface(peer.URL+"/a2a", sdk.TransportProtocolJSONRPC)},
		Skills: []sdk.AgentSkill{{ID: "c1", Name: "coder", Description: "d", Tags: []string{}},
			{ID: "w1", Name: "writer", Description: "d", Tags: []string{}}}}
	mux.Handle("/a2a", a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(multiPeer, a2asrv.WithCapabilityChecks(&caps))))
	mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))

	r := ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+peer.URL+`","agent_id":"writer","message":"hi"}`)
	task := jsonOf(t, r.body)
	if r.status != 200 || task["remote_agent_id"] != "w1" || task["status"].(map[string]any)["state"] != "completed" {
		t.Fatalf("url + agent_id: %d %s", r.status, r.body)
	}
	if txt := task["artifacts"].([]any)[0].(map[string]any)["parts"].([]any)[0].(map[string]any)["text"]; txt != "w1: hi" {
		t.Fatalf("the peer's agent: %v", txt)
	}
	// agent_id alone: no external agent is called "coder", one peer serves it.
	r = ts.authed(t, "POST", "/api/a2a/send", `{"agent_id":"coder","message":"build"}`)
	rec := jsonOf(t, r.body)
	if r.status != 202 || rec["remote_agent_id"] != "c1" || rec["agent_id"] != task["agent_id"] {
		t.Fatalf("agent_id of a remote agent: %d %s", r.status, r.body)
	}
	// Without a pick, this peer refuses the task: it fails, as before.
	r = ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+peer.URL+`","message":"whoever"}`)
	if st := jsonOf(t, r.body)["status"].(map[string]any)["state"]; st == "completed" {
		t.Fatalf("a message naming no agent completed: %s", r.body)
	}
	if r := ts.authed(t, "POST", "/api/a2a/send", `{"agent_id":"nobody","message":"x"}`); r.status != 404 {
		t.Fatalf("unknown agent: %d %s", r.status, r.body)
	}
}

// The bug of issue 16 item 3, against fangd's own A2A server: a fangd peer
// serving two agents (alpha, beta) refused every task sent to its URL;
// naming one with agent_id now reaches it. The test server is its own
// peer, on loopback.
func TestA2ASendToAFangdPeerServingSeveralAgents(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	if r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"`+ts.url+`","token":"`+testKey+`"}`); r.status != 201 {
		t.Fatalf("discover self: %d %s", r.status, r.body)
	}
	r := ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+ts.url+`","message":"which one?"}`)
	if st := jsonOf(t, r.body)["status"].(map[string]any)["state"]; st != "failed" {
		t.Fatalf("no agent named: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "POST", "/api/a2a/send", `{"url":"`+ts.url+`","agent_id":"beta","message":"hi beta"}`)
	task := jsonOf(t, r.body)
	if r.status != 200 || task["remote_agent_id"] != agentB.ID || task["status"].(map[string]any)["state"] != "completed" {
		t.Fatalf("beta: %d %s", r.status, r.body)
	}
	if txt := task["artifacts"].([]any)[0].(map[string]any)["parts"].([]any)[0].(map[string]any)["text"]; txt != "echo: hi beta" {
		t.Fatalf("answer %v", txt)
	}
}
