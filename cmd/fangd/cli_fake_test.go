package main

// The client's own logic against small loopback servers that answer as
// fangd's API does in the cases a running daemon cannot be made to show
// on demand: a server without the streaming endpoint, a stream that ends
// with an error event, a stream cut and resumed.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func runInProcess(t *testing.T, args ...string) cliResult {
	t.Helper()
	t.Setenv("FANGD_HOME", t.TempDir())
	t.Setenv("FANGD_URL", "")
	t.Setenv("FANGD_API_KEY", "")
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return cliResult{code: code, out: out.String(), errOut: errOut.String()}
}

func writeSSE(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, e := range events {
		fmt.Fprint(w, e+"\n\n")
		w.(http.Flusher).Flush()
	}
}

// A server without POST .../message/stream (404, as fangd before it had
// one) is asked again on the plain endpoint, and the user is told.
func TestCLISendFallsBackWithoutStreaming(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		switch r.URL.Path {
		case "/api/agents/ops/message/stream":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":"no route for POST /api/agents/ops/message/stream","code":"not_found","request_id":"r1"}`)
		case "/api/agents/ops/message":
			fmt.Fprint(w, `{"response":"whole reply","session_id":"s"}`)
		}
	}))
	defer srv.Close()
	r := runInProcess(t, "send", "ops", "hello", "--url", srv.URL, "--api-key", "k-0123456789abcdef").want(t, 0, "send")
	if r.out != "whole reply\n" || !strings.Contains(r.errOut, "does not stream replies") {
		t.Fatalf("fallback: %q %q", r.out, r.errOut)
	}
	want := []string{"POST /api/agents/ops/message/stream Bearer k-0123456789abcdef", "POST /api/agents/ops/message Bearer k-0123456789abcdef"}
	if fmt.Sprint(paths) != fmt.Sprint(want) {
		t.Fatalf("requests: %q", paths)
	}
	paths = nil
	runInProcess(t, "send", "ops", "hello", "--no-stream", "--url", srv.URL).want(t, 0, "send --no-stream")
	if len(paths) != 1 || !strings.HasPrefix(paths[0], "POST /api/agents/ops/message ") {
		t.Fatalf("--no-stream asked %q", paths)
	}
}

// Text is printed as it streams (without control characters), tool calls
// are noted on stderr; an error event exits as the plain call's status
// would (402: 1; 502: 3), and a stream cut before done is exit 3.
func TestCLISendStreams(t *testing.T) {
	ending := "done"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evs := []string{`event: phase` + "\n" + `data: {"phase":"thinking","detail":null,"iteration":1}`,
			`event: chunk` + "\n" + `data: {"content":"Hello, ","done":false}`,
			`event: tool_use` + "\n" + `data: {"tool":"file_read","tool_call_id":"c1"}`,
			`: keep-alive`,
			`event: chunk` + "\n" + `data: {"content":"wor\u001b[2Jld","done":false}`}
		switch ending {
		case "done":
			evs = append(evs, `event: done`+"\n"+`data: {"done":true,"usage":{"input_tokens":1,"output_tokens":2},"response":"Hello, world"}`)
		case "402":
			evs = append(evs, `event: error`+"\n"+`data: {"error":"budget exceeded","code":"budget_exceeded","request_id":"r","status":402}`)
		case "502":
			evs = append(evs, `event: error`+"\n"+`data: {"error":"provider down","code":"provider_unreachable","request_id":"r","status":502}`)
		}
		writeSSE(w, evs...)
	}))
	defer srv.Close()
	r := runInProcess(t, "send", "ops", "hi", "--url", srv.URL).want(t, 0, "streamed send")
	// The escape character is dropped: a reply cannot drive the terminal.
	if r.out != "Hello, \nwor[2Jld\n" || r.errOut != "[tool file_read]\n" {
		t.Fatalf("streamed: %q %q", r.out, r.errOut)
	}
	r = runInProcess(t, "send", "ops", "hi", "--url", srv.URL, "--json").want(t, 0, "streamed send --json")
	if !strings.HasPrefix(r.out, `{"done":true`) || strings.Count(r.out, "\n") != 1 {
		t.Fatalf("--json: %q", r.out)
	}
	ending = "402"
	r = runInProcess(t, "send", "ops", "hi", "--url", srv.URL).want(t, 1, "error event 402")
	if !strings.Contains(r.errOut, "budget exceeded") || !strings.Contains(r.errOut, "402") {
		t.Fatalf("402: %q", r.errOut)
	}
	ending = "502"
	runInProcess(t, "send", "ops", "hi", "--url", srv.URL).want(t, 3, "error event 502")
	ending = "cut"
	r = runInProcess(t, "send", "ops", "hi", "--url", srv.URL).want(t, 3, "stream cut")
	if !strings.Contains(r.errOut, "ended before the turn finished") {
		t.Fatalf("cut: %q", r.errOut)
	}
}

// A tail whose stream ends reconnects with Last-Event-ID of the last
// event it printed, and prints what follows once.
func TestCLITailResumesWithLastEventID(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Path+"?"+r.URL.RawQuery+" last="+r.Header.Get("Last-Event-ID"))
		n := len(got)
		mu.Unlock()
		ev := func(id int) string {
			return fmt.Sprintf("id: %d\nevent: agent.spawned\ndata: {\"id\":%d,\"timestamp\":\"t\",\"type\":\"agent.spawned\",\"source\":\"s\",\"target\":\"\",\"detail\":null}", id, id)
		}
		switch n {
		case 1: // two events, then the stream ends (a restart)
			writeSSE(w, "retry: 10", ev(1), ev(2))
		case 2:
			w.WriteHeader(503) // still starting
		default:
			if r.Header.Get("Last-Event-ID") == "2" {
				writeSSE(w, `event: resync`+"\n"+`data: {"reason":"gap"}`, ev(3), ev(4))
			}
		}
	}))
	defer srv.Close()
	r := runInProcess(t, "events", "tail", "--type", "agent.*", "--count", "3", "--url", srv.URL).want(t, 0, "tail")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "#1") || !strings.Contains(lines[2], "#3") {
		t.Fatalf("tail printed:\n%s\nstderr: %s", r.out, r.errOut)
	}
	if !strings.Contains(r.errOut, "reconnecting from after id 2") || !strings.Contains(r.errOut, "resync") {
		t.Fatalf("stderr: %s", r.errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0] != "/api/comms/events/stream?type=agent.%2A last=" || got[2] != "/api/comms/events/stream?type=agent.%2A last=2" {
		t.Fatalf("requests: %q", got)
	}
}

// A server without /api/peers (a fangd before the peer network) is said
// to have none, exit 1.
func TestCLIPeersWithoutPeerNetwork(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		fmt.Fprint(w, `{"error":"no route for GET /api/peers","code":"not_found","request_id":"r"}`)
	}))
	defer srv.Close()
	r := runInProcess(t, "peers", "list", "--url", srv.URL).want(t, 1, "peers list")
	if !strings.Contains(r.errOut, "has no peer network") {
		t.Fatalf("peers list: %q", r.errOut)
	}
}
