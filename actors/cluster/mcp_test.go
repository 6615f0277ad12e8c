package cluster

// fangd's cluster-wide MCP servers (mcp.go) against a real embedded etcd,
// under -race, with the members given (no protoactor cluster runs here).

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/mcp"
)

type mcpTestNode struct {
	*MCPServers
	mu   sync.Mutex
	last []mcp.ClusterServer
	// conf is the last round of the config.toml servers.
	confs lastRound[mcp.ConfigServer]
}

func newMCPTestNode(t *testing.T, cli *clientv3.Client, id string, members func() []string) *mcpTestNode {
	n := &mcpTestNode{confs: lastRound[mcp.ConfigServer]{name: func(s mcp.ConfigServer) string { return s.Name }}}
	n.MCPServers = newMCPServers(cli, "t", id, "node-"+id, zerolog.Nop(), members, func(s []mcp.ClusterServer) {
		n.mu.Lock()
		n.last = s
		n.mu.Unlock()
	}, n.confs.keep)
	t.Cleanup(func() { n.cancel() })
	return n
}

func (n *mcpTestNode) view(name string) (mcp.ClusterServer, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.last {
		if s.Name == name {
			return s, true
		}
	}
	return mcp.ClusterServer{}, false
}

// A server stored through one node is run by exactly one of two nodes
// that both want it; only the host's view of it is written (the other's
// is fenced) and both read that view; a second create of the name is
// refused; the host's OAuth token write-back survives its death: the
// other node takes the server over within 10 s with the refreshed token;
// a delete removes it from every round.
func TestMCPServerOneHostViewFencedAndTakenOver(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	cliA, cliB := testClient(t, ep), testClient(t, ep)
	a := newMCPTestNode(t, cliA, "a", func() []string { return []string{"a"} })
	b := newMCPTestNode(t, cliB, "b", func() []string { return []string{"b"} })
	ctx := context.Background()
	rec := []byte(`{"name":"fake","transport":{"type":"stdio","command":"/bin/fake"},"env":["TOKEN"]}`)
	if err := a.PutServer(ctx, "fake", rec, map[string][]byte{"env/TOKEN": []byte("sealed-1")}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := b.PutServer(ctx, "fake", rec, nil, nil, true); !errors.Is(err, mcp.ErrServerExists) {
		t.Fatalf("a second create of the name: %v, want ErrServerExists", err)
	}
	if err := b.PutServer(ctx, "gone", rec, nil, nil, false); err == nil {
		t.Fatal("an update of a server that does not exist was stored")
	}
	var wg sync.WaitGroup
	for _, n := range []*mcpTestNode{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); n.round() }()
	}
	wg.Wait()
	a.round()
	b.round()
	va, _ := a.view("fake")
	vb, _ := b.view("fake")
	if va.Mine == vb.Mine || va.Node == "" || va.Node != vb.Node {
		t.Fatalf("ownership: a %+v, b %+v; want exactly one host both agree on", va, vb)
	}
	if string(vb.Sealed["env/TOKEN"]) != "sealed-1" || string(vb.Record) != string(rec) {
		t.Fatalf("record and sealed secret not in the round: %+v", vb)
	}
	host, other := a, b
	if vb.Mine {
		host, other = b, a
	}
	if err := other.PublishState(ctx, "fake", []byte(`{"Status":"error"}`)); !errors.Is(err, ErrFenced) {
		t.Fatalf("the non-host's view write: %v, want ErrFenced", err)
	}
	if err := host.PublishState(ctx, "fake", []byte(`{"Status":"connected"}`)); err != nil {
		t.Fatal(err)
	}
	// The host refreshed an OAuth token: written back to etcd.
	if err := host.PutSecret(ctx, "fake", "oauth", []byte("sealed-token-2")); err != nil {
		t.Fatal(err)
	}
	other.round()
	if v, _ := other.view("fake"); string(v.View) != `{"Status":"connected"}` || string(v.Sealed["oauth"]) != "sealed-token-2" {
		t.Fatalf("the other node's round: view %q oauth %q", v.View, v.Sealed["oauth"])
	}

	host.cancel()
	if host == a {
		cliA.Close()
	} else {
		cliB.Close()
	}
	killed := time.Now()
	for {
		if v, _ := other.view("fake"); v.Mine {
			if string(v.Sealed["oauth"]) != "sealed-token-2" || string(v.Sealed["env/TOKEN"]) != "sealed-1" {
				t.Fatalf("the new host's secrets: %+v", v.Sealed)
			}
			break
		}
		if time.Since(killed) > 10*time.Second {
			v, _ := other.view("fake")
			t.Fatalf("not taken over within 10 s: %+v", v)
		}
		time.Sleep(200 * time.Millisecond)
		other.round()
	}
	t.Logf("taken over %v after the host's death", time.Since(killed).Round(100*time.Millisecond))
	if err := other.PublishState(ctx, "fake", []byte(`{"Status":"connecting"}`)); err != nil {
		t.Fatalf("the new host's view write: %v", err)
	}

	if err := other.DeleteServer(ctx, "fake"); err != nil {
		t.Fatal(err)
	}
	if err := other.PutSecret(ctx, "fake", "oauth", []byte("late")); err == nil {
		t.Fatal("a secret written for a deleted server")
	}
	other.round()
	if _, ok := other.view("fake"); ok {
		t.Fatal("a deleted server is still in the round")
	}
	if r, err := other.cli.Get(ctx, other.pre, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 0 {
		t.Fatalf("keys left after delete: %d %v", r.Count, err)
	}
}
