package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// A POST /mcp tools/call commits its two audit entries (the exposer's
// tool_invoked and the request's api_request) together, in one synced
// commit, before the answer goes out: a kill -9 right after a 200 loses
// neither, and they sit next to each other in that order. The same for a
// proxied tool called by the Go SDK client (protocol 2026-07-28), which
// POST /mcp's fast path answers (transport/http/mcpfast.go).
func TestMCPToolCallAuditSurvivesKill9(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakesWithNotes(t)
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	for i := range 3 {
		r := td.do("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_list","arguments":{"path":""}}}`)
		if r.status != 200 || !strings.Contains(string(r.raw), `"result"`) || strings.Contains(string(r.raw), `"isError":true`) {
			t.Fatalf("call %d: %d %s", i, r.status, r.raw)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, &sdk.StreamableClientTransport{Endpoint: td.base + "/mcp", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; {
		// The read-only tool runs at once under the default policy, once
		// the daemon has connected to the peer.
		r, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "mcp_notes_read_notes", Arguments: map[string]any{}})
		switch {
		case err == nil && !r.IsError:
			i++
		case ctx.Err() != nil:
			t.Fatalf("proxied call %d: %v %+v", i, err, r)
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	cs.Close()
	td.p.cmd.Process.Signal(syscall.SIGKILL)
	td.p.done <- <-td.p.done // the launcher's cleanup waits for it too
	td.start()

	var rec struct {
		Entries []struct {
			EventType string `json:"event_type"`
			Details   string `json:"details"`
		} `json:"entries"`
	}
	td.must(200, "GET", "/api/audit/recent?limit=500", nil, &rec)
	// Each successful call's tool_invoked entry, oldest first, and what
	// directly follows it (other requests, such as the SDK client's
	// server/discover, have their api_request entries alone).
	var order []string
	for i := len(rec.Entries) - 1; i >= 0; i-- {
		e := rec.Entries[i]
		if e.EventType != "tool_invoked" || !(strings.Contains(e.Details, "tool=file_list") || strings.Contains(e.Details, "tool=read_notes outcome=ok")) {
			continue
		}
		next := "nothing"
		if i > 0 {
			next = rec.Entries[i-1].EventType + " " + rec.Entries[i-1].Details
		}
		order = append(order, "tool then "+next)
	}
	want := []string{}
	for range 6 {
		want = append(want, "tool then api_request POST /mcp -> 200")
	}
	if strings.Join(order, "; ") != strings.Join(want, "; ") {
		t.Fatalf("after kill -9 the call entries read %q", order)
	}
}
