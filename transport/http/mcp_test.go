package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/logs"
	"github.com/fangd/fangd/actors/mcp"
	"github.com/fangd/fangd/actors/mcp/mcptest"
	"github.com/fangd/fangd/store"
)

type mcpServer struct {
	*Server
	url       string
	audit     *audit.Log
	m         *mcp.Manager
	x         *mcp.Exposer
	workspace string
}

type mcpSetup struct {
	cfg    func(*Config)
	expose func(*mcp.ExposerOptions)
	// policy, when set, puts POST /mcp under approvals with it.
	policy *approval.Policy
	// manager adjusts the MCP connections' options.
	manager func(*mcp.Options)
}

// exposerCatalog is the daemon's tool catalog, for the exposer alone.
type exposerCatalog struct {
	m *mcp.Manager
	x *mcp.Exposer
}

func (c exposerCatalog) ToolHints(name string) (approval.ToolHints, bool) {
	if ro, ok := c.x.BuiltinReadOnly(name); ok {
		return approval.ToolHints{ReadOnly: ro}, true
	}
	server, ro, ok := c.m.ToolHints(name)
	return approval.ToolHints{Server: server, ReadOnly: ro}, ok
}

func (c exposerCatalog) ToolNames() []string {
	names := c.x.BuiltinNames()
	for _, t := range c.m.Tools() {
		names = append(names, t.Name)
	}
	return names
}

func (c exposerCatalog) ServerNames() []string { return nil }

func newMCPServer(t testing.TB, setup mcpSetup) *mcpServer {
	t.Helper()
	b := newTestBase(t)
	home, db, k, al := b.home, b.db, b.k, b.al
	vault, err := store.OpenVault(db, home)
	if err != nil {
		t.Fatal(err)
	}
	mo := mcp.Options{Home: home, Version: "test", StopGrace: 300 * time.Millisecond,
		Backoff: kernel.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxRetries: 50, Window: time.Minute}}
	if setup.manager != nil {
		setup.manager(&mo)
	}
	m, err := mcp.Start(k, db, vault, al, mo)
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(home, "workspace")
	if err := os.MkdirAll(filepath.Join(ws, "docs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "docs", "hello.txt"), []byte("hello workspace"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "outside.txt"), []byte("secret outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	xo := mcp.ExposerOptions{Workspace: ws, Audit: al, Manager: m, Version: "test"}
	var apps *approval.Approvals
	if setup.policy != nil {
		if apps, err = approval.Start(k, db, vault, al, approval.Options{Policy: *setup.policy}); err != nil {
			t.Fatal(err)
		}
		xo.Approvals = apps
	}
	if setup.expose != nil {
		setup.expose(&xo)
	}
	x := mcp.NewExposer(xo)
	if apps != nil {
		apps.SetTools(exposerCatalog{m, x})
	}
	cfg := testConfig()
	cfg.RateLimitPerMinute = 0
	if setup.cfg != nil {
		setup.cfg(&cfg)
	}
	s, err := New(cfg, Deps{Kernel: k, Audit: al, Store: db, Logs: logs.NewRing(10), MCP: m, MCPServer: x, Approvals: apps})
	if err != nil {
		t.Fatal(err)
	}
	url := b.serve(t, s, func() { x.Close() })
	return &mcpServer{Server: s, url: url, audit: al, m: m, x: x, workspace: ws}
}

// api calls the REST API with the key.
func (s *mcpServer) api(t testing.TB, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := nethttp.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		t.Fatalf("%s %s answered non-JSON %q", method, path, raw)
	}
	return res.StatusCode, out
}

// rpc posts a raw JSON-RPC body the way a plain client does.
func (s *mcpServer) rpc(t testing.TB, body string, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := nethttp.NewRequest("POST", s.url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testKey)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("POST /mcp answered %d %s: %q", res.StatusCode, ct, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST /mcp answered %q", raw)
	}
	return res.StatusCode, out
}

// peer is a Go SDK MCP server on loopback, to be proxied.
func peer(t testing.TB) string {
	t.Helper()
	srv := sdk.NewServer(&sdk.Implementation{Name: "peer", Version: "1"}, nil)
	type in struct {
		Message string `json:"message"`
	}
	sdk.AddTool(srv, &sdk.Tool{Name: "shout", Description: "Upper-cases the message"}, func(ctx context.Context, req *sdk.CallToolRequest, a in) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strings.ToUpper(a.Message)}}}, nil, nil
	})
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*nethttp.Request) *sdk.Server { return srv }, nil))
	// fangd's session holds a streaming GET open; cut it so Close returns.
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close() })
	return hs.URL
}

