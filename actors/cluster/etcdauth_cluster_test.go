//go:build cluster

// Behind the "cluster" build tag and run without -race by `make
// test-cluster`: it starts real members, and upstream's cluster package
// is racy (see cmd/fangd/clustertest/doc.go).
package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/kernel"
)

const etcdTestPassword = "pw-9f3c1e-never-shown"

// authEtcd turns authentication on in an embedded etcd: root, a user
// "fangd" with readwrite on /fangd/, and a user "nobody" without a role.
func authEtcd(t *testing.T) string {
	t.Helper()
	ep := testEtcd(t)
	cli := testClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "fangd"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "fangd", etcdKeyPrefix, clientv3.GetPrefixRangeEnd(etcdKeyPrefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "fangd", etcdTestPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "fangd", "fangd"); return err },
		func() error { _, err := cli.UserAdd(ctx, "nobody", etcdTestPassword); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth set-up step %d: %v", i, err)
		}
	}
	return ep
}

// With etcd's authentication on, a node with the right username and
// password joins (its record is written under /fangd/); a wrong password,
// no credentials and a user without a role on /fangd/ are each refused at
// start with an error that says what to fix and never holds the password.
func TestEtcdUsernamePassword(t *testing.T) {
	ep := authEtcd(t)
	start := func(name string, auth *EtcdAuth) (*Node, error) {
		k := kernel.New(zerolog.Nop())
		return Start(k, Options{Endpoints: []string{ep}, Name: "auth", NodeName: name, Log: zerolog.Nop(), EtcdAuth: auth})
	}
	n, err := start("good", &EtcdAuth{Username: "fangd", Password: etcdTestPassword})
	if err != nil {
		t.Fatalf("the right credentials: %v", err)
	}
	defer n.Stop()
	// Its record went to etcd through the authenticated client.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := n.etcd.Get(ctx, "/fangd/nodes/auth/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"node_name":"good"`) {
		t.Fatalf("node record %v %v", resp, err)
	}

	for _, c := range []struct {
		name string
		auth *EtcdAuth
		want string
	}{
		{"wrong", &EtcdAuth{Username: "fangd", Password: etcdTestPassword + "x"}, `refused user "fangd": wrong etcd_username or etcd_password`},
		{"unknown", &EtcdAuth{Username: "ghost", Password: etcdTestPassword}, `refused user "ghost"`},
		{"none", nil, "requires authentication: set [cluster] etcd_username and etcd_password"},
		{"norole", &EtcdAuth{Username: "nobody", Password: etcdTestPassword}, `etcd user "nobody" may not read or write /fangd/`},
	} {
		_, err := start(c.name, c.auth)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), etcdTestPassword) {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	if s := (EtcdAuth{Username: "fangd", Password: etcdTestPassword}).String(); strings.Contains(s, etcdTestPassword) {
		t.Fatalf("String shows the password: %s", s)
	}
}
