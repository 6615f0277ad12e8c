//go:build cluster

package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/cluster/devetcd"
)

// TLS to etcd: with etcd serving clients over TLS only (and asking for a
// client certificate), a node started with --cluster etcds:// and
// [cluster] etcd_ca, etcd_cert and etcd_key joins and is up; a node with
// the plain etcd:// is refused at start with an error saying etcd serves
// TLS.
func TestNodeJoinsTLSEtcdAndPlainClientIsRefused(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "etcd-ca")
	dir := t.TempDir()
	cert, key, caFile := issue(t, ca, dir, "etcd")
	s, err := devetcd.StartTLS(t.TempDir(), "127.0.0.1:0", devetcd.TLS{Cert: cert, Key: key, CA: caFile, ClientCertAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	home := t.TempDir()
	ncert, nkey, ncaFile := issue(t, ca, home, "n1")
	cfg := "[cluster]\netcd_ca = \"" + ncaFile + "\"\netcd_cert = \"" + ncert + "\"\netcd_key = \"" + nkey + "\"\n"
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n1 := launchIn(t, "n1", home, nil, "--cluster", "etcds://"+s.Endpoint, "--cluster-name", "test", "--node-name", "n1")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(n1.log.String(), `"fangd is serving"`) {
		select {
		case err := <-n1.done:
			n1.done <- err
			t.Fatalf("n1 exited during start: %v\n%s", err, n1.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 did not start\n%s", n1.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitMembers(t, n1, "n1", 20*time.Second)

	n2 := launch(t, "n2", "--cluster", "etcd://"+s.Endpoint, "--cluster-name", "test", "--node-name", "n2")
	n2.refusesToStart(t, "serves TLS but this node's etcd client is plain")
}
