package mcp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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

func (c *memCluster) ConnectionLost(string) bool { return false }

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

// confRound is a round of the config servers: name hosted by node, listed
// by the nodes of hashes (node -> hash).
func (c *memCluster) confRound(name, node string, hashes map[string]string, transport string) ConfigServer {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := ConfigServer{Name: name, Node: node, Mine: node == "n1", View: c.confViews[name]}
	for _, n := range []string{"n1", "n2", "n3"} {
		if h, ok := hashes[n]; ok {
			cs.Listing = append(cs.Listing, ConfigAd{Node: n, Hash: h, Transport: transport})
		}
	}
	return cs
}

// In cluster mode a config.toml server starts only when a round says this
// node holds it: its advert carries a hash of the spec without the secret
// header value; hosted here it connects and publishes its state; hosted
// by another node it stops here and shows the host's state, with
// spec_differs when the listing nodes' hashes differ; a server only
// another node's file lists is shown from its host (source config,
// routed there: host_unreachable when that host is not up, also once no
// node holds it) and its name cannot be added through the API; a round
// without it forgets it; a reload that drops this node's entry stops
// advertising it.
func TestClusterModeConfigServerRunsWhereTheRoundSays(t *testing.T) {
	g := newGoServer(t, false, "Bearer s3cret-token")
	// Its header value is in this node's own vault (as on one node), not
	// in the cluster's store.
	cfg := Spec{Name: "cfg", Transport: Transport{Type: TransportHTTP, URL: g.url()}, Headers: []string{"Authorization"}}
	var servers []Spec
	h := newHarness(t, t.TempDir(), func(o *Options) {
		o.Clustered = true
		o.Servers = []Spec{cfg}
		o.LoadServers = func() ([]Spec, error) { return servers, nil }
	})
	if v, err := h.m.Server(context.Background(), "cfg"); err != nil || v.Status != StatusConnecting || v.Source != sourceConfig {
		t.Fatalf("before joining: %+v %v; want listed, not started", v, err)
	}
	if err := h.vault.Put(headerKey("cfg", "Authorization"), []byte("Bearer s3cret-token")); err != nil {
		t.Fatal(err)
	}
	mc := newMemCluster()
	if err := h.m.UseCluster(mc, "n1"); err != nil {
		t.Fatal(err)
	}
	mc.mu.Lock()
	ad, ok := mc.ads["cfg"]
	mc.mu.Unlock()
	if !ok || ad.Hash == "" || ad.Transport != TransportHTTP || strings.Contains(ad.Hash, "s3cret") || ad.Hash != specHash(cfg) {
		t.Fatalf("advert %+v", ad)
	}
	inline, other := cfg, cfg
	inline.Headers = []string{"Authorization: Bearer s3cret-token"}
	other.Headers = []string{"Authorization: Bearer another-token"}
	if specHash(other) != specHash(inline) {
		t.Fatal("the hash depends on a secret header value")
	}
	other.Transport.URL += "/x"
	if specHash(other) == specHash(inline) {
		t.Fatal("the hash ignores the URL")
	}

	same := map[string]string{"n1": ad.Hash, "n2": ad.Hash}
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n1", same, "http")})
	v := h.waitConnected("cfg")
	if v.Node != "n1" || !v.Cluster || v.SpecDiffers || len(v.ListedBy) != 2 || v.Source != sourceConfig {
		t.Fatalf("hosted here: %+v", v)
	}
	if res, err := h.call("mcp_cfg_echo", map[string]any{"message": "hi"}); err != nil || textOf(res) != "echo: hi" {
		t.Fatalf("call on the host: %q %v", textOf(res), err)
	}
	eventually(t, "the host's view published", func() bool {
		mc.mu.Lock()
		defer mc.mu.Unlock()
		return strings.Contains(string(mc.confViews["cfg"]), `"Status":"connected"`) && len(mc.views) == 0
	})

	// n2 hosts it now, and its spec differs.
	differ := map[string]string{"n1": ad.Hash, "n2": "0123"}
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n2", differ, "http")})
	v = h.waitFor("cfg", "hosted by n2", func(v ServerView) bool { return v.Node == "n2" && v.Pid == 0 })
	if !v.Connected || !hasTool(v, "mcp_cfg_echo") || !v.SpecDiffers {
		t.Fatalf("the host's state, spec_differs: %+v", v)
	}
	_, err := h.call("mcp_cfg_echo", map[string]any{"message": "hi"})
	if de := kernel.AsError(err); de == nil || de.Code != "host_unreachable" {
		t.Fatalf("a call with the host not up: %v", err)
	}

	// A server only n2's file lists.
	mc.mu.Lock()
	mc.confViews["only2"] = []byte(`{"Status":"connected","Tools":[{"name":"mcp_only2_t","original_name":"t"}]}`)
	mc.mu.Unlock()
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n2", differ, "http"), mc.confRound("only2", "n2", map[string]string{"n2": "h"}, "stdio")})
	v = h.waitFor("only2", "listed from n2", func(v ServerView) bool { return v.Connected })
	if v.Node != "n2" || v.Source != sourceConfig || v.Transport != TransportStdio || len(v.ListedBy) != 1 {
		t.Fatalf("a server only n2 lists: %+v", v)
	}
	if _, err := h.m.Add(context.Background(), AddRequest{Spec: Spec{Name: "only2", Transport: Transport{Type: TransportHTTP, URL: g.url()}}}); kindOf(err) != kernel.KindConflict {
		t.Fatalf("an API add of a config server's name: %v", err)
	}
	if err := h.m.Remove(context.Background(), "only2"); kindOf(err) != kernel.KindConflict {
		t.Fatalf("a delete of a config server: %v", err)
	}
	// Its only node is down: no host, still routed, host_unreachable.
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n2", differ, "http"), mc.confRound("only2", "", map[string]string{"n2": "h"}, "stdio")})
	h.waitFor("only2", "hosted nowhere", func(v ServerView) bool { return v.Node == "" && !v.Connected })
	if _, err := h.call("mcp_only2_t", map[string]any{}); kernel.AsError(err) == nil || kernel.AsError(err).Code != "host_unreachable" {
		t.Fatalf("a call of a server no node runs: %v", err)
	}
	// No node lists it any more.
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n2", differ, "http")})
	eventually(t, "forgotten", func() bool {
		_, err := h.m.Server(context.Background(), "only2")
		return kindOf(err) == kernel.KindNotFound
	})

	// Hosted here again, then this node's file drops it: stopped,
	// not advertised, still listed from n2.
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n1", same, "http")})
	h.waitFor("cfg", "hosted here", func(v ServerView) bool { return v.Node == "n1" && v.Pid == 0 && v.Connected })
	r, err := h.m.Reload(context.Background())
	if err != nil || len(r.Removed) != 1 {
		t.Fatalf("reload: %+v %v", r, err)
	}
	mc.mu.Lock()
	_, still := mc.ads["cfg"]
	mc.mu.Unlock()
	if still {
		t.Fatal("a server dropped from config.toml is still advertised")
	}
	if pid, err := h.m.child(context.Background(), "cfg"); err == nil {
		t.Fatalf("still running here: %v", pid)
	}
	h.m.ApplyConfigCluster([]ConfigServer{mc.confRound("cfg", "n2", map[string]string{"n2": ad.Hash}, "http")})
	v = h.waitFor("cfg", "listed from n2", func(v ServerView) bool { return v.Node == "n2" })
	if !strings.Contains(strings.Join(v.ListedBy, ","), "n2") || v.URL != "" {
		t.Fatalf("listed from another node's advert: %+v", v)
	}
	servers = []Spec{cfg}
	if r, err := h.m.Reload(context.Background()); err != nil || len(r.Added) != 1 {
		t.Fatalf("reload adding it back: %+v %v", r, err)
	}
	mc.mu.Lock()
	_, back := mc.ads["cfg"]
	mc.mu.Unlock()
	if !back {
		t.Fatal("not advertised again")
	}
}

