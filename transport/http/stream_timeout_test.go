package http

import (
	"bufio"
	"context"
	"io"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/fangd/fangd/actors/comms"
)

// The server's write timeout is one-shot per response; long-lived streams
// re-arm the deadline before each write (sse.Deadline). These tests run
// the server with a write timeout far shorter than the streams' idle time
// and check that a stream still delivers afterwards.
const shortWriteTimeout = 200 * time.Millisecond

// idlePastWriteTimeout leaves a stream idle past the server's write
// timeout (a wait, not a timing assertion).
func idlePastWriteTimeout() { time.Sleep(4 * shortWriteTimeout) }

// A standalone GET /mcp stream (what a client holds open for server
// notifications) still delivers a notification after the server's write
// timeout has passed; it used to be cut at its first write after it.
func TestMCPStandaloneStreamOutlivesTheWriteTimeout(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{cfg: func(c *Config) { c.WriteTimeout = shortWriteTimeout }})
	post := func(body, session string) *nethttp.Response {
		t.Helper()
		req, _ := nethttp.NewRequest("POST", s.url+"/mcp", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		}
		res, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	res := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, "")
	session := res.Header.Get("Mcp-Session-Id")
	if res.StatusCode != 200 || session == "" {
		t.Fatalf("initialize: %d, session %q", res.StatusCode, session)
	}
	if res := post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, session); res.StatusCode != 202 {
		t.Fatalf("initialized: %d", res.StatusCode)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := nethttp.NewRequestWithContext(ctx, "GET", s.url+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	stream, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 || !strings.HasPrefix(stream.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /mcp: %d %s", stream.StatusCode, stream.Header.Get("Content-Type"))
	}

	idlePastWriteTimeout()
	// A new tool makes the server notify every session on its stream.
	s.x.Server.AddTool(&sdk.Tool{Name: "late_tool", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
			return &sdk.CallToolResult{}, nil
		})

	got := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stream.Body)
		var read strings.Builder
		for {
			line, err := br.ReadString('\n')
			read.WriteString(line)
			if strings.Contains(line, "notifications/tools/list_changed") || err != nil {
				if err != nil {
					read.WriteString("<" + err.Error() + ">")
				}
				got <- read.String()
				return
			}
		}
	}()
	select {
	case r := <-got:
		if !strings.Contains(r, "notifications/tools/list_changed") {
			t.Fatalf("the stream ended before the notification: %q", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no notification on the GET /mcp stream")
	}
	// End the session (as a client's Close does), which ends its stream.
	del, _ := nethttp.NewRequest("DELETE", s.url+"/mcp", nil)
	del.Header.Set("Authorization", "Bearer "+testKey)
	del.Header.Set("Mcp-Session-Id", session)
	del.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if res, err := nethttp.DefaultClient.Do(del); err == nil {
		res.Body.Close()
	}
}

// The comms events stream delivers an event larger than its write buffer
// (written through at once, not at the flush) after idling past both the
// server's write timeout and its own per-write timeout.
func TestCommsStreamOutlivesTheWriteTimeout(t *testing.T) {
	t.Parallel()
	var bus *comms.Bus
	ts := newTestServer(t, func(c *Config) {
		c.WriteTimeout, c.StreamWriteTimeout, c.SSEHeartbeat = shortWriteTimeout, shortWriteTimeout, time.Hour
	}, func(s *Server) {
		var err error
		if bus, err = comms.Start(s.deps.Kernel, s.deps.Store, comms.BusOptions{}); err != nil {
			t.Fatal(err)
		}
		router, err := comms.StartRouter(s.deps.Kernel, s.deps.Store, comms.RouterOptions{Bus: bus, Audit: s.deps.Audit,
			Agents: &fakeAgents{}, Channels: &fakeChannels{}})
		if err != nil {
			t.Fatal(err)
		}
		s.deps.Bus, s.deps.Router = bus, router
	})
	br, stop := ts.openStream(t, "/api/comms/events/stream?type=hook.wake")
	defer stop()
	idlePastWriteTimeout()
	big := strings.Repeat("x", 64<<10)
	if _, err := bus.PublishSync(context.Background(), "hook.wake", "system", "", map[string]string{"pad": big}); err != nil {
		t.Fatal(err)
	}
	ev := readEvents(t, br, 1, func(e sseEvent) bool { return e.event == "hook.wake" })
	if !strings.Contains(ev[0].data, big) {
		t.Fatalf("event of %d bytes arrived cut", len(ev[0].data))
	}
}
