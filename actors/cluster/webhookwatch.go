package cluster

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// IntakeRuntime is the webhook engine's side of the intake watch
// (webhook.Engine).
type IntakeRuntime interface {
	IntakeAppended(id string)
}

// WatchWebhookIntake follows every endpoint's intake in etcd (one watch
// per node on /fangd/hook/<cluster>/e/, puts only) and tells rt when
// another node appended to one, so the outbox owner moves it at once
// instead of on its next ownership round (up to a second later). A node
// that does not host the endpoint ignores it. While the watch is down the
// rounds still move every intake. It runs until the node stops.
func (n *Node) WatchWebhookIntake(rt IntakeRuntime) {
	go watchIntake(n.ctx, n.etcd, "/fangd/hook/"+n.opts.Name+"/e/", n.opts.NodeName, rt.IntakeAppended)
}

func watchIntake(ctx context.Context, cli *clientv3.Client, pre, self string, appended func(id string)) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for w := range cli.Watch(wctx, pre, clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithKeysOnly()) {
			if w.Err() != nil {
				break
			}
			// One kick per endpoint per batch of events.
			seen := map[string]bool{}
			for _, ev := range w.Events {
				if id, ok := intakeOf(string(ev.Kv.Key), pre, self); ok && !seen[id] {
					seen[id] = true
					appended(id)
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(roundEvery):
		}
	}
}

// intakeOf is the endpoint whose intake key is key, <pre><id>/in/<node>/…,
// when another node than self appended it.
func intakeOf(key, pre, self string) (string, bool) {
	id, tail, ok := strings.Cut(strings.TrimPrefix(key, pre), "/")
	if !ok || !strings.HasPrefix(tail, "in/") || strings.HasPrefix(tail, "in/"+self+"/") {
		return "", false
	}
	return id, true
}
