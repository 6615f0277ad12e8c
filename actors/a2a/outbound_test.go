package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/a2aproject/a2a-go/v2/a2asrv"

	"github.com/fangd/fangd/actors/kernel"
)

// peerExecutor is an A2A agent built with the official SDK: it answers
// "peer says: <text>", after release is closed when it is set.
type peerExecutor struct {
	release chan struct{}
	started chan struct{}
}

func (e *peerExecutor) Execute(ctx context.Context, ec *a2asrv.ExecutorContext) iter.Seq2[a2a.Event, error] {
	return func(yield func(a2a.Event, error) bool) {
		if ec.StoredTask == nil {
			if !yield(a2a.NewSubmittedTask(ec, ec.Message), nil) {
				return
			}
		}
		if !yield(a2a.NewStatusUpdateEvent(ec, a2a.TaskStateWorking, nil), nil) {
			return
		}
		if e.started != nil {
			select {
			case e.started <- struct{}{}:
			default:
			}
		}
		if e.release != nil {
			select {
			case <-e.release:
			case <-ctx.Done():
				return
			}
		}
		text := ec.Message.Parts[0].Text()
		if !yield(a2a.NewArtifactEvent(ec, a2a.NewTextPart("peer says: "+text)), nil) {
			return
		}
		yield(a2a.NewStatusUpdateEvent(ec, a2a.TaskStateCompleted, nil), nil)
	}
}

func (e *peerExecutor) Cancel(ctx context.Context, ec *a2asrv.ExecutorContext) iter.Seq2[a2a.Event, error] {
	return func(yield func(a2a.Event, error) bool) {
		yield(a2a.NewStatusUpdateEvent(ec, a2a.TaskStateCanceled, nil), nil)
	}
}

// peerServer is an SDK-built A2A server on loopback.
type peerServer struct {
	*httptest.Server
	exec     *peerExecutor
	auth     atomic.Value // last Authorization header seen
	failNext atomic.Int32 // answer this many POSTs with failStatus
	failWith atomic.Int32
	posts    atomic.Int32
}

// discoveredPeer is a 1.0 peer ("Peer Agent") that h has discovered,
// without a token.
func (h *harness) discoveredPeer(t *testing.T, streaming bool) *peerServer {
	t.Helper()
	p := newPeer(t, streaming, false)
	if _, _, err := h.svc.Discover(admin(), p.URL, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func newPeer(t *testing.T, streaming bool, legacy bool) *peerServer {
	t.Helper()
	p := &peerServer{exec: &peerExecutor{}}
	p.auth.Store("")
	mux := http.NewServeMux()
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			p.posts.Add(1)
			p.auth.Store(r.Header.Get("Authorization"))
			if p.failNext.Load() > 0 {
				p.failNext.Add(-1)
				w.WriteHeader(int(p.failWith.Load()))
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	caps := a2a.AgentCapabilities{Streaming: streaming}
	handler := a2asrv.NewHandler(p.exec, a2asrv.WithCapabilityChecks(&caps))
	card := &a2a.AgentCard{Name: "Peer Agent", Description: "an SDK peer", Version: "1.2.3", Capabilities: caps,
		DefaultInputModes: []string{"text/plain"}, DefaultOutputModes: []string{"text/plain"},
		Skills: []a2a.AgentSkill{{ID: "echo", Name: "Echo", Description: "echoes", Tags: []string{"test"}}}}
	if legacy {
		card.SupportedInterfaces = []*a2a.AgentInterface{{URL: p.URL + "/rpc", ProtocolBinding: a2a.TransportProtocolJSONRPC, ProtocolVersion: a2av0.Version}}
		mux.Handle("/rpc", a2av0.NewJSONRPCHandler(handler))
		mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewAgentCardHandler(a2av0.NewStaticAgentCardProducer(card)))
	} else {
		card.SupportedInterfaces = []*a2a.AgentInterface{a2a.NewAgentInterface(p.URL+"/rpc", a2a.TransportProtocolJSONRPC)}
		mux.Handle("/rpc", a2asrv.NewJSONRPCHandler(handler))
		mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))
	}
	return p
}

