package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// notesPeer is an MCP server on loopback with one tool that writes (no
// annotations, as most servers ship) and one annotated readOnlyHint.
type notesPeer struct {
	url    string
	mu     sync.Mutex
	writes []string
}

func (p *notesPeer) written() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.writes...)
}

func newNotesPeer(t *testing.T) *notesPeer {
	t.Helper()
	p := &notesPeer{}
	srv := sdk.NewServer(&sdk.Implementation{Name: "notes", Version: "1"}, nil)
	type note struct {
		Text string `json:"text"`
	}
	sdk.AddTool(srv, &sdk.Tool{Name: "write_note", Description: "Stores a note"}, func(_ context.Context, _ *sdk.CallToolRequest, in note) (*sdk.CallToolResult, any, error) {
		p.mu.Lock()
		p.writes = append(p.writes, in.Text)
		p.mu.Unlock()
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "stored: " + in.Text}}}, nil, nil
	})
	sdk.AddTool(srv, &sdk.Tool{Name: "read_notes", Description: "Lists the notes", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "notes: " + strings.Join(p.written(), ";")}}}, nil, nil
		})
	hs := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil))
	t.Cleanup(func() { hs.CloseClientConnections(); hs.Close() })
	p.url = hs.URL
	return p
}

// fakesWithNotes is fakes with a notesPeer as the MCP server "notes".
func fakesWithNotes(t *testing.T) (*notesPeer, *llmtest.Fake, string) {
	peer := newNotesPeer(t)
	oai, _, cfg := fakes(t, fmt.Sprintf(`
[network_policy]
allow_hosts = ["127.0.0.1"]

[[mcp_servers]]
name = "notes"
transport = "http"
url = %q
`, peer.url))
	return peer, oai, cfg
}

