package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/actors/mcp/mcptest"
)

// The seed's promise on the real binary with a real MCP server (the
// reference "everything" server over stdio): the fake model asks for the
// gated MCP tool mcp_everything_echo; the call waits; approving through
// the API runs it and the agent's reply carries the server's answer; a
// rejection reaches the model as a refusal; a restart in the middle keeps
// the request pending and the resumed turn still runs the tool when it is
// approved.
func TestGatedMCPToolOnTheBinary(t *testing.T) {
	t.Parallel()
	oai, _, cfg := fakes(t, `
[approval]
require_approval = ["mcp_everything_echo"]
`+mcptest.NPM(t).EverythingConfig())
	oai.SetResponder(func(r llmtest.Request) llmtest.Reply {
		last := r.LastMessage()
		if last.Role == "tool" {
			return llmtest.Reply{Text: "The tool answered: " + last.Content}
		}
		for _, tool := range r.Tools {
			if tool.Name == "mcp_everything_echo" && strings.HasPrefix(last.Content, "echo ") {
				arg, _ := json.Marshal(map[string]string{"message": last.Content[5:]})
				return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{Name: "mcp_everything_echo", Arguments: string(arg)}}}
			}
		}
		return llmtest.Reply{Text: "echo: " + last.Content}
	})
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	waitConnected := func() {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			var v struct{ Connected bool }
			if r := td.do("GET", "/api/mcp/servers/everything", nil); r.status == 200 {
				r.json(t, &v)
				if v.Connected {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("the MCP server never connected")
	}
	waitConnected()
	td.must(201, "POST", "/api/agents", map[string]any{"name": "ops", "model": "fakeoai/gpt-test", "tools": []string{"mcp_everything_*"}}, nil)

	send := func(text string) chan response {
		out := make(chan response, 1)
		go func() { out <- td.do("POST", "/api/agents/ops/message", map[string]any{"message": text}) }()
		return out
	}
	var turn struct {
		Response  string `json:"response"`
		ToolCalls []struct {
			Tool, Outcome string
			ApprovalID    string `json:"approval_id"`
		} `json:"tool_calls"`
	}

	// Approved: the server's answer reaches the agent's reply.
	reply := send("echo hello approvals")
	rec := td.onePending()
	if rec.Action != "mcp_everything_echo" || rec.AgentName != "ops" {
		t.Fatalf("%+v", rec)
	}
	td.must(200, "POST", "/api/approvals/"+rec.ID+"/approve", map[string]any{}, nil)
	r := <-reply
	r.json(t, &turn)
	if r.status != 200 || !strings.Contains(turn.Response, "hello approvals") || len(turn.ToolCalls) != 1 || turn.ToolCalls[0].Outcome != "ok" {
		t.Fatalf("%d %s", r.status, r.raw)
	}

	// Rejected: the model is told, the server is not called.
	reply = send("echo do not run this")
	rec = td.onePending()
	td.must(200, "POST", "/api/approvals/"+rec.ID+"/reject", map[string]any{"reason": "no"}, nil)
	(<-reply).json(t, &turn)
	if !strings.Contains(turn.Response, "rejected") || turn.ToolCalls[0].Outcome != "rejected" || strings.Contains(turn.Response, "Echo: do not run this") {
		t.Fatalf("%+v", turn)
	}

	// Restart in the middle: still pending after it, then decided, and the
	// resumed turn runs the tool; the model sees the server's answer.
	cut := make(chan error, 1)
	go func() {
		// Not td.do: the daemon goes away under this request.
		res, err := httpClient.Post(td.base+"/api/agents/ops/message", "application/json", strings.NewReader(`{"message":"echo after the restart"}`))
		if err == nil {
			res.Body.Close()
		}
		cut <- err
	}()
	before := td.onePending()
	td.p.cmd.Process.Signal(syscall.SIGTERM)
	<-cut // answered 503 or cut off as the daemon stops
	td.p.done <- <-td.p.done
	td.start()
	after := td.onePending()
	if after.ID != before.ID || !after.ExpiresAt.Equal(before.ExpiresAt) {
		t.Fatalf("before %+v after %+v", before, after)
	}
	waitConnected()
	td.must(200, "POST", "/api/approvals/"+after.ID+"/approve", map[string]any{}, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		reqs := oai.Requests()
		last := reqs[len(reqs)-1].LastMessage()
		if last.Role == "tool" && strings.Contains(last.Content, "after the restart") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed turn never gave the model the tool's answer: %+v", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var entries struct {
		Entries []struct {
			EventType string `json:"event_type"`
			Details   string `json:"details"`
		} `json:"entries"`
	}
	td.must(200, "GET", "/api/audit/recent?limit=200", nil, &entries)
	var order []string
	for i := len(entries.Entries) - 1; i >= 0; i-- {
		e := entries.Entries[i]
		if e.EventType == "approval_approved" || (e.EventType == "tool_invoked" && strings.Contains(e.Details, "tool=echo")) {
			order = append(order, e.EventType)
		}
	}
	if strings.Join(order, ",") != "approval_approved,tool_invoked,approval_approved,tool_invoked" {
		t.Fatalf("audit order %v", order)
	}
}
