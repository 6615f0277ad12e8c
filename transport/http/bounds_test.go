package http

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/webhook"
)

// mcpInitialize opens a stateful /mcp session and returns its status,
// session id and body.
func mcpInitialize(t *testing.T, url string) (int, string, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, _ := nethttp.NewRequest("POST", url+"/mcp", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Mcp-Session-Id"), string(raw)
}

// Each /mcp session held about 89 KiB for 600 s, without a cap: 5,000
// sessions were +435 MiB. Beyond max_sessions an initialize is 429.
func TestMCPSessionCap(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{cfg: func(c *Config) { c.MCP.MaxSessions = 2 }})
	for i := 0; i < 2; i++ {
		if status, id, body := mcpInitialize(t, s.url); status != 200 || id == "" {
			t.Fatalf("session %d: %d %q %s", i, status, id, body)
		}
	}
	status, id, body := mcpInitialize(t, s.url)
	if status != 429 || id != "" || !strings.Contains(body, "mcp_session_limit") {
		t.Fatalf("third session: %d %q %s", status, id, body)
	}
}

// The default idle timeout is shorter than LibreFang's 600 s.
func TestMCPDefaultSessionTimeout(t *testing.T) {
	t.Parallel()
	e := newMCPEndpoint(nil, MCPConfig{}, zerolog.Nop(), nil)
	if e.cfg.SessionTimeout != 2*time.Minute || e.cfg.MaxSessions != DefaultMCPSessions {
		t.Fatalf("%+v", e.cfg)
	}
}

// /api/budget/agents was one unbounded array (2+ MB with 20,000 agents):
// it is paged, the seed's bare array kept, the total and the next page in
// headers.
func TestBudgetAgentsPaged(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, func(p *approval.Policy) {})
	ts := newTestServer(t, nil, extra)
	for i := 0; i < 5; i++ {
		ts.newAgent(t, fmt.Sprintf("a%d", i))
	}
	r := ts.mustStatus(t, 200, "GET", "/api/budget/agents?limit=2&offset=1", "")
	var page []map[string]any
	if err := json.Unmarshal(r.body, &page); err != nil || len(page) != 2 {
		t.Fatalf("page %s: %v", r.body, err)
	}
	if r.header.Get("X-Total-Count") != "5" || !strings.Contains(r.header.Get("Link"), "offset=3&limit=2") {
		t.Fatalf("headers %v", r.header)
	}
	r = ts.mustStatus(t, 200, "GET", "/api/budget/agents?offset=4&limit=2", "")
	if err := json.Unmarshal(r.body, &page); err != nil || len(page) != 1 || r.header.Get("Link") != "" {
		t.Fatalf("last page %s %v", r.body, r.header)
	}
	ts.mustStatus(t, 400, "GET", "/api/budget/agents?limit=0", "")
	ts.mustStatus(t, 400, "GET", "/api/budget/agents?offset=-1", "")
}

// Log stream subscribers are bounded ([log] max_streams): each holds a
// buffer of 1024 lines, and nothing capped them.
func TestLogStreamCap(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, func(c *Config) { c.MaxLogStreams = 1 })
	_, stop := ts.openStream(t, "/api/logs/stream")
	r := ts.authed(t, "GET", "/api/logs/stream", "")
	if r.status != 429 || r.envelope(t).Code != "log_stream_limit" || r.header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %s", r.status, r.body)
	}
	stop()
	// The slot is free once the server notices the client left (its next
	// write fails): log until a new stream gets in.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ts.log.Warn().Msg("nudge")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := nethttp.NewRequestWithContext(ctx, "GET", ts.url+"/api/logs/stream", nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		res, err := nethttp.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		cancel()
		if err == nil && res.StatusCode == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream after the first closed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The webhook cap is configurable ([webhooks] max_endpoints).
func TestWebhookEndpointCap(t *testing.T) {
	t.Parallel()
	cs := newCommsServerWith(t, func(o *webhook.Options) { o.MaxEndpoints = 2 })
	for i := 0; i < 2; i++ {
		body := fmt.Sprintf(`{"name":"w%d","url":"http://127.0.0.1:9/in","events":["agent.*"]}`, i)
		kerneltest.WaitFor(t, "condition", func() bool { return cs.authed(t, "POST", "/api/webhooks", body).status != 503 })
	}
	r := cs.authed(t, "POST", "/api/webhooks", `{"name":"w3","url":"http://127.0.0.1:9/in","events":["agent.*"]}`)
	if r.status != 409 || r.envelope(t).Code != "too_many_webhooks" {
		t.Fatalf("third webhook: %d %s", r.status, r.body)
	}
}

// Nothing bounded the configured channels (each an actor, goroutines and
// a poller): beyond [channel_limits] max_channels a new one is 409
// too_many_channels, and nothing is stored; reconfiguring one is fine.
func TestChannelCap(t *testing.T) {
	t.Parallel()
	ts, fake := channelServerWith(t, func(o *channel.Options) { o.MaxChannels = 1 })
	body := `{"token":"` + tgToken + `","api_url":"` + fake.URL() + `","poll_interval_secs":1}`
	ts.mustStatus(t, 200, "POST", "/api/channels/telegram/configure", body)
	ts.mustStatus(t, 200, "POST", "/api/channels/telegram/configure", body)
	r := ts.authed(t, "POST", "/api/channels/tg-2/configure", `{"adapter":"telegram","token":"456:otherTOKEN","api_url":"`+fake.URL()+`"}`)
	if r.status != 409 || r.envelope(t).Code != "too_many_channels" {
		t.Fatalf("second channel: %d %s", r.status, r.body)
	}
	if r := ts.mustStatus(t, 200, "GET", "/api/channels?configured=true", ""); !strings.Contains(string(r.body), `"total":1`) {
		t.Fatalf("configured list: %s", r.body)
	}
}