func (s *mcpServer) addPeer(t testing.TB, name, url string) {
	t.Helper()
	code, body := s.api(t, "POST", "/api/mcp/servers", `{"name":"`+name+`","transport":{"type":"http","url":"`+url+`"}}`)
	if code != 201 {
		t.Fatalf("add peer: %d %v", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, b := s.api(t, "GET", "/api/mcp/servers/"+name, ""); b["connected"] == true {
			// The exposer follows the tool set asynchronously.
			for time.Now().Before(deadline) {
				if _, l := s.rpc(t, `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`, nil); strings.Contains(toJSON(l), "mcp_"+name+"_") {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("peer %s never connected", name)
}

func toJSON(v any) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

// The seed's example: a bare tools/list POST with no initialize and no
// special Accept gets a plain JSON-RPC response.
func TestMCPPlainJSONRPCLikeTheSeed(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	s.addPeer(t, "peer", peer(t))
	code, body := s.rpc(t, `{"jsonrpc":"2.0","method":"tools/list","id":1}`, nil)
	if code != 200 || body["id"] != float64(1) || body["jsonrpc"] != "2.0" {
		t.Fatalf("tools/list: %d %v", code, body)
	}
	names := map[string]bool{}
	for _, tl := range body["result"].(map[string]any)["tools"].([]any) {
		tm := tl.(map[string]any)
		names[tm["name"].(string)] = true
		if _, ok := tm["inputSchema"]; !ok {
			t.Fatalf("tool without inputSchema: %v", tm)
		}
	}
	for _, want := range []string{"file_read", "file_list", "audit_recent", "mcp_peer_shout"} {
		if !names[want] {
			t.Errorf("tools/list lacks %s: %v", want, names)
		}
	}
	if names["agent_send"] || names["comms_events"] || names["channel_send"] || names["approval_request"] {
		t.Errorf("tools listed whose backends are not wired: %v", names)
	}

	// A built-in call, a traversal attempt, a proxied call.
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"file_read","arguments":{"path":"docs/hello.txt"}}}`, nil)
	if !strings.Contains(toJSON(body["result"]), "hello workspace") {
		t.Fatalf("file_read: %v", body)
	}
	for _, p := range []string{"../outside.txt", "/etc/passwd", "docs/../../outside.txt"} {
		_, body = s.rpc(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"file_read","arguments":{"path":"`+p+`"}}}`, nil)
		r, _ := body["result"].(map[string]any)
		if r == nil || r["isError"] != true || strings.Contains(toJSON(body), "secret outside") {
			t.Fatalf("traversal %q was not refused: %v", p, body)
		}
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"mcp_peer_shout","arguments":{"message":"hey"}}}`, nil)
	if !strings.Contains(toJSON(body["result"]), "HEY") {
		t.Fatalf("proxied call: %v", body)
	}

	// Errors are JSON-RPC error objects.
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}`, nil)
	if e, _ := body["error"].(map[string]any); e == nil || e["code"] != float64(-32602) {
		t.Fatalf("unknown tool: %v", body)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":6,"method":"no/such/method"}`, nil)
	if e, _ := body["error"].(map[string]any); e == nil || e["code"] != float64(-32601) {
		t.Fatalf("unknown method: %v", body)
	}
	code, body = s.rpc(t, `{"jsonrpc":"2.0","id":7,`, nil)
	if e, _ := body["error"].(map[string]any); code != 400 || e == nil || e["code"] != float64(-32700) {
		t.Fatalf("malformed JSON: %d %v", code, body)
	}
	code, body = s.rpc(t, `{"id":8,"method":"tools/list"}`, nil)
	if e, _ := body["error"].(map[string]any); code != 400 || e == nil || e["code"] != float64(-32600) {
		t.Fatalf("not JSON-RPC: %d %v", code, body)
	}

	// Every call is audited with the arguments hashed, never shown.
	args := `{"message":"hey"}`
	sum := sha256.Sum256([]byte(args))
	rec, err := s.audit.Recent(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	var found, leaked bool
	for _, raw := range rec.Entries {
		var e audit.Entry
		json.Unmarshal(raw, &e)
		if e.EventType == "tool_invoked" && strings.Contains(e.Details, "server=peer tool=shout outcome=ok") &&
			strings.Contains(e.Details, "args_sha256="+hex.EncodeToString(sum[:])) && e.Actor == "api_key" && e.SourceIP == "127.0.0.1" {
			found = true
		}
		if strings.Contains(string(raw), `"hey"`) || strings.Contains(string(raw), "docs/hello.txt") {
			leaked = true
		}
	}
	if !found || leaked {
		t.Fatalf("audit: found=%v leaked=%v", found, leaked)
	}
}

// hostRewriter is an http.RoundTripper that records statuses and can
// forge the Host header (a DNS-rebinding attack reaches a loopback
// listener under a foreign name).
type hostRewriter struct {
	host   string
	key    string
	status atomic.Int32
}

func (h *hostRewriter) RoundTrip(r *nethttp.Request) (*nethttp.Response, error) {
	r = r.Clone(r.Context())
	if h.host != "" {
		r.Host = h.host
	}
	if h.key != "" {
		r.Header.Set("Authorization", "Bearer "+h.key)
	}
	res, err := nethttp.DefaultTransport.RoundTrip(r)
	if err == nil {
		h.status.Store(int32(res.StatusCode))
	}
	return res, err
}

func goClient(t testing.TB, url string, rt nethttp.RoundTripper, version string) (*sdk.ClientSession, error) {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "go-test-client", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var opts *sdk.ClientSessionOptions
	if version != "" {
		opts = &sdk.ClientSessionOptions{ProtocolVersion: version}
	}
	return c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url + "/mcp", HTTPClient: &nethttp.Client{Transport: rt}, MaxRetries: -1}, opts)
}

