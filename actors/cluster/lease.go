package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseKeeper is one etcd lease of this node's, granted on demand and
// kept alive by the etcd client until its context ends: the budget
// ledger's reservation lease (budget.go) and each cluster-wide kind's
// owner lease (owned.go). A lease whose keep-alive channel closes
// (expired on the server, or the client closed) is forgotten, so the
// next ensure grants a new one; whatever was bound to the old one is
// gone in etcd.
type leaseKeeper struct {
	cli *clientv3.Client
	ctx context.Context // ends the keep-alive
	ttl int64           // seconds
	// grantWithin bounds one Grant.
	grantWithin time.Duration
	log         zerolog.Logger
	// notGranted and lost are the owner's log lines for a refused Grant
	// and a lost lease.
	notGranted, lost string

	mu sync.Mutex
	id clientv3.LeaseID
	ok time.Time // last keep-alive the etcd server acknowledged
}

// state is the lease held (0: none) and when etcd last acknowledged it.
func (k *leaseKeeper) state() (clientv3.LeaseID, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.id, k.ok
}

// fresh is the lease if one is held and was acknowledged within stale,
// else 0.
func (k *leaseKeeper) fresh(stale time.Duration) clientv3.LeaseID {
	id, ok := k.state()
	if id == 0 || time.Since(ok) > stale {
		return 0
	}
	return id
}

// forget drops the lease without revoking it and returns it (0: none),
// for the caller to revoke.
func (k *leaseKeeper) forget() clientv3.LeaseID {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := k.id
	k.id = 0
	return id
}

// ensure grants a lease and starts keeping it alive unless one is held;
// it returns the lease held or granted, 0 when etcd refused (logged).
func (k *leaseKeeper) ensure() clientv3.LeaseID {
	if id, _ := k.state(); id != 0 {
		return id
	}
	ctx, cancel := context.WithTimeout(k.ctx, k.grantWithin)
	g, err := k.cli.Grant(ctx, k.ttl)
	cancel()
	if err != nil {
		k.log.Warn().Err(err).Msg(k.notGranted)
		return 0
	}
	ch, err := k.cli.KeepAlive(k.ctx, g.ID)
	if err != nil {
		return 0
	}
	k.mu.Lock()
	k.id, k.ok = g.ID, time.Now()
	k.mu.Unlock()
	go func() {
		for range ch {
			k.mu.Lock()
			k.ok = time.Now()
			k.mu.Unlock()
		}
		k.mu.Lock()
		if k.id == g.ID {
			k.id = 0
		}
		k.mu.Unlock()
		if k.ctx.Err() == nil {
			k.log.Warn().Msg(k.lost)
		}
	}()
	return g.ID
}

// revokeLease revokes lease (if any) within 2 s, after the keeper's
// context ended too, so that what is bound to it is freed at once.
func revokeLease(cli *clientv3.Client, lease clientv3.LeaseID) {
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, _ = cli.Revoke(ctx, lease)
	cancel()
}
