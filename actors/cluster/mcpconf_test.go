package cluster

// The MCP servers of config.toml across the cluster (mcpconf.go,
// listing.go) against a real embedded etcd, under -race.

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/mcp"
)

func confRounds(ns ...*mcpTestNode) []func() {
	var out []func()
	for _, n := range ns {
		out = append(out, n.MCPServers.conf.round)
	}
	return out
}

func listedNodes(s mcp.ConfigServer) []string {
	var out []string
	for _, a := range s.Listing {
		out = append(out, a.Node)
	}
	return out
}

// A config server listed by a and b, not by c, runs on exactly one of a
// and b even though the rendezvous choice among all three members is c,
// and c never takes it over, however long it waits; every node's round
// names the host and the listing nodes; an API server of the name is
// refused while it is listed. The host stops listing it: the other
// listing node runs it at once. That node dies: c still lists the server
// (no host, the dead node's advert kept) and does not take it.
func TestMCPConfigServerRunsOnlyOnAListingNode(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	members := []string{"a", "b", "c"}
	all := func() []string { return members }
	cliB := testClient(t, ep)
	a := newMCPTestNode(t, testClient(t, ep), "a", all)
	b := newMCPTestNode(t, cliB, "b", all)
	c := newMCPTestNode(t, testClient(t, ep), "c", all)
	name := choiceOf(t, "c", members, "fake", "files", "search", "git", "db", "web", "mail", "wiki")
	ad := mcp.ConfigAd{Hash: "h1", Transport: "stdio", TimeoutSecs: 30}
	a.AdvertiseConfig(map[string]mcp.ConfigAd{name: ad})
	b.AdvertiseConfig(map[string]mcp.ConfigAd{name: ad})
	c.AdvertiseConfig(map[string]mcp.ConfigAd{})
	roundsAtOnce(confRounds(a, b, c)...)

	va, vb, vc := a.confs.view(name), b.confs.view(name), c.confs.view(name)
	if va.Mine == vb.Mine || vc.Mine || vc.Node == "" || vc.Node != va.Node || vc.Node != vb.Node {
		t.Fatalf("placement: a %+v, b %+v, c %+v; want exactly one of a and b, agreed by all", va, vb, vc)
	}
	if got := listedNodes(vc); len(got) != 2 || got[0] != "node-a" || got[1] != "node-b" ||
		vc.Listing[0].Hash != "h1" || vc.Listing[0].Transport != "stdio" {
		t.Fatalf("c's round lists %+v, want node-a and node-b with their adverts", vc.Listing)
	}
	host, other := a, b
	if vb.Mine {
		host, other = b, a
	}
	// Past the takeover grace: c (not listing) still takes nothing.
	time.Sleep(takeoverGrace + 200*time.Millisecond)
	roundsAtOnce(confRounds(c, other, host)...)
	if v := c.confs.view(name); v.Mine || v.Node != host.nodeName {
		t.Fatalf("after the takeover grace c sees %+v, want %s still the host", v, host.nodeName)
	}
	if c.Hosted() != 0 || host.Hosted() != 1 {
		t.Fatalf("hosted: c %d, host %d", c.Hosted(), host.Hosted())
	}
	if err := c.PutServer(context.Background(), name, []byte(`{"name":"`+name+`"}`), nil, nil, true); !errors.Is(err, mcp.ErrServerExists) {
		t.Fatalf("an API server with a config server's name: %v, want ErrServerExists", err)
	}
	if err := host.PublishConfigState(context.Background(), name, []byte(`{"Status":"connected"}`)); err != nil {
		t.Fatal(err)
	}
	if err := other.PublishConfigState(context.Background(), name, []byte(`{"Status":"error"}`)); !errors.Is(err, ErrFenced) {
		t.Fatalf("the non-host's view write: %v, want ErrFenced", err)
	}
	c.MCPServers.conf.round()
	if v := c.confs.view(name); string(v.View) != `{"Status":"connected"}` {
		t.Fatalf("c reads the view %q", v.View)
	}

	// The host's file no longer lists it: it gives it up with its advert,
	// the other listing node (now the only choice) takes it.
	host.AdvertiseConfig(map[string]mcp.ConfigAd{})
	host.MCPServers.conf.round()
	roundsAtOnce(confRounds(other, c, host)...)
	if v := other.confs.view(name); !v.Mine || len(v.Listing) != 1 || string(v.View) != "" {
		t.Fatalf("after the host stopped listing it, the other node sees %+v; want it hosts it, listed once, the old view gone", v)
	}
	if v := c.confs.view(name); v.Node != other.nodeName || host.Hosted() != 0 {
		t.Fatalf("c sees %+v, old host hosts %d", v, host.Hosted())
	}

	// The only listing node dies (b's client, with its lease, closes).
	if other != b {
		// Make b the last listing node for the kill below.
		b.AdvertiseConfig(map[string]mcp.ConfigAd{name: ad})
		a.AdvertiseConfig(map[string]mcp.ConfigAd{})
		for _, r := range confRounds(a, b, c, a, b, c) {
			r()
		}
		if v := b.confs.view(name); !v.Mine {
			t.Fatalf("b lists it alone and does not host it: %+v", v)
		}
	}
	b.cancel()
	cliB.Close()
	members = []string{"a", "c"}
	killed := time.Now()
	if !roundUntil(10*time.Second, 200*time.Millisecond, c.MCPServers.conf.round, func() bool { return c.confs.view(name).Node == "" }) {
		t.Fatalf("the dead host still named after 10 s: %+v", c.confs.view(name))
	}
	t.Logf("no host %v after the only listing node died", time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(takeoverGrace + 200*time.Millisecond)
	roundsAtOnce(confRounds(a, c)...)
	if v := c.confs.view(name); v.Mine || v.Node != "" || len(listedNodes(v)) != 1 || listedNodes(v)[0] != "node-b" {
		t.Fatalf("with its only listing node down, c sees %+v; want it still listed by node-b, hosted nowhere", v)
	}
	if a.confs.view(name).Mine {
		t.Fatal("a, no longer listing it, took it")
	}
}

// A name added through the API first is not advertised by a node whose
// config.toml lists it later (the conflict is tried again each round and
// clears when the API server goes); specs that differ show in the
// listing's hashes.
func TestMCPConfigAdvertRefusedWhileAnAPIServerHoldsTheName(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	all := func() []string { return []string{"a", "b"} }
	a := newMCPTestNode(t, testClient(t, ep), "a", all)
	b := newMCPTestNode(t, testClient(t, ep), "b", all)
	ctx := context.Background()
	if err := a.PutServer(ctx, "dup", []byte(`{"name":"dup"}`), nil, nil, true); err != nil {
		t.Fatal(err)
	}
	a.AdvertiseConfig(map[string]mcp.ConfigAd{"dup": {Hash: "h1", Transport: "stdio"}, "cfg": {Hash: "h1", Transport: "http"}})
	b.AdvertiseConfig(map[string]mcp.ConfigAd{"cfg": {Hash: "h2", Transport: "http"}})
	roundsAtOnce(confRounds(a, b)...)
	if v := b.confs.view("dup"); v.Name != "" {
		t.Fatalf("a config advert of an API server's name was written: %+v", v)
	}
	r, err := a.cli.Get(ctx, a.confAdvertPrefix("dup"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != 0 {
		t.Fatalf("adverts of dup: %d %v", r.Count, err)
	}
	v := b.confs.view("cfg")
	if len(v.Listing) != 2 || v.Listing[0].Hash == v.Listing[1].Hash {
		t.Fatalf("cfg's listing %+v: want both nodes with their own hashes", v.Listing)
	}
	// The API server is deleted: a's advert follows on its next rounds.
	if err := a.DeleteServer(ctx, "dup"); err != nil {
		t.Fatal(err)
	}
	if !roundUntil(5*time.Second, 50*time.Millisecond, func() { a.MCPServers.conf.round() }, func() bool { return a.confs.view("dup").Mine }) {
		t.Fatalf("dup not advertised and hosted after the API server went: %+v", a.confs.view("dup"))
	}
}
