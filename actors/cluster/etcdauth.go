package cluster

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdAuth is etcd's username/password authentication on fangd's etcd
// client (docs/cluster.md "etcd authentication"): the membership
// provider's connection and fangd's own, which share one configuration.
// The etcd user needs read and write on the keys under /fangd/ (a role
// with readwrite on that prefix).
type EtcdAuth struct {
	Username string
	// Password is never logged, never part of an error, and not printed
	// by %v (String).
	Password string
}

// String names the user only, so that a struct printed by mistake does
// not show the password.
func (a EtcdAuth) String() string { return "etcd user " + a.Username }

// etcdKeyPrefix is where every key fangd writes lives: what an etcd role
// for fangd must grant.
const etcdKeyPrefix = "/fangd/"

// explainAuth turns the etcd client's authentication failures into start-up
// errors that say what to fix. auth is nil when no credentials are
// configured. The errors name the user, never the password (etcd's own
// messages do not contain it either). nil: err is not about
// authentication.
func explainAuth(auth *EtcdAuth, endpoints []string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("cluster: etcd at %v refused user %q: wrong etcd_username or etcd_password", endpoints, auth.username())
	case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrInvalidAuthMgmt):
		if auth == nil {
			return fmt.Errorf("cluster: etcd at %v requires authentication: set [cluster] etcd_username and etcd_password", endpoints)
		}
		return fmt.Errorf("cluster: etcd at %v did not take user %q's credentials: %w", endpoints, auth.username(), err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("cluster: etcd user %q may not read or write %s: grant it a role with readwrite on the prefix %s", auth.username(), etcdKeyPrefix, etcdKeyPrefix)
	}
	return nil
}

func (a *EtcdAuth) username() string {
	if a == nil {
		return ""
	}
	return a.Username
}

// checkEtcdAccess reads the keys under /fangd/ once (a count), so that an
// etcd with authentication on that refuses this node (no credentials, a
// user without a role on the prefix) is a start-up error that says so,
// not a failure of the first record or lease.
func checkEtcdAccess(ctx context.Context, cli *clientv3.Client, auth *EtcdAuth, endpoints []string) error {
	_, err := cli.Get(ctx, etcdKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err == nil {
		return nil
	}
	if e := explainAuth(auth, endpoints, err); e != nil {
		return e
	}
	return fmt.Errorf("cluster: etcd at %v: reading %s failed: %w", endpoints, etcdKeyPrefix, err)
}
