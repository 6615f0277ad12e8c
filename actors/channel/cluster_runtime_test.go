package channel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
)

// stateCluster keeps the cluster's channel store in memory for the
// runtime's cluster mode; rounds are handed to the runtime by the test
// (actors/cluster runs them against etcd, tested there).
type stateCluster struct {
	mu     sync.Mutex
	recs   map[string][]byte
	sealed map[string]map[string][]byte
	st     map[string]map[string][]byte
	fenced bool
}

func newStateCluster() *stateCluster {
	return &stateCluster{recs: map[string][]byte{}, sealed: map[string]map[string][]byte{}, st: map[string]map[string][]byte{}}
}

func (c *stateCluster) PutChannel(_ context.Context, name string, rec []byte, sealed map[string][]byte, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs[name], c.sealed[name] = rec, sealed
	return nil
}

func (c *stateCluster) DeleteChannel(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.recs, name)
	delete(c.sealed, name)
	delete(c.st, name)
	return nil
}

func (c *stateCluster) State(_ context.Context, name string) (map[string][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return channel.CopyState(c.st, name), nil
}

func (c *stateCluster) Commit(_ context.Context, name string, ops []channel.StateOp) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fenced {
		return errors.New("fenced")
	}
	channel.CommitOps(c.st, name, ops)
	return nil
}

func (c *stateCluster) Kick() {}

// round is an ownership round's result with every channel on node.
func (c *stateCluster) round(node string, mine bool) []channel.ClusterChannel {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []channel.ClusterChannel
	for name, rec := range c.recs {
		out = append(out, channel.ClusterChannel{Name: name, Record: rec, Sealed: c.sealed[name], Node: node, Mine: mine})
	}
	return out
}

func (c *stateCluster) keys(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ks []string
	for k := range c.st[name] {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Cluster mode in the runtime: a configured channel is stored through the
// cluster store (its secret sealed, not in clear) and runs only once an
// ownership round gives it to this node; its cursor and queues go to the
// cluster store; losing the channel stops the adapter; a channel gone from
// the rounds (deleted through another node) is gone here too.
func TestClusterModeRunsOnlyOwnedChannels(t *testing.T) {
	p := newPlatform("good-token")
	cl := newStateCluster()
	h := setup(t, p, channeltest.WithCluster(cl))
	res := h.Configure("telegram", map[string]any{"token": "good-token", "agent_name": channeltest.AgentName})
	if !res.Created {
		t.Fatalf("configure = %+v", res)
	}
	cl.mu.Lock()
	sealed := cl.sealed["telegram"]["bot_token"]
	rec := cl.recs["telegram"]
	cl.mu.Unlock()
	if len(sealed) == 0 || bytes.Contains(sealed, []byte("good-token")) || bytes.Contains(rec, []byte("good-token")) {
		t.Fatalf("the token must reach the cluster store sealed only: sealed %q, record %s", sealed, rec)
	}
	if v := h.Get("telegram"); v.State != channel.StateRemote || p.connects.Load() != 0 {
		t.Fatalf("before any round: %s, %d connects", v.State, p.connects.Load())
	}

	h.Service.ApplyCluster(cl.round("n2", false))
	h.WaitFor("listed on n2", func() bool { v := h.Get("telegram"); return v.State == channel.StateRemote && v.Node == "n2" })
	if p.connects.Load() != 0 {
		t.Fatal("a channel owned by another node connected here")
	}
	if _, err := h.Service.SendMessage(context.Background(), "telegram", "42", "hi", ""); err == nil || !bytes.Contains([]byte(err.Error()), []byte("n2")) {
		t.Fatalf("send through a node that does not host the channel: %v", err)
	}
	// What the HTTP layer routes on: the host named in the error, and the
	// channel counted as configured here (comms sends reach Send).
	_, err := h.Service.Test(context.Background(), "telegram", "42")
	var he *channel.HostedElsewhere
	if !errors.As(err, &he) || he.Node != "n2" || he.Channel != "telegram" {
		t.Fatalf("test through a node that does not host the channel: %#v", err)
	}
	if !h.Service.Has("telegram") {
		t.Fatal("a channel another node hosts must count as configured")
	}

	h.Service.ApplyCluster(cl.round("me", true))
	h.WaitFor("connected here", func() bool { v := h.Get("telegram"); return v.State == channel.StateConnected && v.Node == "me" },
		func() string {
			v := h.Get("telegram")
			return fmt.Sprintf("%s on %q: %s", v.State, v.Node, v.LastError)
		})
	p.inbox <- channel.Inbound{ChatID: "42", UserID: "7", Text: "hello", MessageID: "m1"}
	h.WaitFor("reply", func() bool { return len(p.messages()) == 1 })
	h.WaitFor("state in the cluster store", func() bool {
		ks := cl.keys("telegram")
		// The cursor past m1 and the sequence reservation; the inbox
		// item and the reply are gone (answered, sent).
		return len(ks) == 2 && ks[0] == "cur/$seq" && ks[1] == "cur/pos"
	}, func() string { return "keys " + joinKeys(cl.keys("telegram")) })

	// Fenced: the message's inbox write is refused, so nothing answers it;
	// the next round says another node holds the channel.
	cl.mu.Lock()
	cl.fenced = true
	cl.mu.Unlock()
	p.inbox <- channel.Inbound{ChatID: "42", UserID: "7", Text: "lost here", MessageID: "m2"}
	h.Service.ApplyCluster(cl.round("n3", false))
	h.WaitFor("moved to n3", func() bool { v := h.Get("telegram"); return v.State == channel.StateRemote && v.Node == "n3" })
	if n := len(p.messages()); n != 1 {
		t.Fatalf("%d messages sent; a fenced node must not answer", n)
	}

	h.Service.ApplyCluster(nil)
	h.WaitFor("deleted elsewhere", func() bool { return !h.Get("telegram").Configured })
}

func joinKeys(ks []string) string {
	var b bytes.Buffer
	for _, k := range ks {
		b.WriteString(k + " ")
	}
	return b.String()
}
