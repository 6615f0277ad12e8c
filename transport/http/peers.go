package http

import (
	"github.com/valyala/fasthttp"

	fcluster "github.com/fangd/fangd/actors/cluster"
	ofppeer "github.com/fangd/fangd/actors/peer"
)

// OFP peer network: GET /api/peers, /api/peers/{id}, /api/network/status,
// /api/network/trusted-peers and DELETE /api/network/trusted-peers/{id}
// (docs/ofp.md). With the network off (deps.Network nil) the lists are
// empty and a single peer is 404, as LibreFang answers.

func (s *Server) peerRoutes() {
	s.api("GET", "/peers", s.listPeers)
	s.api("GET", "/peers/{id}", s.getPeer)
	s.api("GET", "/network/status", s.networkStatus)
	s.api("GET", "/network/trusted-peers", s.trustedPeers)
	s.api("DELETE", "/network/trusted-peers/{id}", s.forgetPeer)
}

func errNetworkOff() error {
	return &apiError{fasthttp.StatusNotFound, "not_found", "Peer networking is not enabled"}
}

// listPeers pages like LibreFang (?offset=&limit=, at most 100): the seed's
// "peers" and LibreFang's "items" carry the same page.
func (s *Server) listPeers(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 100, 100)
	if err != nil {
		return err
	}
	all := []ofppeer.PeerInfo{}
	if s.deps.Network != nil {
		if all, err = s.deps.Network.Peers(s.reqCtx(ctx)); err != nil {
			return err
		}
	}
	items := page(all, offset, limit)
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Peers  []ofppeer.PeerInfo `json:"peers"`
		Items  []ofppeer.PeerInfo `json:"items"`
		Total  int                `json:"total"`
		Offset int                `json:"offset"`
		Limit  int                `json:"limit"`
		Next   *int               `json:"next_offset"`
	}{items, items, len(all), offset, limit, nextOffset(len(all), offset, limit)})
	return nil
}

// getPeer is one peer by node id or node name.
func (s *Server) getPeer(ctx *fasthttp.RequestCtx) error {
	if s.deps.Network == nil {
		return errNetworkOff()
	}
	p, err := s.deps.Network.Peer(s.reqCtx(ctx), ctx.UserValue("id").(string))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, p)
	return nil
}

type networkStatus struct {
	Online              bool    `json:"online"`
	Enabled             bool    `json:"enabled"`
	NodeID              string  `json:"node_id"`
	NodeName            string  `json:"node_name"`
	ListenAddr          string  `json:"listen_addr"`
	ListenAddress       string  `json:"listen_address"`
	ProtocolVersion     string  `json:"protocol_version"`
	ConnectedPeers      int     `json:"connected_peers"`
	TotalPeers          int     `json:"total_peers"`
	PeerCount           int     `json:"peer_count"`
	IdentityFingerprint *string `json:"identity_fingerprint"`
	PinnedPeers         int     `json:"pinned_peers"`
	ofppeer.Counters
	ofppeer.Rates
	// LinkEncryption is the policy: "negotiated" (TLS 1.3 with fangd
	// peers that offer it, LibreFang's plaintext + HMAC with the others),
	// "required", or "none"; each peer's link_mode says what it uses.
	LinkEncryption string `json:"link_encryption"`
	// Cluster is fangd's cluster mode (GET /api/cluster): its members
	// are this daemon's own nodes, not OFP peers.
	Cluster networkCluster `json:"cluster"`
}

type networkCluster struct {
	Enabled bool              `json:"enabled"`
	Name    string            `json:"name,omitempty"`
	Members []fcluster.Member `json:"members"`
	Error   string            `json:"error,omitempty"`
}

// networkStatus is LibreFang's status object plus the seed's throughput:
// messages and bytes in and out since start, and per second over the
// last minute.
func (s *Server) networkStatus(ctx *fasthttp.RequestCtx) error {
	st := networkStatus{ProtocolVersion: "ofp/1", LinkEncryption: "none"}
	if n := s.deps.Network; n != nil {
		ns, err := n.Status(s.reqCtxWait(ctx))
		if err != nil {
			return err
		}
		fp := n.Fingerprint()
		st.Online, st.Enabled = true, true
		st.NodeID, st.NodeName = n.NodeID(), n.NodeName()
		st.ListenAddr, st.ListenAddress = n.ListenAddr(), n.ListenAddr()
		st.ConnectedPeers, st.TotalPeers, st.PeerCount = ns.Connected, ns.Total, ns.Connected
		st.IdentityFingerprint, st.PinnedPeers = &fp, ns.Pinned
		st.Counters, st.Rates = ns.Totals, ns.Rates
		st.LinkEncryption = n.LinkEncryption()
	}
	st.Cluster.Members = []fcluster.Member{}
	if cs, err := s.clusterStatus(ctx); err != nil {
		st.Cluster.Enabled, st.Cluster.Error = true, "etcd did not answer"
	} else {
		st.Cluster.Enabled, st.Cluster.Name, st.Cluster.Members = cs.Enabled, cs.Name, cs.Members
	}
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}

// trustedPeers lists the TOFU pins in LibreFang's envelope (offset 0,
// limit null: the list is not paged there either).
func (s *Server) trustedPeers(ctx *fasthttp.RequestCtx) error {
	items := []ofppeer.TrustedPeer{}
	if s.deps.Network != nil {
		items = s.deps.Network.Trusted()
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Items  []ofppeer.TrustedPeer `json:"items"`
		Total  int                   `json:"total"`
		Offset int                   `json:"offset"`
		Limit  *int                  `json:"limit"`
	}{items, len(items), 0, nil})
	return nil
}

// forgetPeer removes a pin (audited): the node's next handshake pins the
// key it presents then, which is how a node that rotated its key is let
// back in. Its open links are not closed.
func (s *Server) forgetPeer(ctx *fasthttp.RequestCtx) error {
	if s.deps.Network == nil {
		return errNetworkOff()
	}
	id := ctx.UserValue("id").(string)
	w := who(ctx)
	if err := s.deps.Network.Forget(s.reqCtxWait(ctx), id, w.Actor, w.SourceIP); err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "forgotten", "node_id": id})
	return nil
}
