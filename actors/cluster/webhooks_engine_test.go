package cluster

// The webhook engine in cluster mode, two nodes in this process over a
// real embedded etcd, under -race: each node's producer appends its own
// bus events, the owner delivers them, and when the owner dies (its etcd
// client gone, its actors stopped: no graceful hand-over) the other node
// takes the outbox over and delivers what was queued, signed, one
// webhook-id per event.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
	"github.com/fangd/fangd/transport/ssrf"
)

type hookEngineNode struct {
	name string
	k    *kernel.Kernel
	db   *store.DB
	bus  *comms.Bus
	eng  *webhook.Engine
	cli  *clientv3.Client
	w    *Webhooks
	once sync.Once
	// paused skips the ownership rounds (the lease stays kept alive):
	// then only the intake watch moves another node's appends.
	paused atomic.Bool
}

func startHookEngineNode(t *testing.T, etcd, name string, members []string) *hookEngineNode {
	t.Helper()
	home := t.TempDir()
	db, vault := storetest.OpenWithVault(t, home)
	k := kernel.New(zerolog.Nop())
	bus, err := comms.Start(k, db, comms.BusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	guard, _ := ssrf.New([]string{"127.0.0.1/32"})
	eng, err := webhook.Start(k, db, webhook.Options{Bus: bus, Vault: vault, Guard: guard, Clustered: true,
		Backoff: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond,
			200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond,
			200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond,
			time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second},
		Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second, Logger: zapNop()})
	if err != nil {
		t.Fatal(err)
	}
	n := &hookEngineNode{name: name, k: k, db: db, bus: bus, eng: eng, cli: cli}
	n.w = newWebhooks(cli, "t", name, name, zerolog.Nop(), func() []string { return members }, eng.ApplyCluster)
	eng.UseCluster(n.w, name)
	go n.w.loop(func() {
		if !n.paused.Load() {
			n.w.round()
		}
	})
	t.Cleanup(n.kill)
	return n
}

// kill ends the node without a graceful leave: its lease is not revoked.
func (n *hookEngineNode) kill() {
	n.once.Do(func() {
		n.w.cancel()
		<-n.w.done
		n.cli.Close()
		kerneltest.Stop(n.k, n.db)
	})
}

func TestWebhookEngineAcrossNodesFailover(t *testing.T) {
	t.Parallel()
	ep := testEtcd(t)
	const secret = "engine-test-secret"
	var failing atomic.Bool
	var mu sync.Mutex
	got := map[string]string{} // webhook-id -> agent name
	tries, bad := 0, 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		mac := hmac.New(sha256.New, []byte(secret))
		fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
		mu.Lock()
		defer mu.Unlock()
		tries++
		if r.Header.Get("webhook-signature") != "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			bad++
			w.WriteHeader(400)
			return
		}
		if failing.Load() {
			w.WriteHeader(503)
			return
		}
		var ev struct {
			Data struct {
				Detail struct {
					Name string `json:"name"`
				} `json:"detail"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &ev)
		got[id] = ev.Data.Detail.Name
		w.WriteHeader(204)
	}))
	t.Cleanup(recv.Close)

	members := []string{"a", "b"}
	a := startHookEngineNode(t, ep, "a", members)
	b := startHookEngineNode(t, ep, "b", members)
	ctx := context.Background()
	// An event before the subscription: not sent.
	if _, err := a.bus.PublishSync(ctx, "agent.spawned", "agent:old", "", map[string]string{"name": "before"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*hookEngineNode{a, b} {
		kerneltest.WaitFor(t, n.name+"'s first round", func() bool { _, err := n.eng.List(ctx, ""); return err == nil })
	}
	failing.Store(true)
	name, url, sec := "ops", recv.URL+"/hook", secret
	events := []string{"agent.spawned"}
	v, err := b.eng.Create(ctx, webhook.KindOutbound, webhook.Patch{Name: &name, URL: &url, Events: &events, Secret: &sec})
	if err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "one node hosts the outbox", func() bool { return a.w.Hosted()+b.w.Hosted() == 1 })
	for _, n := range []*hookEngineNode{a, b} {
		kerneltest.WaitFor(t, n.name+" lists the endpoint", func() bool {
			vs, err := n.eng.List(ctx, webhook.KindOutbound)
			return err == nil && len(vs) == 1 && vs[0].ID == v.ID && vs[0].HasSecret
		})
	}
	owner, other := a, b
	if b.w.Hosted() == 1 {
		owner, other = b, a
	}
	var want []string
	for i := 0; i < 5; i++ {
		for _, n := range []*hookEngineNode{a, b} {
			nm := fmt.Sprintf("%s-%d", n.name, i)
			if _, err := n.bus.PublishSync(ctx, "agent.spawned", "agent:"+nm, "", map[string]string{"name": nm}); err != nil {
				t.Fatal(err)
			}
			want = append(want, nm)
		}
	}
	kerneltest.WaitFor(t, "every event queued in etcd and the head refused", func() bool {
		v, err := other.eng.Get(ctx, "", v.ID)
		mu.Lock()
		defer mu.Unlock()
		return err == nil && v.Pending == len(want) && tries > 0
	})

	owner.kill()
	killed := time.Now()
	failing.Store(false)
	kerneltest.WaitFor(t, "every event delivered after the owner died", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	}, func() string { mu.Lock(); defer mu.Unlock(); return fmt.Sprint(got) })
	t.Logf("delivered from %s %v after the owner died", other.name, time.Since(killed).Round(100*time.Millisecond))
	mu.Lock()
	names := map[string]bool{}
	for _, nm := range got {
		names[nm] = true
	}
	n, badSigs := len(got), bad
	mu.Unlock()
	for _, w := range want {
		if !names[w] {
			t.Fatalf("%s not delivered: %v", w, names)
		}
	}
	if n != len(want) || names["before"] || badSigs != 0 {
		t.Fatalf("%d webhook-ids for %d events (before the subscription sent: %v), %d bad signatures", n, len(want), names["before"], badSigs)
	}
	if other.w.Hosted() != 1 {
		t.Fatal("the survivor does not count the outbox as hosted")
	}
	kerneltest.WaitFor(t, "nothing pending", func() bool {
		v, err := other.eng.Get(ctx, "", v.ID)
		return err == nil && v.Pending == 0
	})
	// The history in etcd, read through the node that hosts it: every
	// delivery recorded (the refused attempts of the dead owner too, if
	// their write landed before it died).
	hist, err := other.eng.Deliveries(ctx, v.ID, 100)
	delivered := 0
	for _, a := range hist {
		if a.Outcome == "delivered" {
			delivered++
		}
	}
	if err != nil || delivered != len(want) {
		t.Fatalf("attempt history: %d delivered of %d attempts, %v", delivered, len(hist), err)
	}
}
