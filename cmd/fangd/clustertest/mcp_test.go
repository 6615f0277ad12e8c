//go:build cluster

package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// fakeMCPEnv, in a process's environment, makes this test binary a stdio
// MCP server (TestMain) that appends its pid to the file it names on
// start: the test counts the servers the cluster started.
const fakeMCPEnv = "FANGD_FAKE_MCP_STARTS"

// runFakeMCP serves tools whoami (the process's pid) and echo on stdio
// until stdin closes (its fangd died or stopped it).
func runFakeMCP(startsFile string) {
	f, err := os.OpenFile(startsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		os.Exit(3)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	f.Close()
	srv := sdk.NewServer(&sdk.Implementation{Name: "fake", Version: "1"}, nil)
	type none struct{}
	// Read-only, so that calls run without an approval (trust_read_only_hints).
	ro := &sdk.ToolAnnotations{ReadOnlyHint: true}
	sdk.AddTool(srv, &sdk.Tool{Name: "whoami", Description: "The server process's pid", Annotations: ro},
		func(context.Context, *sdk.CallToolRequest, none) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: strconv.Itoa(os.Getpid())}}}, nil, nil
		})
	type echoArgs struct {
		Msg string `json:"msg"`
	}
	sdk.AddTool(srv, &sdk.Tool{Name: "echo", Description: "Echoes msg", Annotations: ro},
		func(_ context.Context, _ *sdk.CallToolRequest, in echoArgs) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: in.Msg}}}, nil, nil
		})
	_ = srv.Run(context.Background(), &sdk.StdioTransport{})
	os.Exit(0)
}

