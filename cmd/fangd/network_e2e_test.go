package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/store/storetest"
)

const ofpSecret = "e2e-ofp-shared-secret-0123"

// networkNode is one daemon of the OFP tests: its home, OFP address and
// the config it starts with.
type networkNode struct {
	name, home, ofp, config string
	p                       *proc
}

func networkConfig(name, listen, keepalive string, boot ...string) string {
	quoted := make([]string, len(boot))
	for i, b := range boot {
		quoted[i] = fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf(`
[network]
network_enabled = true
node_name = %q
listen_addresses = [%q]
bootstrap_peers = [%s]
shared_secret_env = "FANGD_TEST_OFP_SECRET"
keepalive_interval = %q
reconnect_initial = "50ms"
reconnect_max = "500ms"
`, name, "/ip4/127.0.0.1/tcp/"+listen[strings.LastIndex(listen, ":")+1:], strings.Join(quoted, ", "), keepalive)
}

func (n *networkNode) start(t *testing.T, secret string) {
	t.Helper()
	n.p = startFangd(t, n.home, n.config, append(keyEnv, "FANGD_API_KEY="+e2eKey, "FANGD_TEST_OFP_SECRET="+secret)...)
}

type peersJSON struct {
	Peers []struct {
		NodeID        string `json:"node_id"`
		NodeName      string `json:"node_name"`
		Address       string `json:"address"`
		State         string `json:"state"`
		Authenticated bool   `json:"authenticated"`
		LastSeen      string `json:"last_seen"`
		ConnectedAt   string `json:"connected_at"`
		Protocol      int    `json:"protocol_version"`
		LinkMode      string `json:"link_mode"`
		Agents        []struct {
			ID, Name string
		} `json:"agents"`
	} `json:"peers"`
	Total int `json:"total"`
}

func (n *networkNode) peers(t *testing.T) peersJSON {
	t.Helper()
	code, body := n.p.request(t, "GET", "/api/peers", "")
	var out peersJSON
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("%s GET /api/peers: %d %s", n.name, code, body)
	}
	return out
}

// state is the state n lists the node named name in, "" when unlisted.
func (n *networkNode) state(t *testing.T, name string) string {
	for _, p := range n.peers(t).Peers {
		if p.NodeName == name {
			if p.State == "connected" && !p.Authenticated {
				t.Fatalf("%s lists %s connected but not authenticated", n.name, name)
			}
			return p.State
		}
	}
	return ""
}

// aID is node-a's id as n lists it.
func aID(t *testing.T, n *networkNode) string {
	for _, p := range n.peers(t).Peers {
		if p.NodeName == "node-a" {
			return p.NodeID
		}
	}
	t.Fatalf("%s does not list node-a", n.name)
	return ""
}

func (n *networkNode) status(t *testing.T) map[string]any {
	code, body := n.p.request(t, "GET", "/api/network/status", "")
	if code != 200 {
		t.Fatalf("status: %d %s", code, body)
	}
	return decodeMap(t, body)
}

