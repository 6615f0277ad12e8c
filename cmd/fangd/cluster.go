package main

import (
	"context"

	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/usage"
)

// startCluster joins the cluster named by [cluster] / --cluster (audited).
// Channels and budget admission become cluster-wide; every other entity
// kind still runs per node (fcluster.Kinds says so, and GET /api/cluster
// reports it).
func (d *daemon) startCluster(cfg Config, agents *agent.Agents, meter *usage.Meter) error {
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
	// Budgets: spend and open reservations in etcd, so that a limit
	// holds for the cluster, not per node (docs/cluster.md).
	b, err := n.StartBudget(d.kernel.Metrics)
	if err != nil {
		return err
	}
	d.clusterBudget = b
	meter.UseCluster(b)
	// Limits set through any node apply on every node (an agent's to the
	// agents of its name: ids differ per node).
	if err := b.WatchLimits(meter.ApplyClusterLimits); err != nil {
		return err
	}
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
	if d.clusterBudget != nil {
		d.clusterBudget.Stop()
	}
	d.cluster.Stop()
	d.cluster = nil
}
