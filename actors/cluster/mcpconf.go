package cluster

import (
	"context"
	"encoding/json"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/mcp"
)

// The MCP servers of config.toml in cluster mode (docs/cluster.md, "MCP
// servers across the cluster"): each runs on exactly one of the nodes
// whose config.toml lists it, from that node's own file (the spec and its
// secrets never go to etcd). A second ownedSet, in listing mode
// (listing.go), under /fangd/mcp/<cluster>/conf/:
//
//   - lst/<name>/<node>: node lists name; its advert holds the hash of
//     the spec without secret values, the transport type and timeout
//     (mcp.ConfigAd), and its member id for the rendezvous choice;
//   - own/<name>: the host, bound to its owner lease, taken only by a
//     node that advertises the name;
//   - st/<name>/view: the host's view (status, tools), as for the
//     servers added through the API.
//
// A name is either a config server or an API server cluster-wide: an
// advert is written only while no API server of the name exists, and an
// API server is created only while no node advertises the name (the
// same Txn condition on both sides; mcp.go's PutServer).

// confDir is the config servers' prefix below the MCP prefix.
const confDir = "conf/"

func newMCPConf(cli *clientv3.Client, cluster, memberID, nodeName string, log zerolog.Logger,
	members func() []string, apply func([]mcp.ConfigServer)) *ownedSet {
	apiCfg := "/fangd/mcp/" + cluster + "/cfg/"
	s := newOwnedSet(cli, "/fangd/mcp/"+cluster+"/"+confDir, "st/", "mcp_config_server", memberID, nodeName, log, members,
		func(es []ownedEntity) {
			out := make([]mcp.ConfigServer, 0, len(es))
			for _, e := range es {
				var as []advert
				if json.Unmarshal(e.Record, &as) != nil {
					continue
				}
				cs := mcp.ConfigServer{Name: e.Name, View: e.State["view"], Node: e.Node, Mine: e.Mine}
				for _, a := range as {
					var ad mcp.ConfigAd
					_ = json.Unmarshal(a.Info, &ad)
					ad.Node = a.Node
					cs.Listing = append(cs.Listing, ad)
				}
				out = append(out, cs)
			}
			apply(out)
		})
	s.withState = true
	s.list = &listing{
		cond: func(name string) []clientv3.Cmp {
			return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(apiCfg+name), "=", 0)}
		},
		conflicted: func(name string) {
			log.Error().Str("mcp_server", name).Msg("config.toml lists an MCP server whose name was added through the API in this cluster: the API one runs, this node's entry does not; delete one of them")
		},
	}
	return s
}

// confAdvertPrefix is where nodes advertise the config server name, for
// the API side's create condition.
func (m *MCPServers) confAdvertPrefix(name string) string { return m.conf.pre + "lst/" + name + "/" }

// AdvertiseConfig sets the config.toml servers this node lists (name ->
// its advert); its adverts in etcd follow on the next round (now).
func (m *MCPServers) AdvertiseConfig(ads map[string]mcp.ConfigAd) {
	infos := make(map[string][]byte, len(ads))
	for name, ad := range ads {
		ad.Node = ""
		b, _ := json.Marshal(ad)
		infos[name] = b
	}
	m.conf.advertise(infos)
}

// PublishConfigState writes the host's view of a config server's
// connection under its owner lease (fenced).
func (m *MCPServers) PublishConfigState(ctx context.Context, name string, state []byte) error {
	return m.conf.commit(ctx, name, m.conf.stKey(name), []stateOp{{key: "view", value: state}})
}