// Three daemons started as a user would, bootstrap peers on loopback:
// every pair authenticated in /api/peers; a wrong secret refused and
// audited; a killed node disconnected on the others within two keepalive
// intervals and connected again after its restart.
func TestOFPThreeDaemons(t *testing.T) {
	t.Parallel()
	// Kill -9 closes the node's sockets, so its peers see it at once; the
	// interval only bounds how long that may take to show.
	const keepalive = 2 * time.Second
	oai, _, base := fakes(t, "")
	oai.SetReply(func(r llmtest.Request) string { return "a's agent says: " + r.Messages[len(r.Messages)-1].Content })
	mk := func(name string, boot ...string) *networkNode {
		n := &networkNode{name: name, home: t.TempDir(), ofp: freeAddr(t)}
		n.config = base + networkConfig(name, n.ofp, keepalive.String(), boot...)
		return n
	}
	a := mk("node-a")
	b := mk("node-b", a.ofp)
	c := mk("node-c", a.ofp, b.ofp)
	for _, n := range []*networkNode{a, b, c} {
		n.start(t, ofpSecret)
	}
	all := []*networkNode{a, b, c}
	for _, n := range all {
		for _, m := range all {
			if m != n {
				eventually(t, 20*time.Second, n.name+" lists "+m.name+" connected", func() bool { return n.state(t, m.name) == "connected" })
			}
		}
	}
	pa := c.peers(t)
	if pa.Total != 2 {
		t.Fatalf("c's peers: %+v", pa)
	}
	for _, p := range pa.Peers {
		if p.Protocol != 1 || p.LastSeen == "" || p.ConnectedAt == "" || p.NodeID == "" || p.LinkMode != "tls1.3+ofp-hmac/ecdh" || p.Address == "" {
			t.Fatalf("c's peer entry: %+v", p)
		}
	}
	// The first messages on a link (discover, agent lists) follow its
	// handshake: wait for a to count one rather than race them.
	var st map[string]any
	eventually(t, 20*time.Second, "a to count messages in", func() bool {
		st = a.status(t)
		n, _ := st["messages_in"].(float64)
		return n > 0
	})
	if st["online"] != true || st["connected_peers"].(float64) != 2 || st["pinned_peers"].(float64) != 2 ||
		st["identity_fingerprint"] == nil || st["listen_address"] != a.ofp || st["protocol_version"] != "ofp/1" || st["link_encryption"] != "negotiated" || st["messages_in"].(float64) == 0 {
		t.Fatalf("a's network status: %v", st)
	}
	if code, body := a.p.request(t, "GET", "/metrics", ""); code != 200 || !strings.Contains(string(body), "fangd_ofp_messages_in_total") {
		t.Fatalf("metrics: %d", code)
	}
	if code, body := a.p.request(t, "GET", "/api/security", ""); code != 200 || !strings.Contains(string(body), `"ofp_hmac_auth":"active"`) {
		t.Fatalf("security: %d %s", code, body)
	}
	code, body := a.p.request(t, "GET", "/api/network/trusted-peers", "")
	if code != 200 || decodeMap(t, body)["total"].(float64) != 2 {
		t.Fatalf("trusted peers: %d %s", code, body)
	}
	bID := ""
	for _, p := range a.peers(t).Peers {
		if p.NodeName == "node-b" {
			bID = p.NodeID
		}
	}
	if code, body := a.p.request(t, "GET", "/api/peers/"+bID, ""); code != 200 || decodeMap(t, body)["node_name"] != "node-b" {
		t.Fatalf("GET /api/peers/{id}: %d %s", code, body)
	}
	if code, _ := a.p.request(t, "GET", "/api/peers/no-such-node", ""); code != 404 {
		t.Fatalf("unknown peer: %d", code)
	}
	// Forgetting a pin is audited; the node's key is pinned again at its
	// next handshake.
	if code, body := a.p.request(t, "DELETE", "/api/network/trusted-peers/"+bID, ""); code != 200 {
		t.Fatalf("forget b's pin: %d %s", code, body)
	}
	if code, _ := a.p.request(t, "DELETE", "/api/network/trusted-peers/"+bID, ""); code != 404 {
		t.Fatalf("forget it again: %d", code)
	}
	if _, body := a.p.request(t, "GET", "/api/audit/query?action=ofp_pin_forgotten", ""); !strings.Contains(string(body), bID) {
		t.Fatalf("the forgotten pin is not audited: %s", body)
	}

	// Cross-node messaging: an agent created on a after the links are up
	// is announced to c (agent_spawned), answers c's comms/send with one
	// turn, and appears in c's topology; deleting it is announced too.
	agentID := a.p.agentOn(t, "assistant")
	eventually(t, 20*time.Second, "c to learn a's new agent", func() bool {
		_, body := c.p.request(t, "GET", "/api/comms/topology", "")
		return strings.Contains(string(body), `"id":"peer:`+aID(t, c)+`/agent:`+agentID+`","kind":"remote_agent","name":"assistant"`)
	})
	code, body = c.p.request(t, "POST", "/api/comms/send", `{"to":"peer:node-a/agent:assistant","content":"hello from c"}`)
	if code != 200 {
		t.Fatalf("comms/send to a's agent: %d %s", code, body)
	}
	sent := decodeMap(t, body)
	node, _ := sent["node"].(map[string]any)
	if sent["status"] != "delivered" || sent["response"] != "a's agent says: hello from c" || sent["agent_id"] != agentID ||
		node == nil || node["node_name"] != "node-a" || sent["to"] != "peer:"+aID(t, c)+"/agent:"+agentID {
		t.Fatalf("comms/send answer: %s", body)
	}
	eventually(t, 20*time.Second, "the route in c's topology", func() bool {
		_, body := c.p.request(t, "GET", "/api/comms/topology", "")
		return strings.Contains(string(body), `"to":"peer:`+aID(t, c)+`/agent:`+agentID+`","kind":"ofp_message"`)
	})
	if code, body := c.p.request(t, "POST", "/api/comms/send", `{"to":"peer:node-a/agent:nobody","content":"x"}`); code != 404 {
		t.Fatalf("unknown remote agent: %d %s", code, body)
	}
	if code, body := a.p.request(t, "DELETE", "/api/agents/"+agentID, ""); code != 200 {
		t.Fatalf("delete agent: %d %s", code, body)
	}
	eventually(t, 20*time.Second, "c to forget a's deleted agent", func() bool {
		_, body := c.p.request(t, "GET", "/api/comms/topology", "")
		return !strings.Contains(string(body), `agent:`+agentID+`","kind":"remote_agent"`)
	})

	// A node with the wrong secret is refused and audited, and listed nowhere.
	bad := mk("node-bad", a.ofp)
	bad.start(t, "not-the-shared-secret")
	eventually(t, 20*time.Second, "a to audit the wrong secret", func() bool {
		_, body := a.p.request(t, "GET", "/api/audit/query?action=ofp_handshake_refused", "")
		return strings.Contains(string(body), "HMAC authentication failed")
	})
	if a.state(t, "node-bad") != "" {
		t.Fatal("the node with the wrong secret is listed")
	}
	_, logs := a.p.request(t, "GET", "/api/audit/recent?limit=500", "")
	if strings.Contains(string(logs), ofpSecret) || strings.Contains(bad.p.stderr.String(), "not-the-shared-secret") {
		t.Fatal("a shared secret reached the audit log or the log")
	}

	// kill -9 of c: a and b see it disconnected within two intervals.
	c.p.stop(t, syscall.SIGKILL)
	killed := time.Now()
	for _, n := range []*networkNode{a, b} {
		eventually(t, 20*time.Second, n.name+" to see c disconnected", func() bool { return n.state(t, "node-c") == "disconnected" })
	}
	if d := time.Since(killed); d > 2*keepalive {
		t.Errorf("the kill was seen after %s, more than two keepalive intervals", d)
	}
	c.start(t, ofpSecret)
	for _, n := range []*networkNode{a, b} {
		eventually(t, 20*time.Second, n.name+" to see c connected again", func() bool { return n.state(t, "node-c") == "connected" })
	}
}

