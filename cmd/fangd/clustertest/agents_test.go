//go:build cluster

package clustertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

type listedAgent struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Node   string `json:"node"`
	Remote bool   `json:"remote"`
	Model  string `json:"model"`
}

// agentsOn is GET /api/agents through n, by agent name.
func agentsOn(t *testing.T, n *node) map[string][]listedAgent {
	t.Helper()
	var v struct {
		Items []listedAgent `json:"items"`
		Total int           `json:"total"`
	}
	if code := getJSON(t, n.url+"/api/agents", &v); code != 200 {
		t.Fatalf("%s: list agents: %d", n.name, code)
	}
	out := map[string][]listedAgent{}
	for _, a := range v.Items {
		out[a.Name] = append(out[a.Name], a)
	}
	return out
}

// Issue 18, "requests for an entity are routed to the node that hosts
// it", for agents: three real nodes and a real etcd. An agent created
// through n1 is messaged through n2 (one LLM call, made by n1; the answer
// comes back through n2), listed through n3 with its node, renamed and
// deleted through n3 (gone everywhere); after kill -9 of its host, a
// request for an agent it hosts answers 503 host_unreachable.
func TestAgentRoutedToItsNode(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	oai.SetReply(func(r llmtest.Request) string { return "answer from the host" })
	nodes := channelNodes(t, etcd, oai, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	code, body := post(t, n1.url+"/api/agents", `{"name":"solo","model":"fakeoai/gpt-test"}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &created); err != nil || created.ID == "" {
		t.Fatalf("create answer %s", body)
	}

	// Messaged through n2, by name and by id: n1 runs the turns.
	before := len(oai.Requests())
	for _, ref := range []string{"solo", created.ID} {
		code, body = post(t, n2.url+"/api/agents/"+ref+"/message", `{"message":"hello over there"}`)
		if code != 200 {
			t.Fatalf("message %s through n2: %d %s", ref, code, body)
		}
		var tr struct {
			Response string `json:"response"`
			AgentID  string `json:"agent_id"`
		}
		if err := json.Unmarshal(body, &tr); err != nil || tr.Response != "answer from the host" || tr.AgentID != created.ID {
			t.Fatalf("answer through n2: %s", body)
		}
	}
	if n := len(oai.Requests()) - before; n != 2 {
		t.Fatalf("the LLM saw %d requests for 2 messages", n)
	}
	// The history is on the host: the agent's events through n3 show the
	// two turns.
	code, body = do(t, "GET", n3.url+"/api/agents/solo/events", "")
	var evs struct {
		AgentID string `json:"agent_id"`
		Count   int    `json:"count"`
	}
	if code != 200 || json.Unmarshal(body, &evs) != nil || evs.AgentID != created.ID || evs.Count != 2 {
		t.Fatalf("events through n3: %d %s", code, body)
	}
	// comms/send to the remote agent through n3.
	code, body = post(t, n3.url+"/api/comms/send", `{"to":"agent:solo","content":"via comms"}`)
	if code != 200 {
		t.Fatalf("comms send through n3: %d %s", code, body)
	}
	if n := len(oai.Requests()) - before; n != 3 {
		t.Fatalf("the LLM saw %d requests after the comms send, want 3", n)
	}

	// Listed through n3 with its node; n3's own helper is local.
	list := agentsOn(t, n3)
	if s := list["solo"]; len(s) != 1 || s[0].Node != "n1" || !s[0].Remote || s[0].ID != created.ID {
		t.Fatalf("solo through n3: %+v", s)
	}
	if h := list["helper"]; len(h) != 3 {
		t.Fatalf("helper through n3: %+v (want one per node)", h)
	}
	// GET through n3 is the host's full view.
	var got listedAgent
	if code := getJSON(t, n3.url+"/api/agents/solo", &got); code != 200 || got.ID != created.ID || got.Model == "" {
		t.Fatalf("detail through n3: %d %+v", code, got)
	}
	// An already forwarded request is not forwarded again: n3's own 404.
	code, _ = postHeader(t, n3.url+"/api/agents/solo/message", `{"message":"x"}`, map[string]string{"X-Fangd-Forwarded-By": "n9"})
	if code != 404 {
		t.Fatalf("forwarded request for a remote agent: %d, want 404", code)
	}
	// A name several other nodes have, asked of a node without it, is
	// ambiguous.
	for _, n := range []*node{n1, n2} {
		if code, body := post(t, n.url+"/api/agents", `{"name":"twin","model":"fakeoai/gpt-test"}`); code != 201 {
			t.Fatalf("%s: create twin: %d %s", n.name, code, body)
		}
	}
	// The second create reaches n3's watched directory a moment after its
	// 201 (docs/cluster.md, Agents: until then the name resolves to the
	// first node's agent alone), so n3 is asked until it has both.
	kerneltest.WaitFor(t, "n3 to answer twin as ambiguous", func() bool {
		code, body = do(t, "GET", n3.url+"/api/agents/twin", "")
		return code == 409 && strings.Contains(string(body), "agent_name_ambiguous")
	}, func() string { return fmt.Sprintf("last answer %d %s", code, body) })

	// Renamed and deleted through n3.
	code, body = do(t, "PATCH", n3.url+"/api/agents/solo", `{"name":"solo2"}`)
	if code != 200 {
		t.Fatalf("rename through n3: %d %s", code, body)
	}
	if code, _ := do(t, "GET", n2.url+"/api/agents/solo", ""); code != 404 {
		t.Fatalf("old name after rename: %d", code)
	}
	code, body = do(t, "DELETE", n3.url+"/api/agents/solo2", "")
	if code != 200 {
		t.Fatalf("delete through n3: %d %s", code, body)
	}
	for _, n := range nodes {
		if code, body := do(t, "GET", n.url+"/api/agents/"+created.ID, ""); code != 404 {
			t.Fatalf("%s after delete: %d %s", n.name, code, body)
		}
		if l := agentsOn(t, n); len(l["solo2"]) != 0 || len(l["solo"]) != 0 {
			t.Fatalf("%s still lists it: %+v", n.name, l)
		}
	}

	// Another agent on n1; n1 dies: n2 cannot reach it.
	if code, body := post(t, n1.url+"/api/agents", `{"name":"orphan","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("create orphan: %d %s", code, body)
	}
	before = len(oai.Requests())
	n1.killWait(t)
	if !poll(20*time.Second, 200*time.Millisecond, func() bool {
		code, body = post(t, n2.url+"/api/agents/orphan/message", `{"message":"anyone?"}`)
		return code == 503 && strings.Contains(string(body), "host_unreachable")
	}) {
		t.Fatalf("with the host down: %d %s, want 503 host_unreachable", code, body)
	}
	if n := len(oai.Requests()) - before; n != 0 {
		t.Fatalf("%d LLM calls with the host down", n)
	}
}
