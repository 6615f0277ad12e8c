package http

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/actors/usage"
)

// withStreamingAgents adds agents on a fake provider of the given API
// (whose model runs shell_exec when asked to "run" something, ungated)
// to a test server, and returns the fake.
func withStreamingAgents(t *testing.T, api string) (func(*Server), *llmtest.Fake) {
	fake := llmtest.NewOpenAI("")
	if api == llm.APIAnthropic {
		fake = llmtest.NewAnthropic("")
	}
	t.Cleanup(fake.Close)
	fake.SetResponder(shellModel)
	return func(s *Server) {
		testAgents(t, s, fakeRegistry(t, api, fake.BaseURL), agent.Options{Tools: &shellTool{}})
	}, fake
}

type turnEvent struct {
	name string
	data map[string]any
}

// openTurnStream posts to the stream route and returns the response (its body
// still open) once the headers are in.
func (ts *testServer) openTurnStream(t *testing.T, ctx context.Context, agentRef, body string) *nethttp.Response {
	t.Helper()
	req, _ := nethttp.NewRequestWithContext(ctx, "POST", ts.url+"/api/agents/"+agentRef+"/message/stream", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readTurnEvents reads a stream's events until it ends (or stop says so).
func readTurnEvents(t *testing.T, r io.Reader, stop func(turnEvent) bool) []turnEvent {
	t.Helper()
	var out []turnEvent
	var cur turnEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" || cur.data != nil {
				out = append(out, cur)
				if stop != nil && stop(cur) {
					return out
				}
			}
			cur = turnEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("event %s: data is not JSON: %s", cur.name, line)
			}
		}
	}
	return out
}