// With the network off (the default) nothing listens, the lists are
// empty, a peer is 404 and ofp_hmac_auth reads inactive.
func TestOFPOffByDefault(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), "", "FANGD_API_KEY="+e2eKey)
	if code, body := p.request(t, "GET", "/api/peers", ""); code != 200 || !strings.Contains(string(body), `"peers":[]`) {
		t.Fatalf("peers: %d %s", code, body)
	}
	if code, body := p.request(t, "GET", "/api/peers/x", ""); code != 404 || !strings.Contains(string(body), "not enabled") {
		t.Fatalf("peer: %d %s", code, body)
	}
	if code, body := p.request(t, "GET", "/api/network/status", ""); code != 200 || !strings.Contains(string(body), `"online":false`) {
		t.Fatalf("status: %d %s", code, body)
	}
	if code, body := p.request(t, "GET", "/api/security", ""); code != 200 || !strings.Contains(string(body), `"ofp_hmac_auth":"inactive"`) {
		t.Fatalf("security: %d %s", code, body)
	}
}

// A node that comes back under the same node id with another identity key
// is refused by the node that pinned it (audited ofp_pin_mismatch) until
// an operator forgets the pin; then it links again.
func TestOFPSwappedIdentityKey(t *testing.T) {
	t.Parallel()
	_, _, base := fakes(t, "")
	a := &networkNode{name: "node-a", home: t.TempDir(), ofp: freeAddr(t)}
	a.config = base + networkConfig(a.name, a.ofp, "1s")
	b := &networkNode{name: "node-b", home: t.TempDir(), ofp: freeAddr(t)}
	b.config = base + networkConfig(b.name, b.ofp, "1s", a.ofp)
	a.start(t, ofpSecret)
	b.start(t, ofpSecret)
	eventually(t, 20*time.Second, "a lists b connected", func() bool { return a.state(t, "node-b") == "connected" })
	bID := ""
	for _, p := range a.peers(t).Peers {
		bID = p.NodeID
	}
	b.p.stop(t, syscall.SIGTERM)

	// b's identity in its vault: same node id, a new key.
	db, vault := storetest.OpenWithVault(t, b.home)
	pub, priv, _ := ed25519.GenerateKey(nil)
	raw, _ := json.Marshal(map[string]string{"node_id": bID, "public_key": base64.StdEncoding.EncodeToString(pub),
		"private_key": base64.StdEncoding.EncodeToString(priv.Seed())})
	if err := vault.Put("network/identity", raw); err != nil {
		t.Fatal(err)
	}
	db.Close()

	b.start(t, ofpSecret)
	eventually(t, 20*time.Second, "a to audit the pin mismatch", func() bool {
		_, body := a.p.request(t, "GET", "/api/audit/query?action=ofp_pin_mismatch", "")
		return strings.Contains(string(body), "different identity key")
	})
	if s := a.state(t, "node-b"); s != "disconnected" {
		t.Fatalf("b with a swapped key is %q on a", s)
	}
	if code, body := a.p.request(t, "DELETE", "/api/network/trusted-peers/"+bID, ""); code != 200 {
		t.Fatalf("forget b's pin: %d %s", code, body)
	}
	eventually(t, 20*time.Second, "b linked again under its new key", func() bool { return a.state(t, "node-b") == "connected" })
	_, body := a.p.request(t, "GET", "/api/network/trusted-peers", "")
	if !strings.Contains(string(body), base64.StdEncoding.EncodeToString(pub)) {
		t.Fatalf("the new key is not pinned: %s", body)
	}
}