// A fresh daemon with the default approval policy (no [approval] table):
// an MCP tool its server does not annotate readOnlyHint waits for a
// decision, called by an agent or through POST /mcp, and runs only when
// approved; a rejection is an isError result naming the approval; the
// read-only tool runs at once. On main the default gated nothing that can
// run, and POST /mcp bypassed approvals entirely.
func TestDefaultPolicyGatesUnannotatedToolsOnTheBinary(t *testing.T) {
	t.Parallel()
	peer, oai, cfg := fakesWithNotes(t)
	oai.SetResponder(func(r llmtest.Request) llmtest.Reply {
		last := r.LastMessage()
		switch {
		case last.Role == "tool":
			return llmtest.Reply{Text: "The tool answered: " + last.Content}
		case strings.HasPrefix(last.Content, "note "):
			arg, _ := json.Marshal(map[string]string{"text": last.Content[5:]})
			return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "mcp_notes_write_note", Arguments: string(arg)}}}
		case last.Content == "list":
			return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "mcp_notes_read_notes", Arguments: "{}"}}}
		}
		return llmtest.Reply{Text: "ok"}
	})
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v struct{ Connected bool }
		if r := td.do("GET", "/api/mcp/servers/notes", nil); r.status == 200 {
			r.json(t, &v)
			if v.Connected {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the MCP server never connected")
		}
		time.Sleep(50 * time.Millisecond)
	}

	type turnJSON struct {
		Response  string `json:"response"`
		ToolCalls []struct {
			Tool, Outcome string
			ApprovalID    string `json:"approval_id"`
		} `json:"tool_calls"`
	}
	send := func(text string) chan turnJSON {
		out := make(chan turnJSON, 1)
		go func() {
			var turn turnJSON
			r := td.do("POST", "/api/agents/ops/message", map[string]any{"message": text})
			json.Unmarshal(r.raw, &turn)
			out <- turn
		}()
		return out
	}
	td.must(201, "POST", "/api/agents", map[string]any{"name": "ops", "model": "fakeoai/gpt-test", "tools": []string{"mcp_notes_*"}}, nil)

	// An agent's call of the unannotated tool waits, and runs once approved.
	reply := send("note from the agent")
	rec := td.onePending()
	if rec.Action != "mcp_notes_write_note" || rec.AgentName != "ops" {
		t.Fatalf("%+v", rec)
	}
	if w := peer.written(); len(w) != 0 {
		t.Fatalf("the tool ran before approval: %v", w)
	}
	td.must(200, "POST", "/api/approvals/"+rec.ID+"/approve", map[string]any{}, nil)
	turn := <-reply
	if !strings.Contains(turn.Response, "stored: from the agent") || len(turn.ToolCalls) != 1 || turn.ToolCalls[0].ApprovalID != rec.ID {
		t.Fatalf("approved turn %+v", turn)
	}
	// The read-only tool runs at once: no request is made.
	turn = <-send("list")
	if !strings.Contains(turn.Response, "notes: from the agent") || turn.ToolCalls[0].Outcome != "ok" || turn.ToolCalls[0].ApprovalID != "" {
		t.Fatalf("read-only turn %+v", turn)
	}

	// POST /mcp, plain JSON-RPC: the call waits; a rejection answers an
	// isError result naming the approval and the decision.
	rpc := func(id int, tool string, args any) chan map[string]any {
		out := make(chan map[string]any, 1)
		go func() {
			var v map[string]any
			r := td.do("POST", "/mcp", map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call",
				"params": map[string]any{"name": tool, "arguments": args}})
			json.Unmarshal(r.raw, &v)
			out <- v
		}()
		return out
	}
	answer := rpc(1, "mcp_notes_write_note", map[string]string{"text": "rejected one"})
	rec = td.onePending()
	if rec.Action != "mcp_notes_write_note" || rec.AgentID != "mcp:loopback" {
		t.Fatalf("POST /mcp request %+v", rec)
	}
	var full map[string]any
	td.must(200, "GET", "/api/approvals/"+rec.ID, nil, &full)
	if full["requested_by"] != "mcp:loopback" {
		t.Fatalf("caller identity not recorded: %v", full)
	}
	td.must(200, "POST", "/api/approvals/"+rec.ID+"/reject", map[string]any{"reason": "not today"}, nil)
	v := <-answer
	res, _ := v["result"].(map[string]any)
	raw, _ := json.Marshal(res)
	if res == nil || res["isError"] != true || !strings.Contains(string(raw), rec.ID) || !strings.Contains(string(raw), "rejected") {
		t.Fatalf("rejected /mcp call: %v", v)
	}
	if w := peer.written(); len(w) != 1 {
		t.Fatalf("a rejected call ran: %v", w)
	}

	// POST /mcp with the Go SDK's client and a progress token: the wait
	// is reported as progress naming the approval; approved, the tool
	// runs and its result is the answer.
	ids := make(chan string, 16)
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			if f := strings.Fields(req.Params.Message); len(f) > 3 && f[0] == "waiting" {
				ids <- f[3]
			}
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: td.base + "/mcp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	done := make(chan *sdk.CallToolResult, 1)
	go func() {
		params := &sdk.CallToolParams{Name: "mcp_notes_write_note", Arguments: map[string]string{"text": "approved one"}}
		params.SetProgressToken("p1")
		r, err := cs.CallTool(ctx, params)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	var id string
	select {
	case id = <-ids:
	case <-ctx.Done():
		t.Fatal("no progress notification while the call waits")
	}
	if rec = td.onePending(); rec.ID != id {
		t.Fatalf("progress names %s, pending is %s", id, rec.ID)
	}
	td.must(200, "POST", "/api/approvals/"+id+"/approve", map[string]any{}, nil)
	r := <-done
	if r == nil || r.IsError || len(r.Content) != 1 || r.Content[0].(*sdk.TextContent).Text != "stored: approved one" {
		t.Fatalf("approved /mcp call: %+v", r)
	}
	// The read-only tool runs at once through /mcp too.
	r, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "mcp_notes_read_notes", Arguments: map[string]any{}})
	if err != nil || r.IsError || !strings.Contains(r.Content[0].(*sdk.TextContent).Text, "approved one") {
		t.Fatalf("read-only /mcp call: %+v %v", r, err)
	}
	var page struct{ Total int }
	td.must(200, "GET", "/api/approvals?status=pending", nil, &page)
	if page.Total != 0 {
		t.Fatalf("%d requests still pending", page.Total)
	}

	// The policy report says what waits and why, and no default pattern
	// is left matching nothing.
	var report struct {
		Tools []struct {
			Name, Server, Reason string
			Gated                bool
		} `json:"tools"`
		Unmatched []struct{ Key, Pattern string } `json:"unmatched_patterns"`
	}
	td.must(200, "GET", "/api/approvals/policy", nil, &report)
	gates := map[string]string{}
	for _, tl := range report.Tools {
		gates[tl.Name] = fmt.Sprintf("%t/%s", tl.Gated, tl.Reason)
	}
	if gates["mcp_notes_write_note"] != "true/not_read_only" || gates["mcp_notes_read_notes"] != "false/read_only" ||
		gates["agent_send"] != "true/not_read_only" || gates["comms_events"] != "false/read_only" || len(report.Unmatched) != 0 {
		t.Fatalf("policy report %+v", report)
	}
}

