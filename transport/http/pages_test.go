package http

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2asrv"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
)

// pageEnvelope is the paging fields added beside a seed object's list.
type pageEnvelope struct {
	Total  int  `json:"total"`
	Offset int  `json:"offset"`
	Limit  int  `json:"limit"`
	Next   *int `json:"next_offset"`
}

// checkEnvelope asserts an object list's paging fields and its page length.
func checkEnvelope(t *testing.T, body []byte, key string, n, total, offset, limit int, next *int) {
	t.Helper()
	var env pageEnvelope
	var items map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &items); err != nil {
		t.Fatal(err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(items[key], &list); err != nil || list == nil {
		t.Fatalf("%q in %s: %v", key, body, err)
	}
	if len(list) != n || env.Total != total || env.Offset != offset || env.Limit != limit ||
		(next == nil) != (env.Next == nil) || (next != nil && *next != *env.Next) {
		t.Fatalf("page %s: want %d items total %d offset %d limit %d next %v", body, n, total, offset, limit, next)
	}
	if _, ok := items["next_offset"]; !ok {
		t.Fatalf("no next_offset in %s", body)
	}
}

func intp(n int) *int { return &n }

// /api/webhooks and /api/webhooks/events answered every webhook at once;
// they page with ?offset=&limit=.
func TestWebhookListsPaged(t *testing.T) {
	t.Parallel()
	cs := newCommsServer(t)
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"name":"w%d","url":"http://127.0.0.1:9/in","events":["agent.*"]}`, i)
		kerneltest.WaitFor(t, "webhook engine", func() bool { return cs.authed(t, "POST", "/api/webhooks", body).status != 503 })
		ev := fmt.Sprintf(`{"url":"http://127.0.0.1:9/e%d","event_type":"agent.spawned"}`, i)
		if r := cs.authed(t, "POST", "/api/webhooks/events", ev); r.status/100 != 2 {
			t.Fatalf("event webhook: %d %s", r.status, r.body)
		}
	}
	r := cs.mustStatus(t, 200, "GET", "/api/webhooks?limit=1", "")
	checkEnvelope(t, r.body, "webhooks", 1, 3, 0, 1, intp(1))
	r = cs.mustStatus(t, 200, "GET", "/api/webhooks?offset=2&limit=1", "")
	checkEnvelope(t, r.body, "webhooks", 1, 3, 2, 1, nil)
	r = cs.mustStatus(t, 200, "GET", "/api/webhooks?offset=9", "")
	checkEnvelope(t, r.body, "webhooks", 0, 3, 9, 1000, nil)
	cs.mustStatus(t, 400, "GET", "/api/webhooks?limit=0", "")

	r = cs.mustStatus(t, 200, "GET", "/api/webhooks/events?limit=2", "")
	var arr []map[string]any
	if err := json.Unmarshal(r.body, &arr); err != nil || len(arr) != 2 {
		t.Fatalf("events page %s: %v", r.body, err)
	}
	if r.header.Get("X-Total-Count") != "3" || !strings.Contains(r.header.Get("Link"), "offset=2&limit=2") {
		t.Fatalf("headers %v", r.header)
	}
	cs.mustStatus(t, 400, "GET", "/api/webhooks/events?offset=x", "")
}

// GET /api/mcp/servers answered every server at once; it pages.
func TestMCPServersPaged(t *testing.T) {
	t.Parallel()
	s := newMCPServer(t, mcpSetup{})
	for i := 0; i < 3; i++ {
		// Nothing listens on port 9 of loopback: the server is configured,
		// not connected, which is all the list needs.
		code, body := s.api(t, "POST", "/api/mcp/servers", fmt.Sprintf(`{"name":"p%d","transport":{"type":"http","url":"http://127.0.0.1:9/mcp"}}`, i))
		if code != 201 {
			t.Fatalf("add: %d %v", code, body)
		}
	}
	code, body := s.api(t, "GET", "/api/mcp/servers?offset=1&limit=1", "")
	raw, _ := json.Marshal(body)
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	checkEnvelope(t, raw, "servers", 1, 3, 1, 1, intp(2))
	code, body = s.api(t, "GET", "/api/mcp/servers?limit=-1", "")
	if code != 400 {
		t.Fatalf("limit=-1: %d %v", code, body)
	}
}

// The A2A lists (local agent cards and discovered external agents) said
// "limit": null and answered everything; they page.
func TestA2AListsPaged(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	r := ts.do(t, "GET", "/a2a/agents?limit=1", "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	checkEnvelope(t, r.body, "items", 1, 2, 0, 1, intp(1))
	r = ts.do(t, "GET", "/a2a/agents?offset=1&limit=5", "")
	checkEnvelope(t, r.body, "items", 1, 2, 1, 5, nil)

	for i := 0; i < 3; i++ {
		mux := nethttp.NewServeMux()
		peer := httptest.NewServer(mux)
		t.Cleanup(peer.Close)
		card := &sdk.AgentCard{Name: fmt.Sprintf("Remote%d", i), Description: "peer", Version: "1",
			SupportedInterfaces: []*sdk.AgentInterface{sdk.NewAgentInterface(peer.URL+"/rpc", sdk.TransportProtocolJSONRPC)},
			Skills:              []sdk.AgentSkill{{ID: "s", Name: "S", Description: "d", Tags: []string{}}}}
		mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))
		if r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"`+peer.URL+`"}`); r.status != 201 {
			t.Fatalf("discover: %d %s", r.status, r.body)
		}
	}
	r = ts.authed(t, "GET", "/api/a2a/agents?limit=2", "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	checkEnvelope(t, r.body, "items", 2, 3, 0, 2, intp(2))
	r = ts.authed(t, "GET", "/api/a2a/agents?offset=2&limit=2", "")
	checkEnvelope(t, r.body, "items", 1, 3, 2, 2, nil)
	if r := ts.authed(t, "GET", "/api/a2a/agents?limit=abc", ""); r.status != 400 {
		t.Fatalf("limit=abc: %d %s", r.status, r.body)
	}
}