// The Go SDK client, in both eras: the 2026-07-28 stateless protocol
// (server/discover, no session) and the 2025-11-25 session protocol.
func TestMCPGoSDKClientBothEras(t *testing.T) {
	t.Parallel()
	for _, stateless := range []bool{false, true} {
		name := map[bool]string{false: "stateful", true: "stateless"}[stateless]
		t.Run(name, func(t *testing.T) {
			s := newMCPServer(t, mcpSetup{cfg: func(c *Config) { c.MCP.Stateless = stateless }})
			s.addPeer(t, "peer", peer(t))
			for _, version := range []string{"", "2025-11-25", "2025-06-18"} {
				cs, err := goClient(t, s.url, &hostRewriter{key: testKey}, version)
				if err != nil {
					t.Fatalf("connect (%q): %v", version, err)
				}
				got := cs.InitializeResult().ProtocolVersion
				want := version
				if want == "" {
					want = "2026-07-28"
				}
				if got != want {
					t.Errorf("negotiated %s, want %s", got, want)
				}
				if sid := cs.ID(); (sid != "") != (!stateless && version != "") {
					t.Errorf("%s, version %q: session id %q", name, version, sid)
				}
				ctx := context.Background()
				lr, err := cs.ListTools(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(lr.Tools) < 4 {
					t.Fatalf("tools: %d", len(lr.Tools))
				}
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "file_list", Arguments: map[string]any{"path": "docs"}})
				if err != nil || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, "hello.txt") {
					t.Fatalf("file_list: %v %v", res, err)
				}
				res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "mcp_peer_shout", Arguments: map[string]any{"message": "go"}})
				if err != nil || res.Content[0].(*sdk.TextContent).Text != "GO" {
					t.Fatalf("proxied: %v %v", res, err)
				}
				cs.Close()
			}
		})
	}
}

func TestMCPHostRebindingAndAuth(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	rt := &hostRewriter{key: testKey, host: "evil.example.com"}
	if _, err := goClient(t, s.url, rt, "2025-11-25"); err == nil {
		t.Fatal("a foreign Host header was accepted on a loopback listener")
	}
	if rt.status.Load() != 403 {
		t.Fatalf("rebinding attempt got %d, want 403", rt.status.Load())
	}
	rt = &hostRewriter{}
	if _, err := goClient(t, s.url, rt, ""); err == nil {
		t.Fatal("an unauthenticated client connected")
	}
	if rt.status.Load() != 401 {
		t.Fatalf("unauthenticated call got %d, want 401", rt.status.Load())
	}
	rt = &hostRewriter{key: testKey, host: "localhost"}
	if cs, err := goClient(t, s.url, rt, "2025-11-25"); err != nil {
		t.Fatalf("localhost Host refused: %v", err)
	} else {
		cs.Close()
	}
}

// /mcp's rebinding rule is the API's one Host check: names in
// allowed_hosts are admitted there too, foreign ones still get 403.
func TestMCPAllowedHosts(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{cfg: func(c *Config) { c.AllowedHosts = []string{"fangd.test"} }})
	rt := &hostRewriter{key: testKey, host: "fangd.test:4545"}
	cs, err := goClient(t, s.url, rt, "2025-11-25")
	if err != nil {
		t.Fatalf("allowed_hosts name refused on /mcp: %v (status %d)", err, rt.status.Load())
	}
	cs.Close()
	rt = &hostRewriter{key: testKey, host: "evil.example.com"}
	if _, err := goClient(t, s.url, rt, "2025-11-25"); err == nil || rt.status.Load() != 403 {
		t.Fatalf("foreign Host on /mcp: err=%v status %d", err, rt.status.Load())
	}
}

type mcpFakeAgents struct{}

func (mcpFakeAgents) ToolFilter(_ context.Context, agent string) (func(string) bool, error) {
	if agent != "reader" {
		return nil, kernel.NotFound("agent %s not found", agent)
	}
	return func(tool string) bool { return tool == "file_list" || tool == "agent_send" }, nil
}

type mcpFakeMessenger struct{}

type mcpFakeChannels struct{}

func (mcpFakeChannels) SendToChannel(_ context.Context, from, channel, chat, msg string) (string, error) {
	if channel != "tg" {
		return "", kernel.NotFound("channel %s not found", channel)
	}
	return "queued " + msg + " for " + channel + ":" + chat + " from " + from, nil
}

