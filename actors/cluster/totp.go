package cluster

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/approval"
)

// TOTP keeps the approvals' TOTP enrolment cluster-wide (docs/cluster.md,
// "Approvals across the cluster"): a few entries under
// /fangd/totp/<cluster>/<name>, the enrolments sealed by the approvals
// side with the vault key (never in clear here), the lockout guard in the
// clear. It is approval.TOTPCluster: reads with their mod revision and
// writes conditioned on it, so an accepted code's time step (or a spent
// recovery code) is written by exactly one node.
type TOTP struct {
	cli *clientv3.Client
	pre string
}

var _ approval.TOTPCluster = (*TOTP)(nil)

// TOTP is the cluster's TOTP enrolment store.
func (n *Node) TOTP() *TOTP { return newTOTP(n.etcd, n.opts.Name) }

func newTOTP(cli *clientv3.Client, cluster string) *TOTP {
	return &TOTP{cli: cli, pre: "/fangd/totp/" + cluster + "/"}
}

// Get reads entry name and its mod revision (0 when absent).
func (t *TOTP) Get(ctx context.Context, name string) ([]byte, int64, error) {
	r, err := t.cli.Get(ctx, t.pre+name)
	if err != nil || len(r.Kvs) == 0 {
		return nil, 0, err
	}
	return r.Kvs[0].Value, r.Kvs[0].ModRevision, nil
}

// Swap puts (or, with a nil value, deletes) entry name if its mod revision
// is still rev (0: absent; approval.AnyRev: unconditionally). On a lost
// race it answers the entry's current revision.
func (t *TOTP) Swap(ctx context.Context, name string, rev int64, value []byte) (int64, bool, error) {
	key := t.pre + name
	op := clientv3.OpPut(key, string(value))
	if value == nil {
		op = clientv3.OpDelete(key)
	}
	txn := t.cli.Txn(ctx)
	if rev != approval.AnyRev {
		txn = txn.If(clientv3.Compare(clientv3.ModRevision(key), "=", rev))
	}
	r, err := txn.Then(op).Else(clientv3.OpGet(key)).Commit()
	switch {
	case err != nil:
		return 0, false, err
	case !r.Succeeded:
		kvs := r.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, false, nil
		}
		return kvs[0].ModRevision, false, nil
	case value == nil:
		return 0, true, nil
	}
	return r.Header.Revision, true, nil
}
