package http

import (
	"context"

	"github.com/valyala/fasthttp"

	fcluster "github.com/fangd/fangd/actors/cluster"
)

// Cluster mode: GET /api/cluster (docs/cluster.md). Single node: enabled
// false, no members, every kind "single_node".

// ClusterView is what the HTTP layer needs of a cluster member.
type ClusterView interface {
	Name() string
	NodeName() string
	MemberID() string
	Members(ctx context.Context) ([]fcluster.Member, error)
}

// SetCluster hands over the cluster membership, which starts after the
// server is built (it needs the listener's address); call before Serve.
// Requests for an entity another node hosts are forwarded to it when c
// can name a node's HTTP URL (forward.go).
func (s *Server) SetCluster(c ClusterView) {
	s.cluster = c
	if l, ok := c.(interface {
		NodeURL(ctx context.Context, node string) (string, error)
	}); ok {
		s.hosts = newHostRouter(c.NodeName(), l.NodeURL, s.log)
	}
	if l, ok := c.(interface{ Agents() *fcluster.AgentDir }); ok {
		s.agentDir = l.Agents()
	}
	s.useA2ACluster(c)
}

func (s *Server) clusterRoutes() {
	s.api("GET", "/cluster", s.getCluster)
}

type clusterStatus struct {
	Enabled  bool                `json:"enabled"`
	Mode     string              `json:"mode"`
	Name     string              `json:"name,omitempty"`
	NodeName string              `json:"node_name,omitempty"`
	MemberID string              `json:"member_id,omitempty"`
	Members  []fcluster.Member   `json:"members"`
	Kinds    []fcluster.KindInfo `json:"kinds"`
	// Channels says which node hosts each channel (cluster mode).
	Channels []fcluster.ChannelHost `json:"channels,omitempty"`
	// Webhooks says which node hosts each webhook endpoint's outbox.
	Webhooks []fcluster.WebhookHost `json:"webhooks,omitempty"`
	// MCPConnections says which node runs each MCP server, added through
	// the API (source "api") or listed in config.toml ("config": run on
	// one of the nodes whose file lists it).
	MCPConnections []fcluster.MCPHost `json:"mcp_connections,omitempty"`
}

func (s *Server) clusterStatus(ctx context.Context) (clusterStatus, error) {
	st := clusterStatus{Mode: "single_node", Members: []fcluster.Member{}}
	if s.cluster == nil {
		for _, k := range fcluster.Kinds {
			st.Kinds = append(st.Kinds, fcluster.KindInfo{Kind: k.Kind, Mode: "single_node", Note: "cluster mode is off"})
		}
		return st, nil
	}
	ms, err := s.cluster.Members(ctx)
	if err != nil {
		return st, &apiError{fasthttp.StatusServiceUnavailable, "cluster_unavailable", "etcd did not answer"}
	}
	st.Enabled, st.Mode = true, "cluster"
	st.Name, st.NodeName, st.MemberID = s.cluster.Name(), s.cluster.NodeName(), s.cluster.MemberID()
	st.Members, st.Kinds = ms, fcluster.Kinds
	if ch, ok := s.cluster.(interface{ ChannelHosts() []fcluster.ChannelHost }); ok {
		st.Channels = ch.ChannelHosts()
	}
	if wh, ok := s.cluster.(interface{ WebhookHosts() []fcluster.WebhookHost }); ok {
		st.Webhooks = wh.WebhookHosts()
	}
	if mh, ok := s.cluster.(interface{ MCPHosts() []fcluster.MCPHost }); ok {
		st.MCPConnections = mh.MCPHosts()
	}
	return st, nil
}

func (s *Server) getCluster(ctx *fasthttp.RequestCtx) error {
	st, err := s.clusterStatus(ctx)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}
