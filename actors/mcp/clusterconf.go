package mcp

// The servers of config.toml in cluster mode (docs/cluster.md, "MCP
// servers across the cluster"): each node advertises the ones its own
// file lists (a hash of the spec without secret values, never the spec);
// the cluster's rounds (actors/cluster mcpconf.go) place each on exactly
// one of the nodes advertising it, which runs it from its own file and
// publishes its state; every node lists it, the others from that state,
// and sends calls of its tools to the host. Nodes whose specs of a name
// differ still share one connection, run from the host's spec; every
// node shows spec_differs and logs it once.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// ConfigAd is one node's advertisement of a config.toml server: nothing
// secret (Hash is of the spec without its secret values).
type ConfigAd struct {
	// Node is the advertising node (set by the round, not advertised).
	Node        string `json:"node,omitempty"`
	Hash        string `json:"hash"`
	Transport   string `json:"transport"`
	TimeoutSecs int    `json:"timeout_secs,omitempty"`
}

// ConfigServer is one config.toml server as an ownership round saw it:
// the nodes that list it (adverts of nodes that are down included), its
// host ("" while none holds it; Mine when it is this node) and the host's
// published view.
type ConfigServer struct {
	Name    string
	Listing []ConfigAd
	View    []byte
	Node    string
	Mine    bool
}

type configView struct{ servers []ConfigServer }

// ApplyConfigCluster hands the supervisor a round of the config servers.
func (m *Manager) ApplyConfigCluster(servers []ConfigServer) {
	m.env.k.Root.Send(m.pid, &configView{servers: servers})
}

// specHash is the hash nodes compare to tell that they list a server the
// same way: of the spec with its secret values taken out (env values,
// header values), so that the advert says nothing secret.
func specHash(sp Spec) string {
	stored, _ := splitSecrets(sp)
	b, _ := json.Marshal(stored)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// advertiseConfig hands the cluster the servers this node's config.toml
// lists (no etcd write here: the cluster's round writes them).
func (m *Manager) advertiseConfig() {
	h := m.cluster()
	if h == nil {
		return
	}
	ads := map[string]ConfigAd{}
	for _, sp := range m.configSpecs() {
		ads[sp.Name] = ConfigAd{Hash: specHash(sp), Transport: sp.Transport.Type, TimeoutSecs: int(sp.Timeout() / time.Second)}
	}
	h.c.AdvertiseConfig(ads)
}

// applyConfig reconciles the supervisor with a round of the config
// servers: one this node holds gets its connection actor; one another
// node holds (or none) shows the host's published state, its tools
// routed there; one no node lists any more is forgotten.
func (s *supervisor) applyConfig(c actor.Context, v *configView) {
	local := map[string]Spec{}
	for _, sp := range s.m.configSpecs() {
		local[sp.Name] = sp
	}
	seen := map[string]bool{}
	for _, cs := range v.servers {
		prev, had := s.defs[cs.Name]
		if had && prev.source == sourceAPI {
			continue // the API server holds the name (no advert of it is written while it exists)
		}
		seen[cs.Name] = true
		spec, listed := local[cs.Name]
		if !listed {
			spec = Spec{Name: cs.Name}
			if len(cs.Listing) > 0 {
				spec.Transport.Type, spec.TimeoutSecs = cs.Listing[0].Transport, cs.Listing[0].TimeoutSecs
			}
		}
		d := definition{spec: spec, source: sourceConfig, clustered: true, node: cs.Node, mine: cs.Mine && listed,
			elsewhere: !listed, listing: cs.Listing, differs: specsDiffer(cs.Listing)}
		if d.differs && !prev.differs {
			s.warnDiffers(cs.Name, cs.Listing)
		}
		s.defs[cs.Name] = d
		_, running := s.children[cs.Name]
		switch {
		case d.mine && !running && s.crashed[cs.Name]:
			// Stopped by supervision: down until the file changes.
		case d.mine && !running:
			if !had || !prev.mine {
				s.states[cs.Name] = serverState{}
			}
			s.spawn(c, cs.Name)
		case d.mine:
		default:
			delete(s.crashed, cs.Name)
			if running {
				s.stopChild(c, cs.Name)
			}
			s.states[cs.Name] = remoteState(cs.View, cs.Node)
		}
	}
	for name, d := range s.defs {
		if d.source != sourceConfig || !d.clustered || seen[name] {
			continue
		}
		if d.elsewhere {
			s.forget(c, name) // no node lists it any more
			continue
		}
		// Listed here but not (yet) in etcd: not run here.
		s.stopChild(c, name)
		d.node, d.mine, d.listing, d.differs = "", false, nil, false
		s.defs[name] = d
		s.states[name] = serverState{Status: StatusConnecting}
	}
	s.publishIndex()
}

// remoteState is a server's state on a node that does not host it: the
// host's published view. With no host (it died; for a config server,
// maybe the only node listing it) the last view's tools stay routable,
// so that calls answer host_unreachable, not unknown_tool.
func remoteState(view []byte, node string) serverState {
	var st serverState
	if len(view) > 0 {
		_ = json.Unmarshal(view, &st)
	}
	if node == "" || st.Status == "" {
		st.Status = StatusConnecting
		if node == "" {
			st.LastError = "no cluster node runs it right now (its host stopped; for a config.toml server, maybe every node listing it)"
		}
	}
	st.Pid = 0 // another node's process
	return st
}

// specsDiffer reports nodes listing a server with different specs.
func specsDiffer(ads []ConfigAd) bool {
	for _, a := range ads {
		if a.Hash != ads[0].Hash {
			return true
		}
	}
	return false
}

// warnDiffers logs, once per change, that the nodes' specs of a server
// differ: node names and hashes only.
func (s *supervisor) warnDiffers(name string, ads []ConfigAd) {
	var parts []string
	for _, a := range ads {
		parts = append(parts, a.Node+"="+a.Hash)
	}
	s.env.log.Warn().Str("mcp_server", name).Str("spec_hashes", strings.Join(parts, " ")).
		Msg("nodes list this MCP server in config.toml with different specs; one connection runs, from its host's file; make the files agree")
}

// restoreConfig puts back this node's config.toml entry of name after the
// API server that held the name is gone; the next round places it.
func (s *supervisor) restoreConfig(name string) {
	i := slices.IndexFunc(s.m.configSpecs(), func(sp Spec) bool { return sp.Name == name })
	if i < 0 {
		return
	}
	s.defs[name] = definition{spec: s.m.configSpecs()[i], source: sourceConfig, clustered: true}
	s.states[name] = serverState{Status: StatusConnecting}
}

// reloadClustered applies one server of a reloaded config.toml in
// cluster mode: nothing starts here (the round places it after the new
// advert); the host of a changed one reconnects with the new spec.
func (s *supervisor) reloadClustered(c actor.Context, r *ReloadReply, name string, sp Spec, d definition, existed bool) {
	nd := definition{spec: sp, source: sourceConfig, clustered: true, node: d.node, mine: d.mine, listing: d.listing, differs: d.differs}
	s.defs[name] = nd
	switch {
	case !existed || d.elsewhere:
		if !existed {
			s.states[name] = serverState{}
		}
		r.Added = append(r.Added, name)
	case d.mine && !equalDefinition(d.spec, sp):
		s.reapply(c, name)
		r.Reconnected = append(r.Reconnected, name)
	}
}
