//go:build cluster

package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// The harness every scenario shares (cluster_test.go starts the
// processes): requests, the fakes, nodes configured alike, polling, kill
// -9 and the cluster's views of where things run.

const (
	llmKey = "sk-fangd-cluster-test-7d1e"
	// One vault key for every node: channel secrets are sealed with it
	// in etcd (docs/cluster.md).
	vaultKey = "5f1e0c3a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f"
	botToken = "4242:cluster-bot"
)

// tryRequest sends one request with an optional JSON body and extra
// headers; safe in goroutines (no t). A POST always says JSON, as
// http.Post did.
func tryRequest(method, url, body string, hdr map[string]string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != "" || method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b, nil
}

// do is tryRequest failing the test when the request cannot be sent.
func do(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	return request(t, method, url, body, nil)
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	return request(t, "POST", url, body, nil)
}

// postHeader is post with extra request headers.
func postHeader(t *testing.T, url, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	return request(t, "POST", url, body, hdr)
}

func request(t *testing.T, method, url, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	code, b, err := tryRequest(method, url, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}

// getJSON is GET url, decoded into v on 200.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	code, b := do(t, "GET", url, "")
	if code == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	return code
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	_, b := do(t, "GET", url, "")
	return string(b)
}

// peek is GET url decoded into v whatever the status, for polls: false
// when the node does not answer or the body is not JSON.
func peek(url string, v any) bool {
	_, b, err := tryRequest("GET", url, "", nil)
	return err == nil && json.Unmarshal(b, v) == nil
}

// poll calls cond every step until it holds (true) or within has passed
// (false).
func poll(within, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
	}
	return true
}

