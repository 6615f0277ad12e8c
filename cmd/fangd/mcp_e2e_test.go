package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// The real binary with an MCP server in config.toml (the seed's flat
// form): it connects, lists and proxies the reference server's tools, the
// official TypeScript client drives POST /mcp, and a killed server comes
// back on its own.
func TestMCPOnTheBinary(t *testing.T) {
	t.Parallel()
	peers := mcptest.NPM(t)
	home := t.TempDir()
	config := `[rate_limit]
api_requests_per_minute = 0

# This test is about the MCP plumbing: the echo tool runs without a human.
[approval]
auto_approve = ["mcp_everything_*"]
` + peers.EverythingConfig()
	p := startFangd(t, home, config, "FANGD_API_KEY="+e2eKey)

	var view struct {
		Connected bool   `json:"connected"`
		Status    string `json:"status"`
		Pid       int    `json:"pid"`
		Source    string `json:"source"`
		Tools     []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	waitView := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			code, body := p.request(t, "GET", "/api/mcp/servers/everything", "")
			if code == 200 && json.Unmarshal(body, &view) == nil && ok() {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("everything never %s: %+v\n%s", what, view, p.stderr)
	}
	waitView("connected", func() bool { return view.Connected && view.Pid > 0 })
	if view.Source != "config" || len(view.Tools) < 5 {
		t.Fatalf("view: %+v", view)
	}

	code, body := p.request(t, "GET", "/api/security", "")
	if code != 200 || !strings.Contains(string(body), `"subprocess_sandbox":"active"`) {
		t.Fatalf("security: %s", body)
	}
	if code, _ := p.request(t, "DELETE", "/api/mcp/servers/everything", ""); code != 409 {
		t.Fatalf("deleting a config-defined server through the API: %d", code)
	}

	// The TypeScript SDK client: a built-in tool and a proxied one.
	ws := filepath.Join(home, "workspace")
	if err := os.WriteFile(filepath.Join(ws, "readme.txt"), []byte("from the workspace"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := peers.Script(t, "mcp-client.mjs")
	out, err := exec.Command(peers.Node, script, p.url+"/mcp", e2eKey, "file_read", `{"path":"readme.txt"}`,
		"mcp_everything_echo", `{"message":"through fangd"}`).Output()
	if err != nil {
		t.Fatalf("node client: %v %s", err, out)
	}
	if !strings.Contains(string(out), `"text":"from the workspace"`) || !strings.Contains(string(out), `"text":"Echo: through fangd"`) {
		t.Fatalf("node client saw %s", out)
	}

	// Kill the server process; fangd notices, reconnects, and calls work.
	old := view.Pid
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitView("reconnected", func() bool { return view.Connected && view.Pid > 0 && view.Pid != old })
	code, body = p.request(t, "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"mcp_everything_echo","arguments":{"message":"again"}}}`)
	if code != 200 || !strings.Contains(string(body), "Echo: again") {
		t.Fatalf("call after reconnect: %d %s", code, body)
	}
	code, body = p.request(t, "GET", "/api/mcp/health", "")
	if code != 200 || !strings.Contains(string(body), `"status":"healthy"`) || strings.Contains(string(body), `"reconnect_attempts":0`) {
		t.Fatalf("health: %s", body)
	}

	// A graceful stop takes the server's process group with it.
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-view.Pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the MCP server outlived the daemon")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With the real agent runtime: X-Fangd-Agent-Id narrows /mcp to the
// agent's manifest tools, and agent_send runs a turn.
func TestMCPAgentToolsOnTheBinary(t *testing.T) {
	t.Parallel()
	// agent_send runs without a human here (its approval flow is
	// approvals_default_test.go's).
	_, _, cfg := fakes(t, "[approval]\nauto_approve = [\"agent_send\"]\n")
	p := startFangd(t, t.TempDir(), cfg, append(keyEnv, "FANGD_API_KEY="+e2eKey)...)
	code, body := p.request(t, "POST", "/api/agents", `{"name":"reader","model":"fakeoai/gpt-test","tools":["file_list","agent_send"]}`)
	if code != 201 {
		t.Fatalf("create agent: %d %s", code, body)
	}
	call := func(agentID, rpc string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("POST", p.url+"/mcp", strings.NewReader(rpc))
		req.Header.Set("Authorization", "Bearer "+e2eKey)
		req.Header.Set("Content-Type", "application/json")
		if agentID != "" {
			req.Header.Set("X-Fangd-Agent-Id", agentID)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := call("reader", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	var names []string
	for _, tl := range out["result"].(map[string]any)["tools"].([]any) {
		names = append(names, tl.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "agent_send,file_list" {
		t.Fatalf("tools for reader: %v", names)
	}
	out = call("reader", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"audit_recent","arguments":{}}}`)
	if out["error"] == nil {
		t.Fatalf("reader called a tool outside its manifest: %v", out)
	}
	out = call("nobody", `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
	if e, _ := out["error"].(map[string]any); e == nil || e["code"] != float64(-32001) {
		t.Fatalf("unknown agent: %v", out)
	}
	out = call("", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"agent_send","arguments":{"agent_id":"reader","message":"hello"}}}`)
	res, _ := out["result"].(map[string]any)
	if res == nil || res["isError"] == true {
		t.Fatalf("agent_send: %v", out)
	}
}

// HTTP MCP servers go through the shared SSRF guard: loopback is refused
// until [network_policy] allow_hosts lets it in; then the server connects,
// and its connection shows on the comms bus.
func TestMCPHTTPServerThroughNetworkPolicy(t *testing.T) {
	t.Parallel()
	peerURL := goPeer(t)
	p := startFangd(t, t.TempDir(), "[rate_limit]\napi_requests_per_minute = 0\n", "FANGD_API_KEY="+e2eKey)
	code, body := p.request(t, "POST", "/api/mcp/servers", `{"name":"local","transport":{"type":"http","url":"`+peerURL+`"}}`)
	if code != 400 || !strings.Contains(string(body), "url_not_allowed") {
		t.Fatalf("loopback MCP server without an allowlist: %d %s", code, body)
	}
	p.stop(t, syscall.SIGTERM)

	p = startFangd(t, t.TempDir(), "[rate_limit]\napi_requests_per_minute = 0\n[network_policy]\nallow_hosts = [\"127.0.0.1\"]\n", "FANGD_API_KEY="+e2eKey)
	code, body = p.request(t, "POST", "/api/mcp/servers", `{"name":"local","transport":{"type":"http","url":"`+peerURL+`"}}`)
	var added struct {
		Status, Name, Reload string
		ConnectionStatus     string `json:"connection_status"`
	}
	if err := json.Unmarshal(body, &added); code != 201 || err != nil || added.Status != "added" || added.Name != "local" ||
		added.Reload != "applied" || added.ConnectionStatus != "connecting" {
		t.Fatalf("allowlisted loopback MCP server (LibreFang's status/reload, fangd's connection_status): %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body = p.request(t, "GET", "/api/comms/events?type=mcp.*", "")
		if code == 200 && strings.Contains(string(body), `"type":"mcp.server.up"`) && strings.Contains(string(body), `"source":"mcp:local"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mcp.server.up event: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body = p.request(t, "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"comms_events","arguments":{"limit":50}}}`)
	if code != 200 || !strings.Contains(string(body), "mcp.server.up") {
		t.Fatalf("comms_events: %d %s", code, body)
	}
}

// goPeer is a Go SDK MCP server on loopback.
func goPeer(t *testing.T) string {
	t.Helper()
	srv := sdk.NewServer(&sdk.Implementation{Name: "peer", Version: "1"}, nil)
	sdk.AddTool(srv, &sdk.Tool{Name: "ping", Description: "answers pong"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "pong"}}}, nil, nil
	})
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil))
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close() })
	return hs.URL
}