func (mcpFakeMessenger) SendToAgent(_ context.Context, from, to, msg string) (string, error) {
	if to != "helper" {
		return "", kernel.NotFound("agent %s not found", to)
	}
	return "helper got " + msg + " from " + from, nil
}

type mcpFakeEvents struct{}

func (mcpFakeEvents) RecentEvents(_ context.Context, limit int) ([]map[string]any, error) {
	return []map[string]any{{"id": 2, "type": "message.routed"}, {"id": 1, "type": "agent.spawned"}}[:min(limit, 2)], nil
}

// X-Fangd-Agent-Id restricts the list and the calls to the agent's tools.
func TestMCPAgentRestrictionAndAgentTools(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{expose: func(o *mcp.ExposerOptions) {
		o.Agents, o.Messenger, o.Events, o.Channels = mcpFakeAgents{}, mcpFakeMessenger{}, mcpFakeEvents{}, mcpFakeChannels{}
	}})
	_, body := s.rpc(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil)
	all := toJSON(body)
	if !strings.Contains(all, `"agent_send"`) || !strings.Contains(all, `"comms_events"`) || !strings.Contains(all, `"channel_send"`) {
		t.Fatalf("wired agent tools are missing: %s", all)
	}
	hdr := map[string]string{mcp.HeaderAgentID: "reader"}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, hdr)
	var names []string
	for _, tl := range body["result"].(map[string]any)["tools"].([]any) {
		names = append(names, tl.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "agent_send,file_list" {
		t.Fatalf("restricted list: %v", names)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"file_read","arguments":{"path":"docs/hello.txt"}}}`, hdr)
	if e, _ := body["error"].(map[string]any); e == nil || e["code"] != float64(mcp.CodeToolDenied) {
		t.Fatalf("a tool outside the agent's list was callable: %v", body)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"agent_send","arguments":{"agent_id":"helper","message":"ping"}}}`, hdr)
	if !strings.Contains(toJSON(body), "helper got ping from agent:reader") {
		t.Fatalf("agent_send: %v", body)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"channel_send","arguments":{"channel":"tg","chat_id":"42","message":"hi"}}}`, nil)
	if !strings.Contains(toJSON(body), "queued hi for tg:42 from mcp") {
		t.Fatalf("channel_send: %v", body)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`, map[string]string{mcp.HeaderAgentID: "ghost"})
	if e, _ := body["error"].(map[string]any); e == nil || e["code"] != float64(mcp.CodeIdentity) {
		t.Fatalf("unknown agent: %v", body)
	}
	_, body = s.rpc(t, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"comms_events","arguments":{"limit":1}}}`, nil)
	if !strings.Contains(toJSON(body), "message.routed") || strings.Contains(toJSON(body), "agent.spawned") {
		t.Fatalf("comms_events: %v", body)
	}
	// A spoofed internal header is overwritten by the HTTP layer.
	_, _ = s.rpc(t, `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"file_list","arguments":{}}}`, map[string]string{mcp.HeaderActor: "admin", mcp.HeaderSourceIP: "8.8.8.8"})
	rec, _ := s.audit.Recent(context.Background(), 50)
	for _, raw := range rec.Entries {
		if strings.Contains(string(raw), "8.8.8.8") || strings.Contains(string(raw), `"actor":"admin"`) {
			t.Fatalf("a client forged the audited identity: %s", raw)
		}
	}
}

// The official TypeScript SDK client against POST /mcp in both modes.
func TestMCPNodeSDKClient(t *testing.T) {
	t.Parallel()
	peers := mcptest.NPM(t)
	script := peers.Script(t, "mcp-client.mjs")
	for _, stateless := range []bool{false, true} {
		name := map[bool]string{false: "stateful", true: "stateless"}[stateless]
		t.Run(name, func(t *testing.T) {
			s := newMCPServer(t, mcpSetup{cfg: func(c *Config) { c.MCP.Stateless = stateless }})
			s.addPeer(t, "peer", peer(t))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, peers.Node, script, s.url+"/mcp", testKey,
				"file_read", `{"path":"docs/hello.txt"}`, "mcp_peer_shout", `{"message":"node"}`).Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("node client: %v: %s %s", err, out, ee.Stderr)
				}
				t.Fatal(err)
			}
			var r struct {
				SessionID *string `json:"sessionId"`
				Server    struct {
					Name string `json:"name"`
				} `json:"server"`
				Tools   []string `json:"tools"`
				Builtin struct {
					Text    string `json:"text"`
					IsError bool   `json:"isError"`
				} `json:"builtin"`
				Proxied struct {
					Text string `json:"text"`
				} `json:"proxied"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("node client printed %q", out)
			}
			if r.Server.Name != "fangd" || r.Builtin.Text != "hello workspace" || r.Builtin.IsError || r.Proxied.Text != "NODE" {
				t.Fatalf("node client saw %s", out)
			}
			if (r.SessionID != nil && *r.SessionID != "") == stateless {
				t.Fatalf("%s mode: session id %v", name, r.SessionID)
			}
		})
	}
}

