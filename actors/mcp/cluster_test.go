package mcp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
)

// memCluster is mcp.Cluster in memory: what the etcd store (actors/cluster
// MCPServers, tested against etcd there) keeps, for the supervisor's side.
type memCluster struct {
	mu     sync.Mutex
	recs   map[string][]byte
	sealed map[string]map[string][]byte
	views  map[string][]byte
	kicks  int
	// ads and confViews are the config.toml servers' side.
	ads       map[string]ConfigAd
	confViews map[string][]byte
}

func newMemCluster() *memCluster {
	return &memCluster{recs: map[string][]byte{}, sealed: map[string]map[string][]byte{}, views: map[string][]byte{}, confViews: map[string][]byte{}}
}

func (c *memCluster) PutServer(_ context.Context, name string, rec []byte, sealed map[string][]byte, drop []string, create bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.recs[name]; ok == create {
		if create {
			return ErrServerExists
		}
		return errors.New("gone")
	}
	c.recs[name] = rec
	if c.sealed[name] == nil {
		c.sealed[name] = map[string][]byte{}
	}
	for _, k := range drop {
		delete(c.sealed[name], k)
	}
	for k, v := range sealed {
		c.sealed[name][k] = v
	}
	return nil
}

func (c *memCluster) DeleteServer(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.recs, name)
	delete(c.sealed, name)
	delete(c.views, name)
	return nil
}

func (c *memCluster) PutSecret(_ context.Context, name, key string, sealed []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sealed == nil {
		delete(c.sealed[name], key)
	} else {
		c.sealed[name][key] = sealed
	}
	return nil
}

func (c *memCluster) PublishState(_ context.Context, name string, state []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.views[name] = state
	return nil
}

func (c *memCluster) NodeAddress(context.Context, string) (string, error) {
	return "", errors.New("node not up")
}

func (c *memCluster) AdvertiseConfig(ads map[string]ConfigAd) {
	c.mu.Lock()
	c.ads = ads
	c.mu.Unlock()
}

func (c *memCluster) PublishConfigState(_ context.Context, name string, state []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.confViews[name] = state
	return nil
}

func (c *memCluster) Kick() {
	c.mu.Lock()
	c.kicks++
	c.mu.Unlock()
}

// round is what an ownership round hands the manager, with every server
// hosted by node (mine when node is "n1", this manager's node).
func (c *memCluster) round(node string) []ClusterServer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ClusterServer
	for name, rec := range c.recs {
		sealed := map[string][]byte{}
		for k, v := range c.sealed[name] {
			sealed[k] = v
		}
		out = append(out, ClusterServer{Name: name, Record: rec, Sealed: sealed, View: c.views[name], Node: node, Mine: node == "n1"})
	}
	return out
}

// In cluster mode an API-defined server is stored in the cluster (its
// header value sealed, never in the record, nothing in this node's
// store) and runs only when a round says this node holds it: then it
// connects with the sealed secret and publishes its state; when a round
// says another node holds it, its connection stops here, its tools are
// listed from the host's published state and calls answer 503
// host_unreachable (the host is not up), a reconnect names the host for
// routing; a round without it forgets it; a delete removes it from the
// cluster.
func TestClusterModeServerRunsWhereTheRoundSays(t *testing.T) {
	g := newGoServer(t, false, "Bearer s3cret-token")
	h := newHarness(t, t.TempDir(), func(o *Options) { o.Clustered = true })
	mc := newMemCluster()
	if err := h.m.UseCluster(mc, "n1"); err != nil {
		t.Fatal(err)
	}
	v := h.add(Spec{Name: "go", Transport: Transport{Type: TransportHTTP, URL: g.url()}, Headers: []string{"Authorization: Bearer s3cret-token"}})
	if !v.Cluster || v.Node != "" || v.Connected {
		t.Fatalf("added, before any round: %+v", v)
	}
	mc.mu.Lock()
	rec, sealed := string(mc.recs["go"]), mc.sealed["go"]["header/authorization"]
	mc.mu.Unlock()
	if strings.Contains(rec, "s3cret") || len(sealed) == 0 || strings.Contains(string(sealed), "s3cret") {
		t.Fatalf("record %s, sealed header %q: the secret must be sealed, apart from the record", rec, sealed)
	}
	if _, err := h.m.env.servers.Get("go"); err == nil {
		t.Fatal("a cluster server was stored in this node's store")
	}
	if _, err := h.m.Add(context.Background(), AddRequest{Spec: Spec{Name: "go", Transport: Transport{Type: TransportHTTP, URL: g.url()}}}); kindOf(err) != kernel.KindConflict {
		t.Fatalf("a second add of the name: %v", err)
	}

	h.m.ApplyCluster(mc.round("n1"))
	v = h.waitConnected("go")
	if v.Node != "n1" {
		t.Fatalf("hosted here: %+v", v)
	}
	if res, err := h.call("mcp_go_echo", map[string]any{"message": "hi"}); err != nil || textOf(res) != "echo: hi" {
		t.Fatalf("call on the host: %q %v", textOf(res), err)
	}
	eventually(t, "the host's view published", func() bool {
		mc.mu.Lock()
		defer mc.mu.Unlock()
		return strings.Contains(string(mc.views["go"]), `"Status":"connected"`) && strings.Contains(string(mc.views["go"]), "mcp_go_echo")
	})

	// Another node holds it now.
	h.m.ApplyCluster(mc.round("n2"))
	v = h.waitFor("go", "hosted by n2", func(v ServerView) bool { return v.Node == "n2" && v.Pid == 0 })
	if !v.Connected || !hasTool(v, "mcp_go_echo") {
		t.Fatalf("the host's published state not shown: %+v", v)
	}
	eventually(t, "the tool listed from the host", func() bool { return len(h.m.Tools()) == 1 })
	_, err := h.call("mcp_go_echo", map[string]any{"message": "hi"})
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindUnavailable || de.Code != "host_unreachable" {
		t.Fatalf("a call with the host not up: %v", err)
	}
	var he *HostedElsewhere
	if _, err := h.m.Reconnect(context.Background(), "go"); !errors.As(err, &he) || he.Node != "n2" {
		t.Fatalf("reconnect of a server another node hosts: %v", err)
	}

	// Gone from etcd (deleted through another node).
	h.m.ApplyCluster(nil)
	eventually(t, "forgotten", func() bool {
		_, err := h.m.Server(context.Background(), "go")
		return kindOf(err) == kernel.KindNotFound
	})

	h.add(Spec{Name: "other", Transport: Transport{Type: TransportHTTP, URL: g.url()}})
	if err := h.m.Remove(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	mc.mu.Lock()
	_, still := mc.recs["other"]
	mc.mu.Unlock()
	if still {
		t.Fatal("remove left the server in the cluster")
	}
}
