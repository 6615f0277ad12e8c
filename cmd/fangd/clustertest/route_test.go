//go:build cluster

package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// postHeader is post with extra request headers.
func postHeader(t *testing.T, url, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// countSent is how many messages the fake Telegram took with text.
func countSent(tg *telegramtest.Server, text string) int {
	n := 0
	for _, s := range tg.Sent() {
		if s.Text == text {
			n++
		}
	}
	return n
}

// Issue 18, "any node answers any request": two real nodes and a real
// etcd, a Telegram channel hosted on one of them. A test message, a comms
// send and the channel's detail asked of the other node are forwarded to
// the host and answered from there; each message reaches Telegram once. A
// request already forwarded is not forwarded again (409). With the host
// killed, the other node answers 503 and nothing is sent.
func TestRequestRoutedToChannelHost(t *testing.T) {
	etcd := startEtcd(t)
	oai := llmtest.NewOpenAI(llmKey)
	t.Cleanup(oai.Close)
	tg := telegramtest.New(botToken)
	t.Cleanup(tg.Close)

	nodes := channelNodes(t, etcd, oai, "n1", "n2")
	cfg := fmt.Sprintf(`{"adapter":"telegram","token":%q,"api_url":%q,"agent_name":"helper","poll_interval_secs":1}`, botToken, tg.URL())
	if code, body := post(t, nodes[0].url+"/api/channels/tg/configure", cfg); code != 200 {
		t.Fatalf("configure: %d %s", code, body)
	}
	// Both nodes agree on the host, which reports the channel connected.
	var host, other *node
	deadline := time.Now().Add(20 * time.Second)
	for host == nil {
		h := hostOf(nodes[0], "tg")
		if h != "" && hostOf(nodes[1], "tg") == h {
			for i, n := range nodes {
				if n.name == h {
					if st, _ := channelState(n, "tg"); st == "connected" {
						host, other = n, nodes[1-i]
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreed host with the channel connected (n1 says %q)", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
	if err := host.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-host.done
	host.done <- nil
	code, body = post(t, other.url+"/api/channels/tg/test", `{"chat_id":"80"}`)
	if code != 503 || !strings.Contains(string(body), "host_unreachable") {
		t.Fatalf("with the host down: %d %s, want 503 host_unreachable", code, body)
	}
	if n := len(tg.Sent()); n != before {
		t.Fatalf("%d messages sent while the host was down", n-before)
	}
}