// The manifest rule: a glob is accepted (it may match later), an exact
// name only when fangd offers it now, or with a warning when it could be
// a tool of a configured MCP server that is not connected; anything else
// is a 400 unknown_tool naming it. On main every name was accepted and
// such an agent silently got no tools. The same daemon reports the
// approval patterns that match no tool, in the API and in its log.
func TestManifestToolsAndUnmatchedPatternsOnTheBinary(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: the server stays configured, never connected.
	down := "http://" + ssrftest.ClosedAddr(t)
	_, _, cfg := fakes(t, fmt.Sprintf(`
[network_policy]
allow_hosts = ["127.0.0.1"]

[approval]
require_approval = ["shell_exec", "mcp_down_*"]
totp_tools = ["file_write"]

[[mcp_servers]]
name = "down"
transport = "http"
url = %q
`, down))
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	create := func(name string, tools ...string) response {
		return td.do("POST", "/api/agents", map[string]any{"name": name, "model": "fakeoai/gpt-test", "tools": tools})
	}
	for _, bad := range []string{"shell_exec", "file_write", "mcp_other_tool"} {
		r := create("bad", "mcp_*", bad)
		if r.status != 400 || r.code() != "unknown_tool" || !strings.Contains(string(r.raw), `\"`+bad+`\"`) {
			t.Fatalf("tools [%s]: %d %s", bad, r.status, r.raw)
		}
	}
	var ag struct {
		Tools    []string `json:"tools"`
		Warnings []string `json:"warnings"`
	}
	r := create("ok", "mcp_*", "file_read", "agent_send")
	if r.status != 201 {
		t.Fatalf("globs and offered tools: %d %s", r.status, r.raw)
	}
	if r.json(t, &ag); len(ag.Warnings) != 0 {
		t.Fatalf("warnings %v", ag.Warnings)
	}
	r = create("waiting", "mcp_down_write")
	if r.json(t, &ag); r.status != 201 || len(ag.Warnings) != 1 || !strings.Contains(ag.Warnings[0], "down is not connected") {
		t.Fatalf("tool of a server not connected: %d %s", r.status, r.raw)
	}
	if r = td.do("PATCH", "/api/agents/ok", map[string]any{"tools": []string{"shell_exec"}}); r.status != 400 || r.code() != "unknown_tool" {
		t.Fatalf("patch: %d %s", r.status, r.raw)
	}
	var got struct{ Tools []string }
	if td.must(200, "GET", "/api/agents/ok", nil, &got); strings.Join(got.Tools, ",") != "mcp_*,file_read,agent_send" {
		t.Fatalf("a refused patch changed the agent: %v", got.Tools)
	}

	var report struct {
		Unmatched []struct{ Key, Pattern string } `json:"unmatched_patterns"`
	}
	td.must(200, "GET", "/api/approvals/policy", nil, &report)
	var unmatched []string
	for _, u := range report.Unmatched {
		unmatched = append(unmatched, u.Key+"="+u.Pattern)
	}
	if strings.Join(unmatched, " ") != "approval.require_approval=shell_exec approval.require_approval=mcp_down_* approval.totp_tools=file_write" {
		t.Fatalf("unmatched %v", unmatched)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !td.p.log.contains(`"pattern":"shell_exec"`) || !td.p.log.contains("matches no tool fangd offers") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning logged for the unmatched pattern\n%s", td.p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