func (h *harness) sendAndWait(t *testing.T, agentRef, text string) *TaskSnapshot {
	t.Helper()
	r, _, err := h.svc.SendOutbound(admin(), OutboundRequest{AgentRef: agentRef, Message: userMsg(text)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(admin(), 15*time.Second)
	defer cancel()
	snap, err := h.svc.WaitOutbound(ctx, r.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestDiscoverStoresTheAgentWithAStableID(t *testing.T) {
	h := newHarness(t, nil)
	p := newPeer(t, true, false)
	a, created, err := h.svc.Discover(admin(), p.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !created || a.Name != "Peer Agent" || a.Version != "1.2.3" || !a.Capabilities.Streaming || len(a.Skills) != 1 ||
		a.URL != p.URL || a.CardURL != p.URL+"/.well-known/agent-card.json" {
		t.Fatalf("discovered %+v created=%v", a, created)
	}
	again, created, err := h.svc.Discover(admin(), strings.ToUpper(p.URL[:4])+p.URL[4:], nil)
	if err != nil || created || again.ID != a.ID {
		t.Fatalf("rediscovery: %+v created=%v err=%v", again, created, err)
	}
	h.restart()
	list, err := h.svc.ExternalAgents(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != a.ID || list[0].Card != nil {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	byName, err := h.svc.ExternalAgent(context.Background(), "peer agent")
	if err != nil || byName.ID != a.ID {
		t.Fatalf("by name: %+v %v", byName, err)
	}
	if _, err := h.svc.ExternalAgent(context.Background(), "nope"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("unknown agent: %v", err)
	}
}

func TestSendToAStreamingPeer(t *testing.T) {
	h := newHarness(t, nil)
	h.discoveredPeer(t, true)
	snap := h.sendAndWait(t, "Peer Agent", "hi there")
	st := snap.Outbound()
	if st.Status != "completed" || st.Result == nil || *st.Result.Parts[0].Text != "peer says: hi there" || st.RemoteTaskID == "" || !st.Streaming {
		t.Fatalf("outbound status %+v", st)
	}
}

func TestSendToANonStreamingPeerAndALegacyPeer(t *testing.T) {
	for _, c := range []struct {
		name              string
		streaming, legacy bool
	}{{"blocking 1.0", false, false}, {"0.3 peer", false, true}, {"0.3 streaming peer", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, nil)
			p := newPeer(t, c.streaming, c.legacy)
			a, _, err := h.svc.Discover(admin(), p.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := h.sendAndWait(t, a.ID, "ping").Outbound()
			if st.Status != "completed" || st.Result == nil || *st.Result.Parts[0].Text != "peer says: ping" {
				t.Fatalf("outbound status %+v", st)
			}
		})
	}
}

func TestOutboundRetriesTransientFailures(t *testing.T) {
	h := newHarness(t, nil)
	p := newPeer(t, false, false)
	if _, _, err := h.svc.Discover(admin(), p.URL, []byte("peer-token-xyz")); err != nil {
		t.Fatal(err)
	}
	p.failWith.Store(503)
	p.failNext.Store(2)
	st := h.sendAndWait(t, "Peer Agent", "again").Outbound()
	if st.Status != "completed" || st.Attempts != 2 || !strings.Contains(st.LastError, "503") {
		t.Fatalf("after retries: %+v", st)
	}
	if got := p.auth.Load().(string); got != "Bearer peer-token-xyz" {
		t.Fatalf("peer saw Authorization %q", got)
	}
	// A 401 is not retried.
	p.failWith.Store(401)
	p.failNext.Store(100)
	before := p.posts.Load()
	st = h.sendAndWait(t, "Peer Agent", "denied").Outbound()
	if st.Status != "failed" || !strings.Contains(st.Error, "401") || p.posts.Load()-before != 1 {
		t.Fatalf("401: %+v after %d posts", st, p.posts.Load()-before)
	}
}

func TestOutboundGivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxAttempts = 3 })
	p := h.discoveredPeer(t, false)
	p.failWith.Store(502)
	p.failNext.Store(100)
	st := h.sendAndWait(t, "Peer Agent", "x").Outbound()
	if st.Status != "failed" || st.Attempts != 3 || !strings.Contains(st.Error, "after 3 attempt") {
		t.Fatalf("%+v", st)
	}
}

func TestIdempotencyKeyReplaysOrConflicts(t *testing.T) {
	h := newHarness(t, nil)
	p := h.discoveredPeer(t, false)
	req := OutboundRequest{AgentRef: "Peer Agent", Message: userMsg("once"), IdempotencyKey: "k1", BodyHash: "h1"}
	first, replayed, err := h.svc.SendOutbound(admin(), req)
	if err != nil || replayed {
		t.Fatal(err, replayed)
	}
	second, replayed, err := h.svc.SendOutbound(admin(), req)
	if err != nil || !replayed || second != first {
		t.Fatalf("replay: %+v %v %v (first %+v)", second, replayed, err, first)
	}
	req.BodyHash = "h2"
	_, _, err = h.svc.SendOutbound(admin(), req)
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindConflict {
		t.Fatalf("reuse with another body: %v", err)
	}
	ctx, cancel := context.WithTimeout(admin(), 10*time.Second)
	defer cancel()
	if _, err := h.svc.WaitOutbound(ctx, first.TaskID); err != nil {
		t.Fatal(err)
	}
	if n := p.posts.Load(); n != 1 {
		t.Fatalf("peer got %d sends for one idempotent request", n)
	}
}

func TestOutboundTaskResumesAfterRestart(t *testing.T) {
	h := newHarness(t, nil)
	p := newPeer(t, true, false)
	p.exec.release = make(chan struct{})
	p.exec.started = make(chan struct{}, 1)
	if _, _, err := h.svc.Discover(admin(), p.URL, nil); err != nil {
		t.Fatal(err)
	}
	r, _, err := h.svc.SendOutbound(admin(), OutboundRequest{AgentRef: "Peer Agent", Message: userMsg("survive")})
	if err != nil {
		t.Fatal(err)
	}
	<-p.exec.started
	eventually(t, "the peer's task id to be stored", func() bool {
		s, err := h.svc.OutboundTask(admin(), r.TaskID)
		return err == nil && s.Outbound().RemoteTaskID != ""
	})
	h.restart()
	close(p.exec.release)
	ctx, cancel := context.WithTimeout(admin(), 15*time.Second)
	defer cancel()
	snap, err := h.svc.WaitOutbound(ctx, r.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if st := snap.Outbound(); st.Status != "completed" || *st.Result.Parts[0].Text != "peer says: survive" {
		t.Fatalf("after restart: %+v", st)
	}
}

func TestDiscoveryRefusesBadCardsAndPlaces(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxCardBytes = 4096 })
	var mu sync.Mutex
	routes := map[string]func(w http.ResponseWriter){}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := routes[r.URL.Path]
		mu.Unlock()
		if f == nil {
			http.NotFound(w, r)
			return
		}
		f(w)
	}))
	defer srv.Close()
	set := func(path string, f func(w http.ResponseWriter)) {
		mu.Lock()
		routes = map[string]func(w http.ResponseWriter){path: f}
		mu.Unlock()
	}
	cases := []struct {
		name  string
		setup func()
		code  string
		kind  kernel.Kind
		text  string
	}{
		{"not json", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) { w.Write([]byte("<html>hi</html>")) })
		}, "a2a_discovery_failed", kernel.KindUpstream, "not a JSON object"},
		{"no name", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) {
				w.Write([]byte(`{"description":"x","supportedInterfaces":[{"url":"` + srv.URL + `/rpc","protocolBinding":"JSONRPC","protocolVersion":"1.0"}]}`))
			})
		}, "a2a_discovery_failed", kernel.KindUpstream, `"name"`},
		{"no endpoint", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) { w.Write([]byte(`{"name":"x"}`)) })
		}, "a2a_discovery_failed", kernel.KindUpstream, "url"},
		{"redirect", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) {
				w.Header().Set("Location", "http://10.0.0.1/card")
				w.WriteHeader(302)
			})
		}, "a2a_discovery_failed", kernel.KindUpstream, "not followed"},
		{"too big", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) {
				w.Write([]byte(`{"name":"` + strings.Repeat("x", 5000) + `"}`))
			})
		}, "a2a_discovery_failed", kernel.KindUpstream, "larger than 4096"},
		{"endpoint in a private network", func() {
			set("/.well-known/agent-card.json", func(w http.ResponseWriter) {
				w.Write([]byte(`{"name":"sneaky","supportedInterfaces":[{"url":"http://10.0.0.1/rpc","protocolBinding":"JSONRPC","protocolVersion":"1.0"}]}`))
			})
		}, "a2a_ssrf_blocked", kernel.KindInvalid, "10.0.0.1"},
	}
	for _, c := range cases {
		c.setup()
		_, _, err := h.svc.Discover(admin(), srv.URL, nil)
		de := kernel.AsError(err)
		if de == nil || de.Code != c.code || de.Kind != c.kind || !strings.Contains(de.Msg, c.text) {
			t.Errorf("%s: got %v, want %s containing %q", c.name, err, c.code, c.text)
		}
	}
	// A private address is refused before anything is fetched.
	_, _, err := h.svc.Discover(admin(), "http://10.0.0.1:8080", nil)
	if de := kernel.AsError(err); de == nil || de.Code != "a2a_ssrf_blocked" || de.Kind != kernel.KindInvalid {
		t.Fatalf("private address: %v", err)
	}
	for _, bad := range []string{"", "ftp://x", "not a url", "http://user:pw@host"} {
		if _, _, err := h.svc.Discover(admin(), bad, nil); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Errorf("url %q: %v", bad, err)
		}
	}
	// The seed's card at agent.json, after agent-card.json 404s.
	set("/.well-known/agent.json", func(w http.ResponseWriter) {
		w.Write([]byte(`{"name":"LibreFang","description":"seed","url":"` + srv.URL + `/a2a","version":"0.1.0","capabilities":{"streaming":true,"pushNotifications":false},"skills":[{"id":"chat","name":"Chat","description":"chat"}]}`))
	})
	a, _, err := h.svc.Discover(admin(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.CardURL != srv.URL+"/.well-known/agent.json" || len(a.Interfaces) != 1 || a.Interfaces[0].ProtocolVersion != "0.3" || a.Interfaces[0].URL != srv.URL+"/a2a" {
		t.Fatalf("seed card agent %+v", a)
	}
	if list, _ := h.svc.ExternalAgents(context.Background()); len(list) != 1 {
		t.Fatalf("failed discoveries stored agents: %+v", list)
	}
}

func TestCanonicalURL(t *testing.T) {
	cases := map[string]string{
		"HTTP://Example.COM:80/":          "http://example.com",
		"https://example.com:443/a2a/":    "https://example.com/a2a",
		"https://example.com/x?#frag":     "https://example.com/x",
		"http://127.0.0.1:4545":           "http://127.0.0.1:4545",
		"http://[::1]:8080/p":             "http://[::1]:8080/p",
		"https://example.com/card.json?a": "https://example.com/card.json?a",
	}
	for in, want := range cases {
		got, err := CanonicalURL(in)
		if err != nil || got != want {
			t.Errorf("CanonicalURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestTheSendToolAnswersWithThePeersReply(t *testing.T) {
	h := newHarness(t, nil)
	h.discoveredPeer(t, true)
	out, err := h.svc.CallTool(context.Background(), testAgent.ID, json.RawMessage(`{"agent":"Peer Agent","message":"from a tool"}`))
	if err != nil {
		t.Fatal(err)
	}
	var res ToolResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "completed" || res.Answer != "peer says: from a tool" {
		t.Fatalf("tool result %s", out)
	}
	// The task belongs to the agent that called the tool.
	if _, err := h.svc.OutboundTask(peer("someone"), res.TaskID); err == nil {
		t.Fatal("another caller can read the tool's task")
	}
	if _, err := h.svc.CallTool(context.Background(), testAgent.ID, json.RawMessage(`{"agent":"ghost","message":"x"}`)); err == nil ||
		!strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown agent: %v", err)
	}
	if _, err := h.svc.CallTool(context.Background(), testAgent.ID, json.RawMessage(`{"agent":"x"}`)); err == nil {
		t.Fatal("missing message accepted")
	}
	_ = errors.New
}
