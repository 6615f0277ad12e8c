//go:build cluster

package clustertest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const hookSecret = "cluster-hook-secret-1"

// hookReceiver is a loopback webhook receiver that checks each request's
// Standard Webhooks signature and keeps the agents named in the events it
// accepted, by webhook-id. While failing it answers 503.
type hookReceiver struct {
	*httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	ok      map[string]string // webhook-id -> agent name, accepted with 2xx
	tries   int
	badSigs int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{ok: map[string]string{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
		mac := hmac.New(sha256.New, []byte(hookSecret))
		fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		r.mu.Lock()
		defer r.mu.Unlock()
		r.tries++
		if sig != want || id == "" {
			r.badSigs++
			w.WriteHeader(400)
			return
		}
		if r.failing.Load() {
			w.WriteHeader(503)
			return
		}
		var ev struct {
			Type string `json:"type"`
			Data struct {
				Detail struct {
					Name string `json:"name"`
				} `json:"detail"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &ev)
		r.ok[id] = ev.Data.Detail.Name
		w.WriteHeader(204)
	}))
	t.Cleanup(r.Close)
	return r
}

// delivered is the set of agent names accepted, and the number of ids.
func (r *hookReceiver) delivered() (map[string]int, int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[string]int{}
	for _, n := range r.ok {
		names[n]++
	}
	return names, len(r.ok), r.tries
}

// Issue 18 for webhooks: a subscription created through one node gets the
// matching events of every node; its outbox runs on exactly one node;
// with deliveries queued behind a failing receiver, kill -9 of that node
// moves the outbox to another within 10 s and every event arrives, with
// a valid signature, under a webhook-id that stays the same across
// redelivery.
func TestWebhookOutboxOnceClusterWideFailoverAfterKill9(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	recv := newHookReceiver(t)
	extra := `
[webhooks]
retry_backoff = ["1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s","1s"]
timeout = "2s"
`
	nodes := channelNodesWith(t, etcd, oai, extra, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	byName := map[string]*node{"a": a, "b": b, "c": c}

	recv.failing.Store(true)
	code, body := post(t, b.url+"/api/webhooks", fmt.Sprintf(`{"name":"ops","url":%q,"events":["agent.spawned"],"secret":%q}`,
		recv.URL+"/hook", hookSecret))
	if code != 201 {
		t.Fatalf("create the webhook through b: %d %s", code, body)
	}
	var created struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &created)
	if strings.Contains(string(body), hookSecret) {
		t.Fatalf("the secret in the answer: %s", body)
	}
	// Listed through every node, and hosted by exactly one.
	var host string
	deadline := time.Now().Add(10 * time.Second)
	for host == "" || host != webhookHost(a, created.ID) || host != webhookHost(c, created.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("no agreed host: a %q b %q c %q", webhookHost(a, created.ID), webhookHost(b, created.ID), webhookHost(c, created.ID))
		}
		time.Sleep(200 * time.Millisecond)
		host = webhookHost(b, created.ID)
	}
	if byName[host] == nil {
		t.Fatalf("host %q is not a node", host)
	}
	for _, n := range nodes {
		var l struct {
			Webhooks []struct {
				ID string `json:"id"`
			} `json:"webhooks"`
		}
		if getJSON(t, n.url+"/api/webhooks", &l); len(l.Webhooks) != 1 || l.Webhooks[0].ID != created.ID {
			t.Fatalf("%s lists %+v", n.name, l.Webhooks)
		}
	}
	t.Logf("outbox hosted on %s", host)

	// Events on a and c (the agents "helper" were created before the
	// webhook: not sent).
	var want []string
	for i := 0; i < 4; i++ {
		for _, n := range []*node{a, c} {
			name := fmt.Sprintf("%s-agent-%d", n.name, i)
			if code, body := post(t, n.url+"/api/agents", fmt.Sprintf(`{"name":%q,"model":"fakeoai/gpt-test"}`, name)); code != 201 {
				t.Fatalf("%s: create agent: %d %s", n.name, code, body)
			}
			want = append(want, name)
		}
	}
	// All queued in etcd (pending, as any node sees it), and the head
	// already tried, refused and its retry scheduled in etcd.
	retrying := func(n *node) int {
		var hist struct {
			Deliveries []struct {
				Outcome string `json:"outcome"`
			} `json:"deliveries"`
		}
		getJSON(t, n.url+"/api/webhooks/"+created.ID+"/deliveries", &hist)
		r := 0
		for _, d := range hist.Deliveries {
			if d.Outcome == "retrying" {
				r++
			}
		}
		return r
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		var v struct {
			Pending int `json:"pending"`
		}
		getJSON(t, b.url+"/api/webhooks/"+created.ID, &v)
		r := retrying(b)
		if v.Pending == len(want) && r > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %d, retrying %d; want %d pending and a retry scheduled", v.Pending, r, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Kill the host; the receiver recovers.
	dead := byName[host]
	killed := dead.kill(t)
	recv.failing.Store(false)
	alive := others(nodes, dead)
	var newHost string
	for {
		newHost = webhookHost(alive[0], created.ID)
		if newHost != "" && newHost != host {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("outbox not taken over within 10 s (host %q)", newHost)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("outbox moved to %s %v after kill -9", newHost, time.Since(killed).Round(100*time.Millisecond))

	deadline = time.Now().Add(30 * time.Second)
	for {
		names, ids, _ := recv.delivered()
		missing := []string{}
		for _, w := range want {
			if names[w] == 0 {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			// One webhook-id per event: a redelivery keeps its id.
			if ids != len(want) {
				t.Fatalf("%d webhook-ids for %d events: %v", ids, len(want), names)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the failover: %v (got %v)", missing, names)
		}
		time.Sleep(200 * time.Millisecond)
	}
	recv.mu.Lock()
	bad := recv.badSigs
	recv.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d requests with a wrong signature", bad)
	}
	// A test delivery asked of a node that does not host the outbox is
	// forwarded to the host; the attempt history reads through any node.
	var asked *node
	for _, n := range alive {
		if n.name != newHost {
			asked = n
		}
	}
	// Each node learns the new host on its next round (within 1 s);
	// until then it names the dead one or none: 503 host_unreachable or
	// not_hosted, both "try again".
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, body = post(t, asked.url+"/api/webhooks/"+created.ID+"/test", "")
		retry := strings.Contains(string(body), "host_unreachable") || strings.Contains(string(body), "not_hosted")
		if code != 503 || !retry || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 || !strings.Contains(string(body), `"status":"sent"`) {
		t.Fatalf("test delivery through %s (host %s): %d %s", asked.name, newHost, code, body)
	}
	var hist struct {
		Deliveries []struct {
			Outcome string `json:"outcome"`
		} `json:"deliveries"`
	}
	getJSON(t, asked.url+"/api/webhooks/"+created.ID+"/deliveries", &hist)
	outcomes := map[string]int{}
	for _, d := range hist.Deliveries {
		outcomes[d.Outcome]++
	}
	if outcomes["delivered"] < len(want) || outcomes["retrying"] == 0 {
		t.Fatalf("history through %s: %v", asked.name, outcomes)
	}

	// Nothing left queued, as every live node sees it.
	deadline = time.Now().Add(10 * time.Second)
	for _, n := range alive {
		for {
			var v struct {
				Pending int `json:"pending"`
			}
			getJSON(t, n.url+"/api/webhooks/"+created.ID, &v)
			if v.Pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d still pending", n.name, v.Pending)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