func TestMCPRestEndpoints(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	url := peer(t)
	// The seed's flat form.
	code, body := s.api(t, "POST", "/api/mcp/servers", `{"name":"flat","transport":"http","url":"`+url+`"}`)
	if code != 201 || body["name"] != "flat" || body["transport"] != "http" || body["url"] != url {
		t.Fatalf("flat add: %d %v", code, body)
	}
	// LibreFang's add answer (201 {status: "added", name, template_id,
	// reload}) with fangd's view; the connection state is under
	// connection_status, as the new server's first state.
	checkChange := func(what string, code int, body map[string]any, wantCode int, status string) {
		t.Helper()
		if code != wantCode || body["status"] != status || body["reload"] != "applied" || body["name"] == nil {
			t.Fatalf("%s: %d %v", what, code, body)
		}
		for _, k := range []string{"template_id", "transport", "connected", "connection_status", "timeout_secs", "tools", "source"} {
			if _, ok := body[k]; !ok {
				t.Errorf("%s answer lacks %s: %v", what, k, body)
			}
		}
		switch body["connection_status"] {
		case mcp.StatusConnecting, mcp.StatusConnected, mcp.StatusReconnecting, mcp.StatusError:
		default:
			t.Errorf("%s: connection_status %v is no connection state", what, body["connection_status"])
		}
	}
	checkChange("flat add", code, body, 201, "added")
	if body["connection_status"] != mcp.StatusConnecting || body["connected"] != false {
		t.Fatalf("a new server starts connecting: %v", body)
	}
	// LibreFang's raw entry (nested transport, timeout_secs, template_id
	// absent): the same answer. Nothing listens on port 9 of loopback.
	code, body = s.api(t, "POST", "/api/mcp/servers", `{"name":"lf","transport":{"type":"http","url":"http://127.0.0.1:9/mcp"},"timeout_secs":10}`)
	checkChange("librefang add", code, body, 201, "added")
	if body["name"] != "lf" || body["template_id"] != "" || body["timeout_secs"] != float64(10) {
		t.Fatalf("librefang add: %v", body)
	}
	code, body = s.api(t, "PUT", "/api/mcp/servers/lf", `{"name":"lf","transport":{"type":"http","url":"http://127.0.0.1:9/mcp"},"timeout_secs":12}`)
	checkChange("librefang update", code, body, 200, "updated")
	if body["timeout_secs"] != float64(12) {
		t.Fatalf("librefang update: %v", body)
	}
	if code, body = s.api(t, "DELETE", "/api/mcp/servers/lf", ""); code != 200 {
		t.Fatalf("delete lf: %d %v", code, body)
	}
	code, body = s.api(t, "POST", "/api/mcp/servers", `{"name":"flat","transport":{"type":"http","url":"`+url+`"}}`)
	if code != 409 || body["code"] != "conflict" {
		t.Fatalf("duplicate: %d %v", code, body)
	}
	for _, bad := range []struct {
		body string
		code int
		want string
	}{
		{`{"template_id":"no-such"}`, 404, "not found"},
		{`{"template_id":"github","credentials":{}}`, 400, "GITHUB_PERSONAL_ACCESS_TOKEN"},
		{`{"name":"x","transport":{"type":"telnet"}}`, 400, "telnet"},
		{`{"name":"x","transport":{"type":"stdio","command":"no-such-binary-fangd"}}`, 400, "command not found"},
		{`{"name":"x","transport":{"type":"stdio","command":"/bin/sh"},"bogus":1}`, 400, "bogus"},
		{`not json`, 400, "malformed"},
	} {
		code, body = s.api(t, "POST", "/api/mcp/servers", bad.body)
		if code != bad.code || !strings.Contains(strings.ToLower(toJSON(body["error"])), strings.ToLower(bad.want)) {
			t.Errorf("%s: %d %v", bad.body, code, body)
		}
	}
	req, _ := nethttp.NewRequest("POST", s.url+"/api/mcp/servers", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "text/plain")
	if res, _ := nethttp.DefaultClient.Do(req); res.StatusCode != 415 {
		t.Fatalf("wrong content type: %d", res.StatusCode)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body = s.api(t, "GET", "/api/mcp/servers", "")
		servers := body["servers"].([]any)
		if len(servers) == 1 && servers[0].(map[string]any)["connected"] == true {
			srv := servers[0].(map[string]any)
			if body["total"] != float64(1) || !strings.Contains(toJSON(srv["tools"]), `"name":"mcp_flat_shout"`) {
				t.Fatalf("list: %v", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never connected: %v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body = s.api(t, "POST", "/api/mcp/servers/flat/reconnect", "")
	if code != 200 || body["id"] != "flat" || body["status"] != "connected" || body["tool_count"] != float64(1) {
		t.Fatalf("reconnect: %d %v", code, body)
	}
	code, body = s.api(t, "PUT", "/api/mcp/servers/flat", `{"transport":{"type":"http","url":"`+url+`"},"headers":["X-Token: abc"],"timeout_secs":5}`)
	if code != 200 || body["timeout_secs"] != float64(5) || toJSON(body["headers"]) != `["X-Token: ***"]` {
		t.Fatalf("put: %d %v", code, body)
	}
	checkChange("put", code, body, 200, "updated")
	if code, _ = s.api(t, "GET", "/api/mcp/servers/nope", ""); code != 404 {
		t.Fatalf("unknown server: %d", code)
	}
	code, body = s.api(t, "GET", "/api/mcp/health", "")
	if code != 200 || body["count"] != float64(1) || body["status"] == nil {
		t.Fatalf("health: %d %v", code, body)
	}
	h0 := body["health"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "status", "tool_count", "last_ok", "last_error", "consecutive_failures", "reconnect_attempts", "connected_since", "tools_changed"} {
		if _, ok := h0[k]; !ok {
			t.Errorf("health entry lacks %s: %v", k, h0)
		}
	}
	code, body = s.api(t, "GET", "/api/mcp/catalog", "")
	if code != 200 || body["count"].(float64) < 15 {
		t.Fatalf("catalog: %d %v", code, body)
	}
	code, body = s.api(t, "GET", "/api/v1/mcp/catalog/github", "")
	if code != 200 || body["id"] != "github" || body["installed"] != false || body["required_env"] == nil {
		t.Fatalf("catalog entry: %d %v", code, body)
	}
	code, body = s.api(t, "POST", "/api/mcp/reload", "")
	if code != 200 || body["status"] != "reloaded" {
		t.Fatalf("reload: %d %v", code, body)
	}
	code, body = s.api(t, "POST", "/api/mcp/servers/flat/tools/accept", "")
	if code != 200 || toJSON(body["accepted"]) != "[]" {
		t.Fatalf("accept with nothing changed: %d %v", code, body)
	}
	code, body = s.api(t, "DELETE", "/api/mcp/servers/flat", "")
	if code != 200 || body["status"] != "removed" {
		t.Fatalf("delete: %d %v", code, body)
	}
	if code, _ = s.api(t, "DELETE", "/api/mcp/servers/flat", ""); code != 404 {
		t.Fatalf("second delete: %d", code)
	}
}

// POST /mcp under the default approval policy: a proxied tool its server
// does not annotate read-only waits, and a request nobody decides expires
// into an isError result naming the approval (the caller's identity in
// the record, the outcome in the audit); fangd's read-only built-ins run
// at once. On main the call ran at once.
func TestMCPCallWaitsForApprovalAndExpires(t *testing.T) {
	t.Parallel()
	p := approval.DefaultPolicy()
	p.TimeoutSecs = 1
	s := newMCPServer(t, mcpSetup{policy: &p})
	s.addPeer(t, "p", peer(t))

	_, out := s.rpc(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_list","arguments":{}}}`, nil)
	if res, _ := out["result"].(map[string]any); res == nil || res["isError"] == true || !strings.Contains(toJSON(res), "docs") {
		t.Fatalf("read-only built-in: %v", out)
	}
	_, out = s.rpc(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mcp_p_shout","arguments":{"message":"hi"}}}`, nil)
	res, _ := out["result"].(map[string]any)
	if res == nil || res["isError"] != true || strings.Contains(toJSON(res), "HI") || !strings.Contains(toJSON(res), "expired") {
		t.Fatalf("an undecided call: %v", out)
	}
	_, page := s.api(t, "GET", "/api/approvals?status=expired", "")
	list, _ := page["approvals"].([]any)
	if len(list) != 1 {
		t.Fatalf("approvals %v", page)
	}
	rec := list[0].(map[string]any)
	if rec["action"] != "mcp_p_shout" || rec["requested_by"] != "mcp:api_key" || rec["agent_id"] != "mcp:api_key" ||
		!strings.Contains(toJSON(res), rec["id"].(string)) {
		t.Fatalf("record %v, answer %v", rec, res)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		_, body := s.api(t, "GET", "/api/audit/recent?limit=50", "")
		return strings.Contains(toJSON(body), "tool=shout outcome=expired")
	})
	_, out = s.api(t, "GET", "/api/approvals/policy", "")
	if !strings.Contains(toJSON(out), `{"gated":true,"name":"mcp_p_shout","read_only":false,"reason":"not_read_only","server":"p"}`) {
		t.Fatalf("policy %v", out)
	}
}

// A POST /mcp tools/call gets its two audit entries, the exposer's
// tool_invoked and the chain's "POST /mcp -> 200" api_request, next to each
// other in that order and in one synced commit (the exposer hands its entry
// to the request: mcp.CallAudits), where they used to be two commits in
// series. Plain JSON-RPC, the Go SDK's session-less calls and a stateful
// Go SDK session alike; other /mcp requests keep their one entry.
func TestMCPToolCallAuditedInOneCommit(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	s.addPeer(t, "peer", peer(t))
	type pair struct{ calls, requests, adjacent int }
	counts := func() (p pair) {
		t.Helper()
		rec, err := s.audit.Recent(context.Background(), 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range rec.Entries {
			var e audit.Entry
			json.Unmarshal(raw, &e)
			switch {
			case e.EventType == "tool_invoked" && strings.Contains(e.Details, "tool=shout"):
				p.calls++
			case e.EventType == "api_request" && strings.HasPrefix(e.Details, "POST /mcp -> "):
				p.requests++
			}
		}
		// Adjacent pairs: a call entry directly followed (one id later) by
		// its request's entry.
		for i := 1; i < len(rec.Entries); i++ {
			var older, newer audit.Entry
			json.Unmarshal(rec.Entries[i], &older)
			json.Unmarshal(rec.Entries[i-1], &newer)
			if older.EventType == "tool_invoked" && strings.Contains(older.Details, "tool=shout") &&
				newer.EventType == "api_request" && strings.HasPrefix(newer.Details, "POST /mcp -> 200") && newer.ID == older.ID+1 {
				p.adjacent++
			}
		}
		return p
	}
	commits := func() float64 { return auditCommits(t, s.Server) }
	p0 := counts()
	s.rpc(t, `{"jsonrpc":"2.0","method":"tools/list","id":1}`, nil)
	if p := counts(); p.calls != p0.calls || p.requests != p0.requests+1 {
		t.Fatalf("tools/list: %+v; want %+v with one more request entry", p, p0)
	}
	p0, c0 := counts(), commits()
	_, body := s.rpc(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mcp_peer_shout","arguments":{"message":"hey"}}}`,
		map[string]string{mcp.HeaderAuditToken: "1"}) // a client's value is dropped
	if !strings.Contains(toJSON(body["result"]), "HEY") {
		t.Fatalf("proxied call: %v", body)
	}
	if p, c := counts(), commits(); p.calls != p0.calls+1 || p.requests != p0.requests+1 || p.adjacent != p0.adjacent+1 || c != c0+1 {
		t.Fatalf("plain tools/call: %+v after %+v, %v commits after %v; want both entries, adjacent, in one commit", p, p0, c, c0)
	}

	stateless, err := goClient(t, s.url, &hostRewriter{key: testKey}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stateless.Close()
	p0, c0 = counts(), commits()
	if res, err := stateless.CallTool(context.Background(), &sdk.CallToolParams{Name: "mcp_peer_shout", Arguments: map[string]any{"message": "go"}}); err != nil || res.Content[0].(*sdk.TextContent).Text != "GO" {
		t.Fatalf("proxied (session-less): %v %v", res, err)
	}
	if p, c := counts(), commits(); p.calls != p0.calls+1 || p.requests != p0.requests+1 || p.adjacent != p0.adjacent+1 || c != c0+1 {
		t.Fatalf("session-less tools/call: %+v after %+v, %v commits after %v; want both entries, adjacent, in one commit", p, p0, c, c0)
	}

	cs, err := goClient(t, s.url, &hostRewriter{key: testKey}, "2025-11-25")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if cs.ID() == "" {
		t.Fatal("no session")
	}
	p1 := counts()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "mcp_peer_shout", Arguments: map[string]any{"message": "go"}})
	if err != nil || res.Content[0].(*sdk.TextContent).Text != "GO" {
		t.Fatalf("proxied: %v %v", res, err)
	}
	if p := counts(); p.calls != p1.calls+1 || p.requests != p1.requests+1 {
		t.Fatalf("session tools/call: %+v after %+v; want one more of each entry", p, p1)
	}
}

// callTypes records the Content-Type of every tools/call answer.
type callTypes struct {
	next  nethttp.RoundTripper
	mu    sync.Mutex
	types []string
}

func (c *callTypes) RoundTrip(r *nethttp.Request) (*nethttp.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	res, err := c.next.RoundTrip(r)
	if err == nil && parsedMethod(body) == "tools/call" {
		c.mu.Lock()
		c.types = append(c.types, res.Header.Get("Content-Type"))
		c.mu.Unlock()
	}
	return res, err
}

// A session-less (2026-07-28) tools/call is answered as one JSON body, not
// a one-event SSE stream (serveStateless); a 2025 session keeps its SSE
// answers. Either way the Go SDK client gets the same result.
func TestMCPStatelessToolCallAnsweredAsJSON(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	s.addPeer(t, "peer", peer(t))
	for _, tc := range []struct{ version, want string }{{"", "application/json"}, {"2025-11-25", "text/event-stream"}} {
		rec := &callTypes{next: &hostRewriter{key: testKey}}
		c := sdk.NewClient(&sdk.Implementation{Name: "go-test-client", Version: "1"}, nil)
		var opts *sdk.ClientSessionOptions
		if tc.version != "" {
			opts = &sdk.ClientSessionOptions{ProtocolVersion: tc.version}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.url + "/mcp", HTTPClient: &nethttp.Client{Transport: rec}, MaxRetries: -1}, opts)
		if err != nil {
			cancel()
			t.Fatalf("connect (%q): %v", tc.version, err)
		}
		for _, call := range []struct{ tool, arg, want string }{{"mcp_peer_shout", "message", "GO"}, {"file_list", "path", "hello.txt"}} {
			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: call.tool, Arguments: map[string]any{call.arg: map[string]string{"message": "go", "path": "docs"}[call.arg]}})
			if err != nil || res.IsError || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, call.want) {
				t.Fatalf("%q %s: %+v %v", tc.version, call.tool, res, err)
			}
		}
		// An unknown tool's error arrives the same way.
		if res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "no_such_tool"}); err == nil && !res.IsError {
			t.Fatalf("%q: an unknown tool answered %+v", tc.version, res)
		}
		cs.Close()
		cancel()
		rec.mu.Lock()
		types := rec.types
		rec.mu.Unlock()
		if len(types) != 3 {
			t.Fatalf("%q: %d tools/call answers recorded, want 3", tc.version, len(types))
		}
		for _, ct := range types {
			if !strings.HasPrefix(ct, tc.want) {
				t.Errorf("%q: a tools/call was answered as %q, want %s", tc.version, ct, tc.want)
			}
		}
	}
}

