package main

import "github.com/fangd/fangd/actors/a2a"

// startClusterA2A makes A2A tasks cluster-wide (docs/cluster.md "A2A
// tasks across the cluster"): the task directory in etcd, its writer and
// lost-task sweep, handed to the A2A service. It runs after startCluster
// and before the HTTP layer is given the cluster (SetCluster reads the
// directory from the node). Nothing happens with A2A off.
func (d *daemon) startClusterA2A(svc *a2a.Service) {
	if svc == nil || d.cluster == nil {
		return
	}
	d.cluster.StartA2A(svc, svc.ClusterTTL())
}
