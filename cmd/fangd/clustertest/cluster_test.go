//go:build cluster

package clustertest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// Built without -race: see doc.go.
var fangdBin string

func TestMain(m *testing.M) {
	if f := os.Getenv(fakeMCPEnv); f != "" {
		runFakeMCP(f) // this binary as a stdio MCP server (mcp_test.go)
	}
	dir, err := os.MkdirTemp("", "fangd-cluster")
	if err != nil {
		panic(err)
	}
	fangdBin = filepath.Join(dir, "fangd")
	build := exec.Command("go", "build", "-o", fangdBin, "..")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic("building fangd: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type node struct {
	name string
	url  string
	cmd  *exec.Cmd
	log  *lockedBuf
	done chan error
}

func startEtcd(t *testing.T) string {
	t.Helper()
	return startEtcdServer(t).Endpoint
}

func startEtcdServer(t *testing.T) *devetcd.Server {
	t.Helper()
	s, err := devetcd.Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(s.Close) })
	return &devetcd.Server{Endpoint: s.Endpoint, Closer: func() { once.Do(s.Close) }}
}

// freeAddr is a loopback host:port nothing listens on, for a daemon to
// take (ssrftest's closed address: a port the kernel just gave out).
var freeAddr = ssrftest.ClosedAddr

// launch runs `fangd serve` with args on a fresh home and a free port.
func launch(t *testing.T, name string, args ...string) *node {
	t.Helper()
	return launchIn(t, name, t.TempDir(), nil, args...)
}

// launchIn runs `fangd serve` with args on home, with env added.
func launchIn(t *testing.T, name, home string, env []string, args ...string) *node {
	t.Helper()
	addr := freeAddr(t)
	args = append([]string{"serve", "--home", home, "--listen", addr}, args...)
	cmd := exec.Command(fangdBin, args...)
	cmd.Env = append(os.Environ(), env...)
	n := &node{name: name, url: "http://" + addr, cmd: cmd, log: &lockedBuf{}, done: make(chan error, 1)}
	cmd.Stderr = n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-n.done
		n.done <- nil
		if t.Failed() {
			t.Logf("%s log:\n%s", name, n.log)
		}
	})
	return n
}

func startNode(t *testing.T, etcd, name string) *node {
	t.Helper()
	return startNodeIn(t, etcd, name, t.TempDir(), nil)
}

