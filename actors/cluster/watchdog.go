package cluster

import (
	"sync"
	"time"
)

// Watchdog acts on a node that has dropped out of its own cluster
// topology while it is still alive: upstream's etcd-rejoin trap (issue
// #1133, DESIGN.md "Cluster mode"). protoactor-go's etcd provider removes
// the node's own member when its key is deleted (the lease ran out during
// an etcd blip) and skips every later put of its own key, and the other
// members block the member id for good once it left their topology. The
// member can therefore never come back under its id, and a fresh id needs
// a fresh actor system: upstream's Cluster.Shutdown shuts the whole actor
// system down, and every fangd actor lives in it. So the only safe way
// back is a restart of the process (docs/cluster.md "Watchdog").
type Watchdog struct {
	// Grace is how long the node may stay excluded before Expired runs.
	Grace time.Duration
	// Excluded runs once when the node is first found excluded (audit).
	Excluded func(memberID string)
	// Expired runs once when the node has stayed excluded for Grace (the
	// daemon's action: exit for a supervisor to restart it).
	Expired func(memberID string, after time.Duration)
}

// watch tracks one exclusion; observe is called on every refresh.
type watch struct {
	w        Watchdog
	mu       sync.Mutex
	since    time.Time // zero while in the topology
	reported bool
	fired    bool
}

// observe records whether the node is excluded at now and runs the
// callbacks due. A node back in its topology resets the watch (upstream
// does not re-add it today, but a later version might).
func (w *watch) observe(memberID string, excluded bool, now time.Time) {
	w.mu.Lock()
	var report, fire bool
	var after time.Duration
	switch {
	case !excluded:
		w.since, w.reported, w.fired = time.Time{}, false, false
	case w.since.IsZero():
		w.since = now
		w.reported = true
		report = true
		fire = w.w.Grace <= 0
		w.fired = fire
	case !w.fired && now.Sub(w.since) >= w.w.Grace:
		w.fired = true
		fire = true
		after = now.Sub(w.since)
	}
	w.mu.Unlock()
	if report && w.w.Excluded != nil {
		w.w.Excluded(memberID)
	}
	if fire && w.w.Expired != nil {
		w.w.Expired(memberID, after)
	}
}
