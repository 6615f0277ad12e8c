package main

import (
	"context"

	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
)

// startCluster joins the cluster named by [cluster] / --cluster (audited).
// Channels and webhook endpoints become cluster-wide; every other entity
// kind still runs per node (fcluster.Kinds says so, and GET /api/cluster reports it).
func (d *daemon) startCluster(cfg Config, agents *agent.Agents) error {
	cc := cfg.Cluster
	channels := d.channels
	n, err := fcluster.Start(d.kernel, fcluster.Options{
		Endpoints: cc.Etcd, Name: cc.clusterName(), NodeName: cc.nodeName(d.ln.Addr().String()),
		HTTPURL:  "http://" + d.ln.Addr().String(),
		BindHost: cc.BindHost, BindPort: cc.BindPort, AdvertisedHost: cc.AdvertisedHost,
		// How many of each per-node kind this node runs, read every
		// refresh (2 s) for the node record in etcd.
		Hosted: func(ctx context.Context) map[string]int {
			h := map[string]int{}
			if cl := d.clusterChannels(); cl != nil {
				h[fcluster.KindChannel] = cl.Hosted()
			}
			if wh := d.clusterWh.Load(); wh != nil {
				h[fcluster.KindWebhook] = wh.Hosted()
			}
			if as, err := agents.List(ctx); err == nil {
				h[fcluster.KindAgent] = len(as)
			}
			return h
		},
		Log: d.log.With().Str("component", "cluster").Logger(),
	})
	if err != nil {
		return err
	}
	d.cluster = n
	// Channels are cluster-wide: records and state in etcd, each adapter
	// on the one node holding its owner lease.
	d.clusterCh.Store(n.StartChannels(channels))
	// So are webhook endpoints: records in etcd, each outbox on the one
	// node holding its owner lease, every node appending its events.
	d.clusterWh.Store(n.StartWebhooks(d.webhooks))
	d.record("cluster_joined", "cluster "+n.Name()+" as "+n.NodeName()+" (member "+n.MemberID()+" at "+n.Address()+")")
	d.log.Info().Str("cluster", n.Name()).Str("node", n.NodeName()).Str("member_id", n.MemberID()).
		Str("address", n.Address()).Strs("etcd", n.Endpoints()).Msg("joined the cluster")
	return nil
}

func (d *daemon) clusterChannels() *fcluster.Channels { return d.clusterCh.Load() }

// stopCluster leaves the cluster; it runs after the root actors stopped,
// since upstream's cluster shutdown also shuts the actor system down.
func (d *daemon) stopCluster() {
	if d.cluster == nil {
		return
	}
	d.cluster.Stop()
	d.cluster = nil
}