// GET /api/usage/by-model answered every model at once; it pages.
func TestUsageByModelPaged(t *testing.T) {
	t.Parallel()
	db, err := store.Open(store.DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	var evs []usage.Event
	for i := 0; i < 3; i++ {
		// Within today, however soon after midnight the test runs: a minute
		// back from 00:02 is yesterday, which period=day leaves out.
		at := now.Add(-time.Duration(i+1) * time.Minute)
		if at.YearDay() != now.YearDay() {
			at = now.Truncate(24 * time.Hour)
		}
		evs = append(evs, usage.Event{Time: at, AgentID: "a", AgentName: "a",
			Provider: "groq", Model: fmt.Sprintf("model-%d", i), InputTokens: 10, OutputTokens: 2, CostNanos: 1000, Outcome: "ok"})
	}
	if err := usage.Seed(db, evs); err != nil {
		t.Fatal(err)
	}
	k := kernel.New(zerolog.Nop())
	t.Cleanup(func() { k.Shutdown(context.Background()) })
	meter, err := usage.Start(k, db, nil, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.APIKey = testKey
	srv, err := New(cfg, Deps{LogLevel: new(testLevel), Kernel: k, Store: db, Meter: meter})
	if err != nil {
		t.Fatal(err)
	}
	get := func(uri string) (int, []byte) {
		var req fasthttp.Request
		req.SetRequestURI(uri)
		req.Header.Set("Authorization", "Bearer "+testKey)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
		srv.Handler()(&ctx)
		return ctx.Response.StatusCode(), append([]byte(nil), ctx.Response.Body()...)
	}
	code, body := get("/api/usage/by-model?limit=1")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	checkEnvelope(t, body, "models", 1, 3, 0, 1, intp(1))
	if !strings.Contains(string(body), `"period":`) {
		t.Fatalf("seed field period lost: %s", body)
	}
	code, body = get("/api/usage/by-model?period=day&offset=1&limit=2")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	checkEnvelope(t, body, "models", 2, 3, 1, 2, nil)
	if code, body = get("/api/usage/by-model?limit=0"); code != 400 {
		t.Fatalf("limit=0: %d %s", code, body)
	}
}

// GET /api/channels answered the whole catalog and every instance at
// once; it pages, still streamed, total and configured_count over the
// whole list.
func TestChannelListPaged(t *testing.T) {
	t.Parallel()
	ts, _ := channelServer(t)
	r := ts.mustStatus(t, 200, "GET", "/api/channels?limit=1", "")
	checkEnvelope(t, r.body, "channels", 1, 44, 0, 1, intp(1))
	if !strings.Contains(string(r.body), `"name":"telegram"`) || !strings.Contains(string(r.body), `"configured_count":0`) {
		t.Fatalf("first page %s", r.body)
	}
	r = ts.mustStatus(t, 200, "GET", "/api/channels?offset=40&limit=10", "")
	checkEnvelope(t, r.body, "channels", 4, 44, 40, 10, nil)
	r = ts.mustStatus(t, 200, "GET", "/api/channels?configured=true&offset=5", "")
	checkEnvelope(t, r.body, "channels", 0, 0, 5, 1000, nil)
	ts.mustStatus(t, 400, "GET", "/api/channels?limit=x", "")
}

// a2aStream opens a JSON-RPC stream on alpha with text; the response is
// the caller's to read and close.
func a2aStream(t *testing.T, ts *a2aServer, id, text string) *nethttp.Response {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":"` + id + `","method":"SendStreamingMessage","params":{"message":{"messageId":"` + id + `","role":"ROLE_USER","parts":[{"text":"` + text + `"}]}}}`
	req, _ := nethttp.NewRequest("POST", ts.url+"/a2a/agents/alpha", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+peerTok)
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A2A streams (message/stream, tasks/resubscribe) had no cap at all:
// beyond [a2a] max_streams one is 429 a2a_stream_limit, and a finished
// stream gives its slot back.
func TestA2AStreamCap(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t, func(c *Config) { c.MaxA2AStreams = 1 })
	for i := 0; i < 2; i++ {
		resp := a2aStream(t, ts, fmt.Sprintf("s%d", i), "hi")
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(raw), "echo: hi") {
			t.Fatalf("stream %d: %d %s", i, resp.StatusCode, raw)
		}
	}
	held := a2aStream(t, ts, "held", "block")
	defer held.Body.Close()
	<-ts.agents.started
	if held.StatusCode != 200 {
		t.Fatalf("held stream: %d", held.StatusCode)
	}
	resp := a2aStream(t, ts, "over", "hi")
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || !strings.Contains(string(raw), "a2a_stream_limit") {
		t.Fatalf("stream over the cap: %d %s", resp.StatusCode, raw)
	}
	// A plain call is not a stream and is not refused.
	r := ts.authed(t, "POST", "/a2a/agents/alpha", `{"jsonrpc":"2.0","id":2,"method":"SendMessage","params":{"message":{"messageId":"m9","role":"ROLE_USER","parts":[{"text":"plain"}]}}}`)
	if r.status != 200 {
		t.Fatalf("plain call: %d %s", r.status, r.body)
	}
}
