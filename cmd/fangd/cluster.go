package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/usage"
)

// startCluster joins the cluster named by [cluster] / --cluster (audited).
// Channels, webhook endpoints and budget admission become cluster-wide,
// agents are routed to the node that created them; every other entity
// kind still runs per node (fcluster.Kinds says so, and GET /api/cluster
// reports it).
func (d *daemon) startCluster(home string, cfg Config, agents *agent.Agents, meter *usage.Meter) error {
	cc := cfg.Cluster
	marker := filepath.Join(home, watchdogMarker)
	etcdAuth, err := cc.etcdAuth(d.vault)
	if err != nil {
		return err
	}
	nodeName, err := cc.nodeName(home, d.ln.Addr().String())
	if err != nil {
		return err
	}
	channels := d.channels
	n, err := fcluster.Start(d.kernel, fcluster.Options{
		Endpoints: cc.Etcd, Name: cc.clusterName(), NodeName: nodeName,
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
			if mc := d.clusterMCP.Load(); mc != nil {
				h[fcluster.KindMCP] = mc.Hosted()
			}
			if as, err := agents.List(ctx); err == nil {
				h[fcluster.KindAgent] = len(as)
			}
			return h
		},
		Watchdog: fcluster.Watchdog{
			Grace: time.Duration(cc.watchdogGrace()) * time.Second,
			Excluded: func(member string) {
				d.record("cluster_member_excluded", "this node (member "+member+") dropped out of the cluster topology (etcd blip); its channels and webhook outboxes stop here; watchdog action "+cc.watchdogAction()+" in "+strconv.Itoa(cc.watchdogGrace())+" s")
			},
			Expired: func(member string, after time.Duration) {
				if cc.watchdogAction() != "exit" {
					return
				}
				d.record("cluster_watchdog_exit", "member "+member+" still excluded after "+after.Round(time.Second).String()+": stopping with exit status "+strconv.Itoa(exitClusterExcluded)+" for the supervisor to restart it with a fresh member id")
				// The next start says it rejoined (cluster_rejoined).
				if err := os.WriteFile(marker, []byte(member), 0o600); err != nil {
					d.log.Warn().Err(err).Msg("cluster watchdog marker not written")
				}
				select {
				case d.watchdogExit <- struct{}{}:
				default:
				}
			},
		},
		TLS:      tlsFiles(cc),
		EtcdTLS:  cc.etcdTLS(),
		EtcdAuth: etcdAuth,
		Log:      d.log.With().Str("component", "cluster").Logger(),
	})
	if err != nil {
		return err
	}
	d.cluster = n
	// Agents are routed: the directory in etcd names each agent's node.
	// Re-register the ones this node hosts and drop its stale entries
	// (an agent deleted while etcd did not answer) before serving.
	if err := d.syncAgentDirectory(n, agents); err != nil {
		return err
	}
	// Channels are cluster-wide: records and state in etcd, each adapter
	// on the one node holding its owner lease.
	d.clusterCh.Store(n.StartChannels(channels))
	// So are webhook endpoints: records in etcd, each outbox on the one
	// node holding its owner lease, every node appending its events.
	d.clusterWh.Store(n.StartWebhooks(d.webhooks))
	// Another node's appends reach the outbox owner at once (a watch on
	// the intakes), not on its next round.
	n.WatchWebhookIntake(d.webhooks)
	// So are MCP servers added through the API: specs and sealed
	// secrets in etcd, each connection on the one node holding its owner
	// lease, its tools called from every node.
	mc, err := n.StartMCP(d.mcp)
	if err != nil {
		return err
	}
	d.clusterMCP.Store(mc)
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
	// The TOTP enrolment that approving may need is the cluster's: sealed
	// in etcd, each accepted code's step a compare-and-swap there. In
	// force before requests are published (their records say whether a
	// code is needed).
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
	local, err := d.reloads.approvals.UseTOTPCluster(tctx, n.TOTP())
	tcancel()
	if err != nil {
		return fmt.Errorf("cluster: TOTP enrolment: %w", err)
	}
	if local {
		d.log.Warn().Msg("this node's own TOTP enrolment is not used in cluster mode: enrol once through any node (POST /api/approvals/totp/setup); the enrolment is shared")
	}
	// Approval requests are cluster-wide: a record per request in etcd.
	n.StartApprovals(d.reloads.approvals)
	// Each node's audit tip goes to etcd and the others' into its chain
	// (cluster_checkpoint); its own recorded tip is checked first.
	n.StartAuditCheckpoints(fcluster.LogChain(d.audit))
	d.record("cluster_joined", "cluster "+n.Name()+" as "+n.NodeName()+" (member "+n.MemberID()+" at "+n.Address()+")")
	if old, err := os.ReadFile(marker); err == nil {
		d.record("cluster_rejoined", "back in cluster "+n.Name()+" as member "+n.MemberID()+" after the watchdog stopped member "+string(old))
		_ = os.Remove(marker)
	}
	d.log.Info().Str("cluster", n.Name()).Str("node", n.NodeName()).Str("member_id", n.MemberID()).
		Str("address", n.Address()).Strs("etcd", n.Endpoints()).Msg("joined the cluster")
	return nil
}

// watchdogMarker, in the home, holds the member id the watchdog stopped,
// until the next start has rejoined and audited cluster_rejoined.
const watchdogMarker = "cluster-watchdog-exit"

func tlsFiles(cc ClusterConfig) *fcluster.TLSFiles {
	if !cc.tlsEnabled() {
		return nil
	}
	return &fcluster.TLSFiles{Cert: cc.TLSCert, Key: cc.TLSKey, CA: cc.TLSCA}
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

// syncAgentDirectory registers this node's agents in the cluster's agent
// directory and removes entries naming this node for agents it no longer
// has.
func (d *daemon) syncAgentDirectory(n *fcluster.Node, agents *agent.Agents) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	as, err := agents.List(ctx)
	if err != nil {
		return fmt.Errorf("cluster: listing agents for the directory: %w", err)
	}
	local := make(map[string]string, len(as))
	for _, a := range as {
		local[a.ID] = a.Name
	}
	if err := n.Agents().Sync(ctx, local); err != nil {
		return fmt.Errorf("cluster: agent directory: %w", err)
	}
	return nil
}