func startNodeIn(t *testing.T, etcd, name, home string, env []string) *node {
	t.Helper()
	args := []string{"--cluster", "etcd://" + etcd, "--cluster-name", "test", "--node-name", name}
	n := launchIn(t, name, home, env, args...)
	deadline := time.Now().Add(30 * time.Second)
	for tries := 1; time.Now().Before(deadline); {
		select {
		case err := <-n.done:
			n.done <- err
			// The free port was free only until someone else bound it
			// (the scenarios run in parallel, and so do other packages'
			// daemons): another port, not a failed start.
			if strings.Contains(n.log.String(), "address already in use") && tries < 5 {
				tries++
				n = launchIn(t, name, home, env, args...)
				continue
			}
			t.Fatalf("%s exited during start: %v\n%s", name, err, n.log)
		default:
		}
		if strings.Contains(n.log.String(), `"fangd is serving"`) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start\n%s", name, n.log)
	return nil
}

type member struct {
	NodeName string         `json:"node_name"`
	MemberID string         `json:"member_id"`
	Address  string         `json:"address"`
	HTTPURL  string         `json:"http_url"`
	State    string         `json:"state"`
	Self     bool           `json:"self"`
	Hosted   map[string]int `json:"hosted"`
}

type clusterStatus struct {
	Enabled  bool     `json:"enabled"`
	Mode     string   `json:"mode"`
	Name     string   `json:"name"`
	NodeName string   `json:"node_name"`
	Members  []member `json:"members"`
	Kinds    []struct {
		Kind, Mode string
	} `json:"kinds"`
	// Where each cluster-wide entity runs (harness_test.go).
	Channels []struct{ Name, Node string } `json:"channels"`
	Webhooks []struct{ ID, Node string }   `json:"webhooks"`
}

// upNames are the names of the members a node sees "up", sorted.
func upNames(st clusterStatus) string {
	var names []string
	for _, m := range st.Members {
		if m.State == "up" {
			names = append(names, m.NodeName)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// waitMembers polls n's GET /api/cluster until its "up" members are want.
func waitMembers(t *testing.T, n *node, want string, within time.Duration) clusterStatus {
	t.Helper()
	var st clusterStatus
	deadline := time.Now().Add(within)
	for {
		st = clusterStatus{}
		code := getJSON(t, n.url+"/api/cluster", &st)
		if code == 200 && upNames(st) == want && len(st.Members) == strings.Count(want, ",")+1 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: members %q (%d, %+v), want %q", n.name, upNames(st), code, st.Members, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Three real nodes with a real etcd: every node sees all three through
// the cluster's member list and the node records; a node killed with -9
// drops out of every other node's view; a node stopped gracefully leaves
// at once (its record is revoked).
func TestThreeNodesMembershipKill9AndGracefulLeave(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := []*node{startNode(t, etcd, "n1"), startNode(t, etcd, "n2"), startNode(t, etcd, "n3")}
	for _, n := range nodes {
		st := waitMembers(t, n, "n1,n2,n3", 20*time.Second)
		if !st.Enabled || st.Mode != "cluster" || st.Name != "test" || st.NodeName != n.name {
			t.Fatalf("%s: %+v", n.name, st)
		}
		for _, m := range st.Members {
			if m.Self != (m.NodeName == n.name) {
				t.Fatalf("%s: self flag wrong on %+v", n.name, m)
			}
			var owner *node
			for _, o := range nodes {
				if o.name == m.NodeName {
					owner = o
				}
			}
			if m.HTTPURL != owner.url || m.Address == "" || m.MemberID == "" {
				t.Fatalf("%s: member %+v, want url %s", n.name, m, owner.url)
			}
		}
		// Channel adapters, webhook outboxes, budget admission and approvals
		// are cluster-wide; every
		// other kind still runs per node, and the table says so.
		if len(st.Kinds) == 0 {
			t.Fatal("no kinds reported")
		}
		for _, k := range st.Kinds {
			want := "per_node"
			if k.Kind == "channel_adapter" || k.Kind == "webhook_outbox" || k.Kind == "budget_ledger" || k.Kind == "approval" || k.Kind == "mcp_connection" {
				want = "cluster"
			}
			if k.Kind == "agent" || k.Kind == "a2a_task" {
				want = "routed" // agents_test.go, a2a_test.go
			}
			if k.Mode != want {
				t.Fatalf("%s: kind %+v, want mode %s", n.name, k, want)
			}
		}
		var ns struct {
			Cluster struct {
				Enabled bool     `json:"enabled"`
				Name    string   `json:"name"`
				Members []member `json:"members"`
			} `json:"cluster"`
		}
		if code := getJSON(t, n.url+"/api/network/status", &ns); code != 200 || !ns.Cluster.Enabled || ns.Cluster.Name != "test" || len(ns.Cluster.Members) != 3 {
			t.Fatalf("%s: network status %d %+v", n.name, code, ns.Cluster)
		}
	}

	killed := nodes[2].kill(t)
	waitMembers(t, nodes[0], "n1,n2", 20*time.Second)
	waitMembers(t, nodes[1], "n1,n2", 20*time.Second)
	t.Logf("a killed node left both views after %v", time.Since(killed).Round(100*time.Millisecond))

	if err := nodes[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-nodes[1].done:
		nodes[1].done <- err
		if err != nil {
			t.Fatalf("n2 graceful stop: %v\n%s", err, nodes[1].log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("n2 did not stop")
	}
	// A graceful leave revokes the record and deregisters from etcd at
	// once: no waiting for a lease to run out.
	waitMembers(t, nodes[0], "n1", 3*time.Second)
}

// With etcd gone, a graceful stop still ends: upstream's deregistration
// has no deadline and used to hang the daemon forever.
func TestStopWithEtcdGone(t *testing.T) {
	t.Parallel()
	etcd := startEtcdServer(t)
	n := startNode(t, etcd.Endpoint, "orphan")
	waitMembers(t, n, "orphan", 10*time.Second)
	etcd.Closer()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
	case <-time.After(30 * time.Second):
		n.cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(2 * time.Second)
		t.Fatalf("fangd did not stop with etcd gone\n%s", n.log)
	}
}

// An etcd that does not answer is a clear start-up error, not a hang or
// upstream's panic.
func TestUnreachableEtcdFailsStart(t *testing.T) {
	t.Parallel()
	n := launch(t, "lonely", "--cluster", "etcd://"+freeAddr(t), "--node-name", "lonely")
	n.refusesToStart(t, "does not answer")
}

// A bad --cluster value is refused before anything starts.
func TestBadClusterFlag(t *testing.T) {
	t.Parallel()
	n := launch(t, "bad", "--cluster", "http://127.0.0.1:2379")
	select {
	case err := <-n.done:
		n.done <- err
		// A bad flag value is a usage error: exit 2, as for every command.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(n.log.String(), "etcd://") {
			t.Fatalf("exit %v, log:\n%s", err, n.log)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("bad flag accepted\n%s", n.log)
	}
}
