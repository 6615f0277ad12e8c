package http

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"

	fcluster "github.com/fangd/fangd/actors/cluster"
)

// fakeAgentDir is an in-memory agent directory for node "n1" (the real
// one against etcd is tested in actors/cluster).
type fakeAgentDir struct {
	mu   sync.Mutex
	recs map[string]fcluster.AgentRecord
	err  error
}

func (d *fakeAgentDir) NodeName() string { return "n1" }

func (d *fakeAgentDir) put(r fcluster.AgentRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recs[r.ID] = r
}

func (d *fakeAgentDir) Register(_ context.Context, id, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	d.recs[id] = fcluster.AgentRecord{ID: id, Name: name, Node: "n1"}
	return nil
}

func (d *fakeAgentDir) Rename(ctx context.Context, id, _, name string) error {
	return d.Register(ctx, id, name)
}

func (d *fakeAgentDir) Remove(_ context.Context, id, _ string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	delete(d.recs, id)
	return nil
}

func (d *fakeAgentDir) Lookup(_ context.Context, id, name string) ([]fcluster.AgentRecord, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	var out []fcluster.AgentRecord
	for _, r := range d.recs {
		if (id != "" && r.ID == id) || (id == "" && r.Name == name) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (d *fakeAgentDir) List(context.Context) ([]fcluster.AgentRecord, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	out := make([]fcluster.AgentRecord, 0, len(d.recs))
	for _, r := range d.recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

func (d *fakeAgentDir) setErr(err error) { d.mu.Lock(); d.err = err; d.mu.Unlock() }

// A request for an agent this node does not have goes to the node the
// directory names, with its method, path, body and credential; local
// agents are served here; unknown ones are this node's 404; a directory
// that does not answer is a 503 and nothing is forwarded. (comms/send to
// a remote agent: cmd/fangd/clustertest TestAgentRoutedToItsNode.)
func TestAgentRequestsRoutedByDirectory(t *testing.T) {
	t.Parallel()
	host, seen := fakeHost(t, 200, "application/json", `{"response":"from n2"}`)
	dir := &fakeAgentDir{recs: map[string]fcluster.AgentRecord{}}
	dir.put(fcluster.AgentRecord{ID: "0b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", Name: "far", Node: "n2"})
	withAgents, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, withAgents, func(s *Server) {
		s.hosts = testRouter(map[string]string{"n2": host.URL}, io.Discard)
		s.agentDir = dir
	})

	// Created here: registered before the 201.
	local := ts.newAgent(t, "near")
	if r, _ := dir.Lookup(context.Background(), local.ID, ""); len(r) != 1 || r[0].Node != "n1" {
		t.Fatalf("not registered: %+v", r)
	}
	ts.mustStatus(t, 200, "GET", "/api/agents/near", "")

	r := ts.mustStatus(t, 200, "POST", "/api/agents/far/message?x=1", `{"message":"hi"}`)
	if string(r.body) != `{"response":"from n2"}` {
		t.Fatalf("relayed %s", r.body)
	}
	ts.mustStatus(t, 200, "PATCH", "/api/agents/0b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", `{"name":"farther"}`)
	got := seen()
	if len(got) != 2 || got[0].method != "POST" || got[0].uri != "/api/agents/far/message?x=1" || got[0].body != `{"message":"hi"}` ||
		got[0].fwd != "n1" || got[0].auth != "Bearer "+testKey || got[1].method != "PATCH" || got[1].uri != "/api/agents/0b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10" {
		t.Fatalf("forwarded %+v", got)
	}

	// Listed with its node, after the local ones.
	var list struct {
		Items []map[string]any `json:"items"`
		Total int              `json:"total"`
	}
	ts.mustStatus(t, 200, "GET", "/api/agents", "").json(t, &list)
	if list.Total != 2 || list.Items[0]["name"] != "near" || list.Items[1]["name"] != "far" || list.Items[1]["node"] != "n2" || list.Items[1]["remote"] != true {
		t.Fatalf("list %+v", list)
	}

	ts.mustStatus(t, 404, "GET", "/api/agents/nowhere", "")
	// Two other nodes have the name: ambiguous.
	dir.put(fcluster.AgentRecord{ID: "1b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", Name: "far", Node: "n3"})
	if e := ts.mustStatus(t, 409, "GET", "/api/agents/far", "").envelope(t); e.Code != "agent_name_ambiguous" {
		t.Fatalf("%+v", e)
	}

	dir.setErr(errors.New("etcd down"))
	if e := ts.mustStatus(t, 503, "GET", "/api/agents/0b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", "").envelope(t); e.Code != "cluster_unavailable" {
		t.Fatalf("%+v", e)
	}
	// A create the directory does not take is not kept.
	ts.mustStatus(t, 503, "POST", "/api/agents", `{"name":"lost","model":"fake/m"}`)
	dir.setErr(nil)
	ts.mustStatus(t, 404, "GET", "/api/agents/lost", "")
	if len(seen()) != 2 {
		t.Fatalf("forwarded while the directory was down: %+v", seen())
	}
	var l2 struct {
		Total int `json:"total"`
	}
	ts.mustStatus(t, 200, "GET", "/api/agents", "").json(t, &l2)
	if l2.Total != 3 { // near, far on n2, far on n3
		t.Fatalf("total %d", l2.Total)
	}

	// Deleted here: removed from the directory.
	ts.mustStatus(t, 200, "DELETE", "/api/agents/near", "")
	if r, _ := dir.Lookup(context.Background(), local.ID, ""); len(r) != 0 {
		t.Fatalf("still registered: %+v", r)
	}
}
