package http

import (
	"context"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/agent"
	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// relayPair is a host node n2 with streaming agents and a node n1 whose
// agent directory says n2 hosts them, so n1 relays their streams.
func relayPair(t *testing.T, mutate func(*Config), urls map[string]string) (host, fwd *testServer, fake *llmtest.Fake, dir *fakeAgentDir) {
	t.Helper()
	hostAgents, fake := withStreamingAgents(t, llm.APIOpenAI)
	host = newTestServer(t, nil, hostAgents)
	fwdAgents, _ := withStreamingAgents(t, llm.APIOpenAI)
	dir = &fakeAgentDir{recs: map[string]fcluster.AgentRecord{}}
	all := map[string]string{"n2": host.url}
	for k, v := range urls {
		all[k] = v
	}
	fwd = newTestServer(t, mutate, fwdAgents, func(s *Server) {
		s.hosts = testRouter(all, io.Discard)
		s.agentDir = dir
	})
	return host, fwd, fake, dir
}

// An agent's stream asked of a node that does not host it arrives event
// by event as the host sends them: the tool_use event the model's first
// answer caused reaches the client while the model's second answer is
// still held back (a buffering relay would send nothing until the turn
// ended). The rest follows, ending with done, as on the host.
func TestAgentStreamRelayedLiveThroughAnotherNode(t *testing.T) {
	t.Parallel()
	host, fwd, fake, dir := relayPair(t, nil, nil)
	var a agent.Agent
	host.mustStatus(t, 201, "POST", "/api/agents", `{"name":"sh","model":"fake/m","tools":["shell_exec"]}`).json(t, &a)
	dir.put(fcluster.AgentRecord{ID: a.ID, Name: "sh", Node: "n2"})

	gate := make(chan struct{})
	fake.SetResponder(func(r llmtest.Request) llmtest.Reply {
		if r.LastMessage().Role == "tool" {
			select {
			case <-gate:
			case <-time.After(30 * time.Second):
			}
		}
		return shellModel(r)
	})
	// Opened and read aside: a buffering relay would not even answer
	// the headers before the turn ended.
	events := make(chan turnEvent, 64)
	go func() {
		defer close(events)
		res := fwd.openTurnStream(t, context.Background(), "sh", `{"message":"run ls"}`)
		defer res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
			t.Errorf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
			return
		}
		readTurnEvents(t, res.Body, func(ev turnEvent) bool { events <- ev; return false })
	}()
	held := time.After(15 * time.Second)
	var all []turnEvent
	for len(all) == 0 || all[len(all)-1].name != "tool_result" {
		select {
		case ev, ok := <-events:
			if !ok {
				close(gate)
				t.Fatalf("the stream ended early: %+v", all)
			}
			all = append(all, ev)
		case <-held:
			close(gate)
			t.Fatalf("the tool events did not reach the client while the model's second answer was held: the relay buffers (got %+v)", all)
		}
	}
	close(gate)
	for ev := range events {
		all = append(all, ev)
	}
	var names []string
	for _, ev := range all {
		if len(names) == 0 || names[len(names)-1] != ev.name {
			names = append(names, ev.name)
		}
	}
	if got := strings.Join(names, " "); got != "phase tool_use tool_result phase chunk done" {
		t.Fatalf("events %s", got)
	}
	if done := all[len(all)-1].data; done["response"] != `tool said: output of {"cmd":"ls"}: 42 files` {
		t.Fatalf("done %v", done)
	}
}

// A client that goes away from a relayed stream ends the host's turn,
// and with it the provider's stream.
func TestAgentStreamRelayDisconnectCancelsTheHostsTurn(t *testing.T) {
	t.Parallel()
	host, fwd, fake, dir := relayPair(t, nil, nil)
	var a agent.Agent
	host.mustStatus(t, 201, "POST", "/api/agents", `{"name":"talker","model":"fake/m"}`).json(t, &a)
	dir.put(fcluster.AgentRecord{ID: a.ID, Name: "talker", Node: "n2"})
	fake.SetReply(func(llmtest.Request) string { return strings.Repeat("many many words ", 400) })
	hangUpMidStream(t, fwd, fake, a.ID, "the provider's stream on the host was not closed when the relay's client went away")
}

// A host that breaks off the stream (dies) or goes silent (its machine
// vanished) ends the relayed stream with phase "error" and an error event
// host_stream_lost, after the events it did send; never a hang.
func TestAgentStreamRelayEndsWithAnErrorWhenTheHostIsLost(t *testing.T) {
	t.Parallel()
	silent := make(chan struct{})
	dying := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "event: chunk\ndata: {\"content\":\"hel\",\"done\":false}\n\n")
		w.(nethttp.Flusher).Flush()
		if r.Header.Get(forwardedHeader) != "n1" {
			io.WriteString(w, "event: chunk\ndata: {\"content\":\"not forwarded\",\"done\":false}\n\n")
		}
		if strings.Contains(r.URL.Path, "quiet") {
			<-silent
			return
		}
		// Half an event, then the connection is cut with no end of the
		// chunked body: what the relay sees of a host killed with -9.
		io.WriteString(w, "event: chunk\ndata: {\"content\":\"lo")
		w.(nethttp.Flusher).Flush()
		conn, _, err := w.(nethttp.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(dying.Close)
	// Before dying.Close, which waits for the quiet handler (cleanups
	// run last first).
	t.Cleanup(func() { close(silent) })
	_, fwd, _, dir := relayPair(t, func(c *Config) { c.SSEHeartbeat = 100 * time.Millisecond }, map[string]string{"n3": dying.URL})
	dir.put(fcluster.AgentRecord{ID: "0b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", Name: "dies", Node: "n3"})
	dir.put(fcluster.AgentRecord{ID: "1b6c2a44-9a57-4c55-9d0e-3c1f0f3b1a10", Name: "quiet", Node: "n3"})
	for _, name := range []string{"dies", "quiet"} {
		t.Run(name, func(t *testing.T) {
			res := fwd.openTurnStream(t, context.Background(), name, `{"message":"hi"}`)
			defer res.Body.Close()
			evs := readTurnEvents(t, res.Body, nil)
			if res.StatusCode != 200 || len(evs) != 3 || evs[0].name != "chunk" || evs[0].data["content"] != "hel" ||
				evs[1].name != "phase" || evs[1].data["phase"] != "error" || evs[2].name != "error" {
				t.Fatalf("%d: %+v", res.StatusCode, evs)
			}
			e := evs[2].data
			if e["code"] != "host_stream_lost" || e["status"] != float64(502) || !strings.Contains(e["error"].(string), "n3") ||
				e["request_id"] != res.Header.Get("X-Request-Id") {
				t.Fatalf("error event %v", e)
			}
		})
	}
}
