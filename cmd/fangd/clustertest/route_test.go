//go:build cluster

package clustertest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

// Issue 18, "any node answers any request": two real nodes and a real
// etcd, a Telegram channel hosted on one of them. A test message, a comms
// send and the channel's detail asked of the other node are forwarded to
// the host and answered from there; each message reaches Telegram once. A
// request already forwarded is not forwarded again (409). With the host
// killed, the other node answers 503 and nothing is sent.
func TestRequestRoutedToChannelHost(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	tg := fakeTelegram(t)

	nodes := channelNodes(t, etcd, oai, "n1", "n2")
	configure(t, nodes[0], "tg", telegramChannel(tg))
	// Both nodes agree on the host, which reports the channel connected.
	host := agreedHost(t, nodes, "tg")
	other := others(nodes, host)[0]
	t.Logf("channel hosted on %s; asking %s", host.name, other.name)

	// The channel's detail through the other node is the host's live
	// status, not "remote".
	if st, on := channelState(other, "tg"); st != "connected" || on != host.name {
		t.Fatalf("detail through %s: %s on %q, want connected on %s", other.name, st, on, host.name)
	}

	// A test message through the node that does not host the channel.
	code, body := post(t, other.url+"/api/channels/tg/test", `{"chat_id":"77"}`)
	if code != 200 {
		t.Fatalf("test message through %s: %d %s", other.name, code, body)
	}
	var tr struct {
		Status string `json:"status"`
		ChatID string `json:"chat_id"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.ChatID != "77" {
		t.Fatalf("test answer %s (%v)", body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := tg.WaitSent(ctx, func(s telegramtest.Sent) bool { return s.ChatID == "77" })
	if err != nil {
		t.Fatalf("the test message never reached Telegram: %v", err)
	}

	// A comms send to the channel through the other node.
	code, body = post(t, other.url+"/api/comms/send", `{"to":"channel:tg:78","content":"routed hello"}`)
	if code != 200 || !strings.Contains(string(body), `"queued"`) {
		t.Fatalf("comms send through %s: %d %s", other.name, code, body)
	}
	if _, err := tg.WaitSent(ctx, func(s telegramtest.Sent) bool { return s.ChatID == "78" && s.Text == "routed hello" }); err != nil {
		t.Fatalf("the routed comms send never reached Telegram: %v", err)
	}

	// Already forwarded: the other node does not forward it again.
	code, body = postHeader(t, other.url+"/api/channels/tg/test", `{"chat_id":"79"}`, map[string]string{"X-Fangd-Forwarded-By": "n9"})
	if code != 409 || !strings.Contains(string(body), "hosted_elsewhere") {
		t.Fatalf("forwarded request: %d %s, want 409 hosted_elsewhere", code, body)
	}

	// Each message reached Telegram exactly once (late duplicates would
	// come from a retried forward: give them time to show).
	time.Sleep(2 * time.Second)
	if n := countSent(tg, first.Text); n != 1 {
		t.Errorf("test message sent %d times, want 1", n)
	}
	if n := countSent(tg, "routed hello"); n != 1 {
		t.Errorf("comms send delivered %d times, want 1", n)
	}
	for _, s := range tg.Sent() {
		if s.ChatID == "79" {
			t.Errorf("the refused forwarded request sent %q", s.Text)
		}
	}

	// The host dies: until another node takes the channel over (its
	// lease runs 4 s), the other node cannot reach it: 503, nothing sent.
	before := len(tg.Sent())
	host.killWait(t)
	code, body = post(t, other.url+"/api/channels/tg/test", `{"chat_id":"80"}`)
	if code != 503 || !strings.Contains(string(body), "host_unreachable") {
		t.Fatalf("with the host down: %d %s, want 503 host_unreachable", code, body)
	}
	if n := len(tg.Sent()); n != before {
		t.Fatalf("%d messages sent while the host was down", n-before)
	}
}