// kill kills n with -9 and says when.
func (n *node) kill(t *testing.T) time.Time {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// killWait kills n with -9 and waits until it is gone.
func (n *node) killWait(t *testing.T) {
	t.Helper()
	n.kill(t)
	<-n.done
	n.done <- nil
}

// refusesToStart waits (30 s at most) for n to exit with an error, its
// log saying want.
func (n *node) refusesToStart(t *testing.T, want string) {
	t.Helper()
	select {
	case err := <-n.done:
		n.done <- err
		if err == nil || !strings.Contains(n.log.String(), want) {
			t.Fatalf("%s: exit %v, want a refusal saying %q\n%s", n.name, err, want, n.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still runs, want a refusal saying %q\n%s", n.name, want, n.log)
	}
}

// others are nodes without n.
func others(nodes []*node, n *node) []*node {
	var out []*node
	for _, o := range nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// fakeLLM is the OpenAI fake every node's model points at
// (clusterConfig), closed with the test.
func fakeLLM(t *testing.T) *llmtest.Fake {
	oai := llmtest.NewOpenAI(llmKey)
	t.Cleanup(oai.Close)
	return oai
}

// a2aSendLLM is fakeLLM whose agent answers "go" with a gated tool call
// (a2a_send to an unknown agent: its run is an error result the model
// reads) and then says what the tool said.
func a2aSendLLM(t *testing.T) *llmtest.Fake {
	oai := fakeLLM(t)
	oai.SetResponder(func(r llmtest.Request) llmtest.Reply {
		last := r.LastMessage()
		switch {
		case last.Role == "tool":
			return llmtest.Reply{Text: "the tool said: " + last.Content}
		case last.Content == "go":
			return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "a2a_send", Arguments: `{"agent":"nobody-here","message":"ping"}`}}}
		}
		return llmtest.Reply{Text: "pong"}
	})
	return oai
}

// fakeTelegram is the Telegram fake for botToken, closed with the test.
func fakeTelegram(t *testing.T) *telegramtest.Server {
	tg := telegramtest.New(botToken)
	t.Cleanup(tg.Close)
	return tg
}

// telegramChannel is the configure body of a channel on tg answered by
// the agent "helper".
func telegramChannel(tg *telegramtest.Server) string {
	return fmt.Sprintf(`{"adapter":"telegram","token":%q,"api_url":%q,"agent_name":"helper","poll_interval_secs":1}`, botToken, tg.URL())
}

// configure configures channel name through n.
func configure(t *testing.T, n *node, name, cfg string) {
	t.Helper()
	if code, body := post(t, n.url+"/api/channels/"+name+"/configure", cfg); code != 200 {
		t.Fatalf("configure: %d %s", code, body)
	}
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

// homeWith is a fresh node home with cfg as its config.toml.
func homeWith(t *testing.T, cfg string) string {
	t.Helper()
	return writeConfig(t, t.TempDir(), cfg)
}

// writeConfig writes cfg as home's config.toml and returns home.
func writeConfig(t *testing.T, home, cfg string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// clusterConfig points every node at the fake LLM and lets it dial the
// loopback fakes.
func clusterConfig(oai *llmtest.Fake) string {
	return fmt.Sprintf(`
[rate_limit]
api_requests_per_minute = 0

[network_policy]
allow_hosts = ["127.0.0.1/32"]

[providers.fakeoai]
api = "openai"
base_url = %q
trusted = true
api_key_env = "FANGD_TEST_OAI_KEY"

[[models]]
provider = "fakeoai"
id = "gpt-test"
input_per_m = 1.0
output_per_m = 1.0
context_window = 128000
`, oai.BaseURL)
}

// channelNodes starts one node per name on etcd, all with the same vault
// key and the fake LLM, waits until each sees every one up, and creates
// the agent "helper" on each: agents live per node, so the node hosting a
// channel answers with its own agent of the bound name.
func channelNodes(t *testing.T, etcd string, oai *llmtest.Fake, names ...string) []*node {
	t.Helper()
	return channelNodesWith(t, etcd, oai, "", names...)
}

// channelNodesWith is channelNodes with extra appended to each node's
// config.toml.
func channelNodesWith(t *testing.T, etcd string, oai *llmtest.Fake, extra string, names ...string) []*node {
	t.Helper()
	env := []string{"FANGD_TEST_OAI_KEY=" + llmKey, "FANGD_VAULT_KEY=" + vaultKey}
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, startNodeIn(t, etcd, name, homeWith(t, clusterConfig(oai)+extra), env))
	}
	for _, n := range nodes {
		waitMembers(t, n, strings.Join(names, ","), 20*time.Second)
		if code, body := post(t, n.url+"/api/agents", `{"name":"helper","model":"fakeoai/gpt-test"}`); code != 201 {
			t.Fatalf("%s: create agent: %d %s", n.name, code, body)
		}
	}
	return nodes
}

// hostOf is where n says channel name runs ("" if nowhere or unknown).
func hostOf(n *node, name string) string { return entityHost(n, "channel_adapter", name) }

// webhookHost is where n says endpoint id's outbox runs.
func webhookHost(n *node, id string) string { return entityHost(n, "webhook_outbox", id) }

// entityHost is where n's GET /api/cluster says the entity name of a
// cluster-wide kind runs: "" if nowhere or unknown, "mode <mode>" if the
// kind is not cluster-wide there.
func entityHost(n *node, kind, name string) string {
	var st clusterStatus
	if !peek(n.url+"/api/cluster", &st) {
		return ""
	}
	for _, k := range st.Kinds {
		if k.Kind == kind && k.Mode != "cluster" {
			return "mode " + k.Mode
		}
	}
	hosts := map[string]string{}
	for _, c := range st.Channels {
		if kind == "channel_adapter" {
			hosts[c.Name] = c.Node
		}
	}
	for _, w := range st.Webhooks {
		if kind == "webhook_outbox" {
			hosts[w.ID] = w.Node
		}
	}
	return hosts[name]
}

// channelState is GET /api/channels/{name}'s status and node on n.
func channelState(n *node, name string) (state, host string) {
	var v struct {
		Status string `json:"status"`
		Node   string `json:"node"`
	}
	if !peek(n.url+"/api/channels/"+name, &v) {
		return "", ""
	}
	return v.Status, v.Node
}

// agreedHost waits until every node names the same host for channel
// name and that host reports it connected.
func agreedHost(t *testing.T, nodes []*node, name string) *node {
	t.Helper()
	var host *node
	var h string
	agreed := poll(20*time.Second, 100*time.Millisecond, func() bool {
		h = hostOf(nodes[0], name)
		agree := h != ""
		for _, n := range nodes {
			agree = agree && hostOf(n, name) == h
		}
		for _, n := range nodes {
			if agree && n.name == h {
				if st, _ := channelState(n, name); st == "connected" {
					host = n
				}
			}
		}
		return host != nil
	})
	if !agreed {
		t.Fatalf("no agreed host with the channel connected (%s says %q)", nodes[0].name, h)
	}
	return host
}

// etcdClient is a client of the test's etcd, closed with the test.
func etcdClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// excludeMember revokes the lease of member's key in etcd, what an etcd
// blip longer than the membership TTL does, and says when.
func excludeMember(t *testing.T, etcd, member string) time.Time {
	t.Helper()
	cli := etcdClient(t, etcd)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := "/fangd/members/test/" + member
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("member key %s: %v %+v", key, err, resp)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}
