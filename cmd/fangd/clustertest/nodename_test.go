//go:build cluster

package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Without node_name a node derives its name once (host name and that
// start's API port) and keeps it in its home: started again on another
// random port it has the same name, so its audit tip in etcd, kept by
// name, is checked at the second start ("match"), not taken for a new
// node's ("first").
func TestDefaultNodeNameKeptAcrossStarts(t *testing.T) {
	etcd := startEtcd(t)
	home := t.TempDir()
	start := func(run string) (n *node, name, status string) {
		t.Helper()
		n = launchIn(t, run, home, nil, "--cluster", "etcd://"+etcd, "--cluster-name", "test")
		if !poll(30*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(n.log.String(), `"fangd is serving"`) }) {
			t.Fatalf("%s did not start\n%s", run, n.log)
		}
		var st struct {
			NodeName string `json:"node_name"`
			Members  []struct {
				Self            bool `json:"self"`
				AuditCheckpoint *struct {
					Status string `json:"status"`
				} `json:"audit_checkpoint"`
			} `json:"members"`
		}
		ok := poll(20*time.Second, 100*time.Millisecond, func() bool {
			if !peek(n.url+"/api/cluster", &st) {
				return false
			}
			for _, m := range st.Members {
				if m.Self && m.AuditCheckpoint != nil && m.AuditCheckpoint.Status != "" {
					status = m.AuditCheckpoint.Status
					return true
				}
			}
			return false
		})
		if !ok {
			t.Fatalf("%s: no audit checkpoint status in GET /api/cluster: %+v", run, st)
		}
		return n, st.NodeName, status
	}

	first, name1, status1 := start("first-run")
	if status1 != "first" || name1 == "" {
		t.Fatalf("first start: name %q, checkpoint %q", name1, status1)
	}
	if b, err := os.ReadFile(filepath.Join(home, "cluster-node-name")); err != nil || strings.TrimSpace(string(b)) != name1 {
		t.Fatalf("the name was not kept in the home: %q %v", b, err)
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first.done:
		first.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("the first run did not stop")
	}

	second, name2, status2 := start("second-run")
	if name2 != name1 || status2 != "match" {
		t.Fatalf("second start on %s: name %q (first %q), checkpoint %q", second.url, name2, name1, status2)
	}
}