// checkJSONRPC reads the routing facts in the pass that validates the body.
func TestCheckJSONRPCReadsMethodAndInitialize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body   string
		method string
		init   bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, "tools/call", false},
		{` {"jsonrpc":"2.0","id":1,"method":"initialize","params":{}} `, "initialize", true},
		{`[{"jsonrpc":"2.0","id":1,"method":"initialize"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`, "", true},
		{`[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`, "", false},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, "", false},
		{`{"jsonrpc":"2.0","id":1,"method":7}`, "", false},
		{`{"jsonrpc":"2.0","id":1,"Method":"initialize","method":"tools/list"}`, "tools/list", false},
	} {
		got, err := checkJSONRPC([]byte(c.body))
		if err != nil || got.method != c.method || got.initialize != c.init {
			t.Errorf("%s: %+v %v, want method %q initialize %t", c.body, got, err, c.method, c.init)
		}
	}
	if _, err := checkJSONRPC([]byte(`{"jsonrpc":"1.0","method":"x"}`)); err == nil || err.code != -32600 {
		t.Errorf("jsonrpc 1.0 accepted: %v", err)
	}
}

// A body that is not JSON is a parse error (-32700) whatever else is wrong
// with it, and valid JSON of the wrong shape an invalid request (-32600):
// json.Valid runs only once a body is refused, so the order matters.
func TestCheckJSONRPCTellsParseErrorsFromInvalidRequests(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", MaxJSONDepth+1)
	for _, c := range []struct {
		body string
		code int
	}{
		{"", -32700},
		{"  ", -32700},
		{`{"jsonrpc":"2.0","id":1,`, -32700},
		{`[{"jsonrpc":"2.0","id":1,"method":"x"}`, -32700},
		{deep, -32700},
		{deep + strings.Repeat("]", MaxJSONDepth+1), -32600},
		{`5`, -32600},
		{`[]`, -32600},
		{`[5]`, -32600},
		{`"x"`, -32600},
	} {
		if _, err := checkJSONRPC([]byte(c.body)); err == nil || err.code != c.code {
			t.Errorf("%.40q: %v, want code %d", c.body, err, c.code)
		}
	}
}

