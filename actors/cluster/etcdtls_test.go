package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/cluster/devcerts"
	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/rs/zerolog"
)

// fangd's etcd client over TLS against the embedded etcd serving TLS
// with client certificates required: the right CA and certificate work;
// a plain client is told etcd serves TLS; another CA's client and a TLS
// client of a plain etcd get errors that say so.
func TestEtcdClientTLS(t *testing.T) {
	t.Parallel()
	ca, err := devcerts.NewCA("etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srvCert, srvKey, caFile, err := ca.Issue(dir, "etcd")
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, _, err := ca.Issue(dir, "node")
	if err != nil {
		t.Fatal(err)
	}
	s, err := devetcd.StartTLS(t.TempDir(), "127.0.0.1:0", devetcd.TLS{Cert: srvCert, Key: srvKey, CA: caFile, ClientCertAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	eps := []string{s.Endpoint}

	good := EtcdTLS{CA: caFile, Cert: cliCert, Key: cliKey}
	conf, err := good.config(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkEtcdTLS(eps, conf); err != nil {
		t.Fatalf("the right CA and certificate: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zapNop(), TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}

	if err := explainPlain(eps, errors.New("context deadline exceeded")); err == nil || !strings.Contains(err.Error(), "serves TLS but this node's etcd client is plain") {
		t.Fatalf("a plain client: %v", err)
	}

	other, err := devcerts.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	odir := t.TempDir()
	oc, ok, ocaFile, err := other.Issue(odir, "node")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := EtcdTLS{CA: ocaFile, Cert: oc, Key: ok}.config(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkEtcdTLS(eps, bad); err == nil || !strings.Contains(err.Error(), "TLS to etcd at "+s.Endpoint+" failed") {
		t.Fatalf("another CA: %v", err)
	}
	if _, err := (EtcdTLS{Cert: cliCert}).config(zerolog.Nop()); err == nil {
		t.Fatal("a certificate without its key accepted")
	}

	plain := testEtcd(t)
	if err := checkEtcdTLS([]string{plain}, conf); err == nil || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Fatalf("TLS to a plain etcd: %v", err)
	}
	if err := explainPlain([]string{plain}, errors.New("x")); err == nil || strings.Contains(err.Error(), "serves TLS") {
		t.Fatalf("a plain etcd that did not answer: %v", err)
	}
}