// starts is the pids of the fake servers started so far.
func starts(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// mcpServerOn is server name as node n lists it.
type mcpListed struct {
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Node        string   `json:"node"`
	Cluster     bool     `json:"cluster"`
	Source      string   `json:"source"`
	ListedBy    []string `json:"listed_by"`
	SpecDiffers bool     `json:"spec_differs"`
	Tools       []struct {
		Name string `json:"name"`
	} `json:"tools"`
}

func mcpServerOn(t *testing.T, n *node, name string) (mcpListed, string) {
	var l struct {
		Servers []mcpListed `json:"servers"`
	}
	res, err := http.Get(n.url + "/api/mcp/servers")
	if err != nil {
		return mcpListed{}, ""
	}
	defer res.Body.Close()
	var raw json.RawMessage
	if json.NewDecoder(res.Body).Decode(&raw) != nil || json.Unmarshal(raw, &l) != nil {
		return mcpListed{}, ""
	}
	for _, s := range l.Servers {
		if s.Name == name {
			return s, string(raw)
		}
	}
	return mcpListed{}, string(raw)
}

// callTool calls a proxied tool through n's POST /mcp (a plain JSON-RPC
// exchange): the text of the result, or the JSON-RPC error's message.
func callTool(t *testing.T, n *node, tool, args string) (text string, rpcErr string) {
	code, body := postHeader(t, n.url+"/mcp",
		fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, tool, args),
		map[string]string{"Accept": "application/json"})
	var r struct {
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
			IsError bool `json:"isError"`
		} `json:"result"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s: POST /mcp: %d %s", n.name, code, body)
	}
	if r.Error != nil {
		return "", r.Error.Message
	}
	if len(r.Result.Content) == 0 || r.Result.IsError {
		return "", string(body)
	}
	return r.Result.Content[0].Text, ""
}

// Issue 18 for MCP connections: a stdio server added through n1 is run by
// exactly one node (one process cluster-wide); every node lists it with
// its host and tools and calls its tools (the others through the host);
// kill -9 of the host makes the survivors answer 503 host_unreachable
// until another node starts the server, within 10 s, and calls work again
// through every survivor.
//
// The same three nodes run a server of config.toml that n1 and n2 list
// and n3 does not (configServerOnce, configServerFailover), whose host is
// killed after the API server's, and the killed node started again.
func TestMCPServerOnceClusterWideFailoverAfterKill9(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	env := []string{"FANGD_VAULT_KEY=" + vaultKey}
	names := []string{"n1", "n2", "n3"}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	confStarts := filepath.Join(t.TempDir(), "conf-starts")
	confToml := fmt.Sprintf("[[mcp_servers]]\nname = \"conf\"\nenv = [%q]\ntransport = { type = \"stdio\", command = %q }\n",
		fakeMCPEnv+"="+confStarts, self)
	homes := map[string]string{"n1": homeWith(t, confToml), "n2": homeWith(t, confToml), "n3": t.TempDir()}
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, startNodeIn(t, etcd, name, homes[name], env))
	}
	for _, n := range nodes {
		waitMembers(t, n, strings.Join(names, ","), 20*time.Second)
	}
	configServerOnce(t, nodes, confStarts)
	byName := map[string]*node{"n1": nodes[0], "n2": nodes[1], "n3": nodes[2]}
	startsFile := filepath.Join(t.TempDir(), "starts")
	spec := fmt.Sprintf(`{"name":"fake","transport":{"type":"stdio","command":%q},"env":[%q]}`, self, fakeMCPEnv+"="+startsFile)
	if code, body := post(t, nodes[0].url+"/api/mcp/servers", spec); code != 201 {
		t.Fatalf("add through n1: %d %s", code, body)
	} else if strings.Contains(string(body), startsFile) {
		t.Fatalf("an env value in the answer: %s", body)
	}

	// Listed connected through every node, with the tools, on one host.
	var host string
	deadline := time.Now().Add(15 * time.Second)
	for {
		agreed := true
		host = ""
		for _, n := range nodes {
			s, raw := mcpServerOn(t, n, "fake")
			if strings.Contains(raw, startsFile) {
				t.Fatalf("%s lists the env value: %s", n.name, raw)
			}
			if s.Status != "connected" || s.Node == "" || len(s.Tools) != 2 || !s.Cluster || (host != "" && s.Node != host) {
				agreed = false
				break
			}
			host = s.Node
		}
		if agreed {
			break
		}
		if time.Now().After(deadline) {
			for _, n := range nodes {
				s, _ := mcpServerOn(t, n, "fake")
				t.Logf("%s: %+v", n.name, s)
			}
			t.Fatal("not listed connected on one agreed host through every node")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if byName[host] == nil {
		t.Fatalf("host %q is not a node", host)
	}
	pids := starts(t, startsFile)
	if len(pids) != 1 {
		t.Fatalf("%d server processes started for one server: %v", len(pids), pids)
	}
	for _, n := range nodes {
		if got, e := callTool(t, n, "mcp_fake_whoami", `{}`); got != pids[0] {
			t.Fatalf("%s: whoami = %q (error %q), want the one process %s", n.name, got, e, pids[0])
		}
		if got, e := callTool(t, n, "mcp_fake_echo", `{"msg":"hi from `+n.name+`"}`); got != "hi from "+n.name {
			t.Fatalf("%s: echo = %q (error %q)", n.name, got, e)
		}
	}
	mode, conns := mcpConnections(t, nodes[1])
	if mode != "cluster" || conns["fake"] != "api "+host || len(conns) != 2 {
		t.Fatalf("GET /api/cluster: mode %q, connections %v (host %s)", mode, conns, host)
	}
	confNode := strings.TrimPrefix(conns["conf"], "config ")
	time.Sleep(2500 * time.Millisecond) // a refresh of the node records (2 s)
	var ms clusterStatus
	getJSON(t, nodes[2].url+"/api/cluster", &ms)
	for _, m := range ms.Members {
		want := 0
		if m.NodeName == host {
			want++
		}
		if m.NodeName == confNode {
			want++
		}
		if m.Hosted["mcp_connection"] != want {
			t.Fatalf("%s hosts %d mcp connections, want %d (fake on %s, conf on %s)", m.NodeName, m.Hosted["mcp_connection"], want, host, confNode)
		}
	}
	t.Logf("server hosted on %s (pid %s)", host, pids[0])

	dead := byName[host]
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var alive []*node
	for _, n := range nodes {
		if n != dead {
			alive = append(alive, n)
		}
	}
	// Before the failover: the host is gone, nothing is changed.
	if code, body := post(t, alive[0].url+"/api/mcp/servers/fake/reconnect", ``); code != 503 || !strings.Contains(string(body), "host_unreachable") {
		if time.Since(killed) < 4*time.Second {
			t.Fatalf("reconnect through %s with the host dead: %d %s, want 503 host_unreachable", alive[0].name, code, body)
		}
	}
	callStart := time.Now()
	_, e := callTool(t, alive[1], "mcp_fake_whoami", `{}`)
	t.Logf("a call with the host dead answered in %v: %s", time.Since(callStart).Round(10*time.Millisecond), e)
	if e == "" || !strings.Contains(e, "not reachable") && !strings.Contains(e, "no cluster node") && !strings.Contains(e, "did not answer") {
		if time.Since(killed) < 4*time.Second {
			t.Fatalf("a call through %s with the host dead: error %q", alive[1].name, e)
		}
	}

	var newHost string
	for {
		s, _ := mcpServerOn(t, alive[0], "fake")
		if s.Status == "connected" && s.Node != "" && s.Node != host {
			newHost = s.Node
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("not taken over within 10 s: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("server moved to %s %v after kill -9", newHost, time.Since(killed).Round(100*time.Millisecond))
	pids = starts(t, startsFile)
	if len(pids) != 2 {
		t.Fatalf("%d server processes started in all, want 2 (the first, and one after failover): %v", len(pids), pids)
	}
	deadline = time.Now().Add(5 * time.Second)
	for _, n := range alive {
		for {
			got, e := callTool(t, n, "mcp_fake_whoami", `{}`)
			if got == pids[1] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: whoami after failover = %q (error %q), want %s", n.name, got, e, pids[1])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := starts(t, startsFile); len(got) != 2 {
		t.Fatalf("server processes started: %v, want 2", got)
	}

	// The killed node comes back with the same config.toml (the config
	// server stays where it runs now), then the config server's host is
	// killed.
	<-dead.done
	dead.done <- nil
	back := startNodeIn(t, etcd, dead.name, homes[dead.name], env)
	live := append(alive, back)
	for _, n := range live {
		waitMembers(t, n, strings.Join(names, ","), 30*time.Second)
	}
	n3 := byName["n3"]
	if back.name == "n3" {
		n3 = back
	}
	// One config server process so far, or two when the API server's
	// host ran it too (it moved then).
	wantStarts := 1
	if confNode == dead.name {
		wantStarts = 2
	}
	configServerFailover(t, n3, back, live, confStarts, wantStarts)
}

// mcpConnections is n's GET /api/cluster: the mode of mcp_connection and
// each connection's "source node".
func mcpConnections(t *testing.T, n *node) (string, map[string]string) {
	t.Helper()
	var st struct {
		Kinds []struct {
			Kind, Mode string
		} `json:"kinds"`
		MCP []struct {
			Name, Node, Source string
		} `json:"mcp_connections"`
	}
	getJSON(t, n.url+"/api/cluster", &st)
	mode := ""
	for _, k := range st.Kinds {
		if k.Kind == "mcp_connection" {
			mode = k.Mode
		}
	}
	conns := map[string]string{}
	for _, c := range st.MCP {
		conns[c.Name] = c.Source + " " + c.Node
	}
	return mode, conns
}

// confHost waits until every node lists the config server "conf"
// connected on one agreed listing node (n1 or n2) with its tools, listed
// by n1 and n2 with the same spec, and names that node.
func confHost(t *testing.T, nodes []*node) string {
	t.Helper()
	var host string
	agreed := poll(20*time.Second, 200*time.Millisecond, func() bool {
		host = ""
		for _, n := range nodes {
			s, _ := mcpServerOn(t, n, "conf")
			if s.Status != "connected" || s.Source != "config" || !s.Cluster || len(s.Tools) != 2 || s.SpecDiffers ||
				strings.Join(s.ListedBy, ",") != "n1,n2" || (s.Node != "n1" && s.Node != "n2") || (host != "" && s.Node != host) {
				return false
			}
			host = s.Node
		}
		return true
	})
	if !agreed {
		for _, n := range nodes {
			s, raw := mcpServerOn(t, n, "conf")
			t.Logf("%s: %+v %s", n.name, s, raw)
		}
		t.Fatal("the config server is not listed connected on one agreed listing node through every node")
	}
	return host
}

// configServerOnce: the server "conf" of n1's and n2's config.toml (n3's
// lists none) runs as one process, on n1 or n2; every node lists it with
// that host, and n3 calls it through the host and names the host in GET
// /api/cluster.
func configServerOnce(t *testing.T, nodes []*node, startsFile string) {
	t.Helper()
	n3 := nodes[2]
	host := confHost(t, nodes)
	pids := starts(t, startsFile)
	if len(pids) != 1 {
		t.Fatalf("%d processes started for the config server n1 and n2 list: %v", len(pids), pids)
	}
	if got, e := callTool(t, n3, "mcp_conf_whoami", `{}`); got != pids[0] {
		t.Fatalf("n3 (not listing it): whoami = %q (error %q), want the one process %s", got, e, pids[0])
	}
	if _, conns := mcpConnections(t, n3); conns["conf"] != "config "+host {
		t.Fatalf("n3's GET /api/cluster: %v, want conf on %s", conns, host)
	}
}

// configServerFailover: with n1, n2 and n3 up (back, started again with
// its file, among them) the config server runs once (no second process
// for the node that came back); kill -9 of its host makes the other
// listing node start it within 10 s, exactly one start after the kill;
// n3 then names the new host and its calls reach the new process.
func configServerFailover(t *testing.T, n3, back *node, live []*node, startsFile string, wantStarts int) {
	t.Helper()
	host := confHost(t, live)
	before := starts(t, startsFile)
	if len(before) != wantStarts {
		t.Fatalf("config server processes before its host's kill: %v, want %d", before, wantStarts)
	}
	var dead, other *node
	for _, n := range live {
		switch n.name {
		case host:
			dead = n
		case "n1", "n2":
			other = n
		}
	}
	t.Logf("config server on %s (%s came back), %d processes so far", host, back.name, len(before))
	killed := dead.kill(t)
	var s mcpListed
	if !poll(10*time.Second, 100*time.Millisecond, func() bool {
		s, _ = mcpServerOn(t, n3, "conf")
		return s.Status == "connected" && s.Node == other.name
	}) {
		t.Fatalf("n3 does not list the config server connected on %s within 10 s of the kill: %+v", other.name, s)
	}
	t.Logf("config server moved from %s to %s %v after kill -9", dead.name, other.name, time.Since(killed).Round(100*time.Millisecond))
	pids := starts(t, startsFile)
	if len(pids) != len(before)+1 {
		t.Fatalf("config server processes: %v after the kill, %v before; want exactly one more", pids, before)
	}
	if !poll(5*time.Second, 100*time.Millisecond, func() bool {
		got, _ := callTool(t, n3, "mcp_conf_whoami", `{}`)
		return got == pids[len(pids)-1]
	}) {
		t.Fatalf("n3's call after the failover does not reach %s's process %s", other.name, pids[len(pids)-1])
	}
}