// A session-less tools/call that asks for progress keeps its SSE answer, so
// the notifications/progress of a call held for approval reach the client
// (a JSON answer dropped them: the default Go SDK client never saw one).
func TestMCPStatelessToolCallWithProgressTokenStreams(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	s.addPeer(t, "peer", peer(t))
	rec := &callTypes{next: &hostRewriter{key: testKey}}
	c := sdk.NewClient(&sdk.Implementation{Name: "go-test-client", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.url + "/mcp", HTTPClient: &nethttp.Client{Transport: rec}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	params := &sdk.CallToolParams{Name: "mcp_peer_shout", Arguments: map[string]any{"message": "go"}}
	params.SetProgressToken("p1")
	if res, err := cs.CallTool(ctx, params); err != nil || res.IsError {
		t.Fatalf("call with a progress token: %+v %v", res, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.types) != 1 || !strings.HasPrefix(rec.types[0], "text/event-stream") {
		t.Fatalf("tools/call with a progress token answered as %q, want one SSE answer", rec.types)
	}
}

func TestCheckJSONRPCReadsProgressToken(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]bool{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"}}}`: true,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":7}}}`:    true,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":null}}}`: false,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"progressToken"}}`:                    false,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`:                                false,
	} {
		got, err := checkJSONRPC([]byte(body))
		if err != nil || got.progress != want {
			t.Errorf("%s: progress %t %v, want %t", body, got.progress, err, want)
		}
	}
}
