package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

type harness struct {
	t     testing.TB
	home  string
	db    *store.DB
	vault *store.Vault
	k     *kernel.Kernel
	audit *audit.Log
	m     *Manager
	sink  *fakeSink
}

var testBackoff = kernel.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxRetries: 50, Window: time.Minute}

func newHarness(t testing.TB, home string, mutate func(*Options)) *harness {
	t.Helper()
	db, vault := storetest.OpenWithVault(t, home)
	k := kernel.New(zerolog.Nop())
	al, err := audit.Start(k, db, audit.Options{AnchorPath: audit.AnchorPath(home)})
	if err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{}
	opts := Options{Home: home, Backoff: testBackoff, StopGrace: 300 * time.Millisecond, Events: sink, Version: "test"}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := Start(k, db, vault, al, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, home: home, db: db, vault: vault, k: k, audit: al, m: m, sink: sink}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.db != nil {
		kerneltest.Stop(h.k, h.db)
		h.db = nil
	}
}

// waitFor polls the server view until ok, failing after a generous
// deadline (no timing assertions: the deadline only bounds a hang).
func (h *harness) waitFor(name string, what string, ok func(ServerView) bool) ServerView {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var v ServerView
	var err error
	for time.Now().Before(deadline) {
		v, err = h.m.Server(context.Background(), name)
		if err == nil && ok(v) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("server %s never became %s; last view %+v (err %v)", name, what, v, err)
	return v
}

func (h *harness) waitConnected(name string) ServerView {
	h.t.Helper()
	return h.waitFor(name, "connected", func(v ServerView) bool { return v.Status == StatusConnected })
}

func (h *harness) add(spec Spec) ServerView {
	h.t.Helper()
	v, err := h.m.Add(context.Background(), AddRequest{Spec: spec})
	if err != nil {
		h.t.Fatalf("add %s: %v", spec.Name, err)
	}
	return v
}

func (h *harness) call(name string, args any) (*sdk.CallToolResult, error) {
	raw, _ := json.Marshal(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.m.CallTool(ctx, Caller{Via: "test"}, name, raw)
}

func (h *harness) auditHas(eventType, contains string) bool {
	rec, err := h.audit.Recent(context.Background(), 500)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, raw := range rec.Entries {
		var e audit.Entry
		if json.Unmarshal(raw, &e) == nil && e.EventType == eventType && strings.Contains(e.Details, contains) {
			return true
		}
	}
	return false
}

func textOf(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*sdk.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

func kindOf(err error) kernel.Kind {
	if de := kernel.AsError(err); de != nil {
		return de.Kind
	}
	return -1
}

type fakeSink struct {
	mu     sync.Mutex
	events []string
}

func (f *fakeSink) Publish(eventType, source, target string, detail any) {
	f.mu.Lock()
	f.events = append(f.events, eventType+":"+strings.TrimPrefix(source, "mcp:"))
	f.mu.Unlock()
}

func (f *fakeSink) has(ev string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events {
		if e == ev {
			return true
		}
	}
	return false
}

// goServer is a real MCP server built with the Go SDK, served over
// streamable HTTP (or legacy SSE) on loopback.
type goServer struct {
	srv  *sdk.Server
	http *httptest.Server
	// auth, when set, is the Authorization header every request must carry.
	auth string
	mu   sync.Mutex
	seen []http.Header
}

type echoIn struct {
	Message string `json:"message"`
}

func addEcho(s *sdk.Server, name, description string) {
	sdk.AddTool(s, &sdk.Tool{Name: name, Description: description}, func(ctx context.Context, req *sdk.CallToolRequest, in echoIn) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: name + ": " + in.Message}}}, nil, nil
	})
}

func newGoServer(t *testing.T, sse bool, auth string) *goServer {
	t.Helper()
	g := &goServer{auth: auth}
	g.srv = sdk.NewServer(&sdk.Implementation{Name: "go-peer", Version: "1"}, nil)
	addEcho(g.srv, "echo", "Echoes the message")
	var h http.Handler
	if sse {
		h = sdk.NewSSEHandler(func(*http.Request) *sdk.Server { return g.srv }, nil)
	} else {
		h = sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return g.srv }, nil)
	}
	g.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.seen = append(g.seen, r.Header.Clone())
		g.mu.Unlock()
		if g.auth != "" && r.Header.Get("Authorization") != g.auth {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(g.http.Close)
	return g
}

func (g *goServer) url() string { return g.http.URL }

// addHang adds the tool "hang", whose calls answer only when the caller
// gives up (or the test ends).
func (g *goServer) addHang(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	sdk.AddTool(g.srv, &sdk.Tool{Name: "hang"}, func(ctx context.Context, req *sdk.CallToolRequest, in struct{}) (*sdk.CallToolResult, any, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return &sdk.CallToolResult{}, nil, nil
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

var _ = fmt.Sprintf