// lostCluster is memCluster whose remoting connection to every address
// is reported lost once lost is closed.
type lostCluster struct {
	*memCluster
	lost chan struct{}
}

func (c *lostCluster) ConnectionLost(string) bool {
	select {
	case <-c.lost:
		return true
	default:
		return false
	}
}

// A call to another node that its host never answers (sent in the moment
// the host died: upstream's endpoint writer drops it without an answer)
// gives up as soon as the connection to the host is reported lost, with
// an error saying the call may have reached it, not after its whole
// timeout; an answer that comes is returned.
func TestRemoteCallGivesUpWhenTheConnectionIsLost(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil)
	silent, err := h.k.SpawnRoot("silent", func() actor.Actor { return actor.ReceiveFunc(func(actor.Context) {}) })
	if err != nil {
		t.Fatal(err)
	}
	c := &lostCluster{memCluster: newMemCluster(), lost: make(chan struct{})}
	got := make(chan error, 1)
	go func() {
		_, err := awaitRemote(c, silent.Address, h.k.Root.RequestFuture(silent, &actor.Started{}, time.Hour))
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("answered before the connection was lost: %v", err)
	case <-time.After(3 * lostCheckEvery):
	}
	close(c.lost)
	select {
	case err := <-got:
		if err == nil || !strings.Contains(err.Error(), "lost") {
			t.Fatalf("after the loss: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10 s after the connection was reported lost")
	}

	echo, err := h.k.SpawnRoot("answers", func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*actor.Stopping); !ok && ctx.Sender() != nil {
				ctx.Respond("ok")
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	c2 := &lostCluster{memCluster: newMemCluster(), lost: make(chan struct{})}
	if v, err := awaitRemote(c2, echo.Address, h.k.Root.RequestFuture(echo, "hi", time.Minute)); err != nil || v != "ok" {
		t.Fatalf("an answer: %v %v", v, err)
	}
}