// LibreFang's send_message_stream (routes/agents/messaging.rs): chunk
// {content, done}, tool_use {tool}, tool_result {tool, input}, phase
// {phase, detail}, done {done, usage {input_tokens, output_tokens}}.
func TestAgentMessageStreamSendsLibreFangsEvents(t *testing.T) {
	t.Parallel()
	for _, api := range []string{llm.APIOpenAI, llm.APIAnthropic} {
		t.Run(api, func(t *testing.T) {
			extra, fake := withStreamingAgents(t, api)
			ts := newTestServer(t, nil, extra)
			ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"sh","model":"fake/m","tools":["shell_exec"]}`)
			res := ts.openTurnStream(t, context.Background(), "sh", `{"message":"run ls"}`)
			defer res.Body.Close()
			if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
			}
			events := readTurnEvents(t, res.Body, nil)
			var names []string
			var text strings.Builder
			for _, ev := range events {
				if len(names) == 0 || names[len(names)-1] != ev.name {
					names = append(names, ev.name)
				}
				switch ev.name {
				case "chunk":
					if ev.data["done"] != false {
						t.Fatalf("chunk %v", ev.data)
					}
					text.WriteString(ev.data["content"].(string))
				case "tool_use":
					if ev.data["tool"] != "shell_exec" {
						t.Fatalf("tool_use %v", ev.data)
					}
				case "tool_result":
					if in, _ := ev.data["input"].(map[string]any); ev.data["tool"] != "shell_exec" || in["cmd"] != "ls" {
						t.Fatalf("tool_result %v", ev.data)
					}
				case "phase":
					if _, ok := ev.data["detail"]; !ok || ev.data["phase"] == "error" {
						t.Fatalf("phase %v", ev.data)
					}
				}
			}
			want := "phase tool_use tool_result phase chunk done"
			if strings.Join(names, " ") != want {
				t.Fatalf("events %v, want %s", names, want)
			}
			done := events[len(events)-1].data
			usage, _ := done["usage"].(map[string]any)
			if done["done"] != true || usage["input_tokens"] == nil || usage["output_tokens"] != float64(24) ||
				done["iterations"] != float64(2) || done["response"] != text.String() || text.String() != `tool said: output of {"cmd":"ls"}: 42 files` {
				t.Fatalf("done %v after text %q", done, text.String())
			}
			if len(fake.Requests()) != 2 || !fake.Requests()[0].Stream {
				t.Fatal("the provider was not streamed from")
			}
			// POST /message answers iterations too.
			var turn map[string]any
			ts.mustStatus(t, 200, "POST", "/api/agents/sh/message", `{"message":"hello"}`).json(t, &turn)
			if turn["iterations"] != float64(1) || turn["response"] != "echo: hello" {
				t.Fatalf("turn %v", turn)
			}
		})
	}
}

func TestAgentMessageStreamRefusesBeforeItBegins(t *testing.T) {
	t.Parallel()
	extra, fake := withStreamingAgents(t, llm.APIOpenAI)
	ts := newTestServer(t, func(c *Config) { c.MaxAgentStreams = 1 }, extra)
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"talker","model":"fake/m"}`)
	for _, c := range []struct {
		ref, body string
		status    int
		code      string
	}{
		{"nobody", `{"message":"hi"}`, 404, "agent_not_found"},
		{"talker", `{"message":`, 400, ""},
		{"talker", `{"message":"hi","colour":"red"}`, 400, ""},
		{"talker", `{"message":""}`, 400, ""},
	} {
		r := ts.authed(t, "POST", "/api/agents/"+c.ref+"/message/stream", c.body)
		if e := r.envelope(t); r.status != c.status || (c.code != "" && e.Code != c.code) {
			t.Fatalf("%s %s: %d %s", c.ref, c.body, r.status, r.body)
		}
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("refused requests reached the provider %d times", n)
	}
	// One stream open (held by a slow provider): a second is 429.
	fake.SetReply(func(llmtest.Request) string { return strings.Repeat("slow words ", 50) })
	fake.SetChunkDelay(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := ts.openTurnStream(t, ctx, "talker", `{"message":"hi"}`)
	readTurnEvents(t, res.Body, func(ev turnEvent) bool { return ev.name == "chunk" })
	r := ts.authed(t, "POST", "/api/agents/talker/message/stream", `{"message":"hi"}`)
	if e := r.envelope(t); r.status != 429 || e.Code != "agent_stream_limit" || r.header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %s", r.status, r.body)
	}
	res.Body.Close()
	cancel()
}

func TestAgentMessageStreamDisconnectCancelsTheProviderCall(t *testing.T) {
	t.Parallel()
	extra, fake := withStreamingAgents(t, llm.APIAnthropic)
	ts := newTestServer(t, func(c *Config) { c.MaxAgentStreams = 1 }, extra)
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"talker","model":"fake/m"}`)
	fake.SetReply(func(llmtest.Request) string { return strings.Repeat("many many words ", 200) })
	hangUpMidStream(t, ts, fake, "talker", "the provider's stream was not closed when the client went away")
	// The turn ended (cancelled, and metered once with what arrived) and
	// gave its stream slot back.
	kerneltest.WaitFor(t, "the cancelled turn's usage", func() bool {
		var u map[string]any
		r := ts.authed(t, "GET", "/api/usage/summary", "")
		return r.status == 200 && json.Unmarshal(r.body, &u) == nil && u["call_count"] == float64(1)
	})
	fake.SetChunkDelay(0)
	kerneltest.WaitFor(t, "the stream slot to be free", func() bool {
		res := ts.openTurnStream(t, context.Background(), "talker", `{"message":"again"}`)
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return false
		}
		evs := readTurnEvents(t, res.Body, nil)
		return len(evs) > 0 && evs[len(evs)-1].name == "done"
	})
}

// A failure after the stream began ends it with phase "error" and an
// error event carrying the envelope /message would have answered.
func TestAgentMessageStreamEndsWithTheErrorEnvelope(t *testing.T) {
	t.Parallel()
	extra, fake := withStreamingAgents(t, llm.APIOpenAI)
	ts := newTestServer(t, nil, extra)
	var a agent.Agent
	ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"broke","model":"fake/m"}`).json(t, &a)
	tiny := 1e-9
	if _, err := ts.deps.Meter.SetAgentBudget(context.Background(), usage.SetAgentBudget{AgentID: a.ID, DailyLimitUSD: &tiny}); err != nil {
		t.Fatal(err)
	}
	res := ts.openTurnStream(t, context.Background(), "broke", `{"message":"hi"}`)
	defer res.Body.Close()
	events := readTurnEvents(t, res.Body, nil)
	if res.StatusCode != 200 || len(events) != 3 || events[0].data["phase"] != "thinking" ||
		events[1].name != "phase" || events[1].data["phase"] != "error" || events[1].data["detail"] == nil || events[2].name != "error" {
		t.Fatalf("%d: %+v", res.StatusCode, events)
	}
	e := events[2].data
	if e["code"] != "budget_exceeded" || e["status"] != float64(402) || e["error"] != events[1].data["detail"] ||
		e["request_id"] != res.Header.Get("X-Request-Id") {
		t.Fatalf("error event %v", e)
	}
	if len(fake.Requests()) != 0 {
		t.Fatal("a call over budget reached the provider")
	}
}

// hangUpMidStream opens a turn stream for agentRef on ts, reads three
// chunks, goes away, and waits for the provider's stream to be closed
// (failing with why if it is not).
func hangUpMidStream(t *testing.T, ts *testServer, fake *llmtest.Fake, agentRef, why string) {
	t.Helper()
	fake.SetChunkDelay(5 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	res := ts.openTurnStream(t, ctx, agentRef, `{"message":"hi"}`)
	n := 0
	readTurnEvents(t, res.Body, func(ev turnEvent) bool {
		if ev.name == "chunk" {
			n++
		}
		return n == 3
	})
	cancel()
	res.Body.Close()
	select {
	case <-fake.StreamCuts():
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}
