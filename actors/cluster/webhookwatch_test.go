package cluster

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/webhook"
)

// An event produced on the node that does not host a webhook's outbox,
// right after the webhook was created through it, is delivered by the
// owner through the intake watch alone: the ownership rounds (which also
// move every intake, a second apart) are paused on both nodes once the
// owner holds the outbox. Without the watch the event stays in the
// intake.
func TestWebhookIntakeWatchDeliversAnotherNodesEventAtOnce(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	var mu sync.Mutex
	var got []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(recv.Close)
	members := []string{"a", "b"}
	nodes := []*hookEngineNode{startHookEngineNode(t, ep, "a", members), startHookEngineNode(t, ep, "b", members)}
	ctx := context.Background()
	for _, n := range nodes {
		kerneltest.WaitFor(t, n.name+"'s first round", func() bool { _, err := n.eng.List(ctx, ""); return err == nil })
		wctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		go watchIntake(wctx, n.cli, "/fangd/hook/t/e/", n.name, n.eng.IntakeAppended)
	}
	// Created through each node in turn, so that one of the two
	// endpoints is hosted by the node it was not created through.
	var ids []string
	for _, n := range nodes {
		name, url, events := "w-"+n.name, recv.URL+"/"+n.name, []string{"agent.spawned"}
		v, err := n.eng.Create(ctx, webhook.KindOutbound, webhook.Patch{Name: &name, URL: &url, Events: &events})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	kerneltest.WaitFor(t, "both outboxes hosted", func() bool { return nodes[0].w.Hosted()+nodes[1].w.Hosted() == 2 })
	for _, n := range nodes {
		kerneltest.WaitFor(t, n.name+" lists both endpoints", func() bool {
			vs, err := n.eng.List(ctx, webhook.KindOutbound)
			return err == nil && len(vs) == 2
		})
	}
	for _, n := range nodes {
		n.paused.Store(true)
	}
	// Every node publishes one event: each endpoint gets one from its
	// owner (moved at once as before) and one from the other node (moved
	// at once only by the watch).
	for _, n := range nodes {
		if _, err := n.bus.PublishSync(ctx, "agent.spawned", "agent:"+n.name, "", map[string]string{"name": n.name}); err != nil {
			t.Fatal(err)
		}
	}
	kerneltest.WaitFor(t, "four deliveries with the rounds paused", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 4
	})
	for _, id := range ids {
		for _, n := range nodes {
			kerneltest.WaitFor(t, "nothing pending for "+id, func() bool {
				v, err := n.eng.Get(ctx, "", id)
				return err == nil && v.Pending == 0
			})
		}
	}
}
