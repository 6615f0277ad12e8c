package a2a

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

// fakeAgents is an agent runtime whose turns the test controls.
type fakeAgents struct {
	mu     sync.Mutex
	agents []Agent
	// turn, when set, runs each turn; the default echoes the text.
	turn  func(ctx context.Context, req TurnRequest) (TurnResult, error)
	calls []TurnRequest
	// ended receives the context error of each finished turn.
	ended chan error
}

func newFakeAgents(agents ...Agent) *fakeAgents {
	return &fakeAgents{agents: agents, ended: make(chan error, 100)}
}

func (f *fakeAgents) Resolve(_ context.Context, ref string) (Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.agents {
		if a.ID == ref || strings.EqualFold(a.Name, ref) {
			return a, nil
		}
	}
	return Agent{}, kernel.NotFound("agent %s not found", ref)
}

func (f *fakeAgents) List(context.Context) ([]Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Agent(nil), f.agents...), nil
}

func (f *fakeAgents) Turn(ctx context.Context, req TurnRequest) (TurnResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	turn := f.turn
	f.mu.Unlock()
	var res TurnResult
	var err error
	if turn != nil {
		res, err = turn(ctx, req)
	} else {
		res = TurnResult{Text: "echo: " + req.Text, Model: "fake/echo", InputTokens: 3, OutputTokens: 5}
	}
	select {
	case f.ended <- ctx.Err():
	default: // nobody is watching (benchmarks)
	}
	return res, err
}

func (f *fakeAgents) setTurn(fn func(ctx context.Context, req TurnRequest) (TurnResult, error)) {
	f.mu.Lock()
	f.turn = fn
	f.mu.Unlock()
}

func (f *fakeAgents) lastCall() TurnRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

// fakeGuard allows every host except those listed as blocked; it never
// resolves names (tests use 127.0.0.1 URLs).
type fakeGuard struct {
	blocked map[string]bool
}

type blockedError struct{ host string }

func (e *blockedError) Error() string {
	return "host " + e.host + " resolves to a private address, which is not allowed"
}

func (g *fakeGuard) Check(_ context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, errors.New("url does not parse")
	}
	if g.blocked[u.Hostname()] {
		return nil, &blockedError{u.Hostname()}
	}
	return u, nil
}

func (g *fakeGuard) Client(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host := addr
		if i := strings.LastIndex(addr, ":"); i >= 0 {
			host = addr[:i]
		}
		if g.blocked[host] {
			return nil, &blockedError{host}
		}
		return dial(ctx, network, addr)
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// fakePusher records deliveries.
type fakePusher struct {
	mu     sync.Mutex
	got    []PushDelivery
	forgot []string
	ch     chan PushDelivery
}

func newFakePusher() *fakePusher { return &fakePusher{ch: make(chan PushDelivery, 100)} }

func (p *fakePusher) Forget(_ context.Context, endpoint string) error {
	p.mu.Lock()
	p.forgot = append(p.forgot, endpoint)
	p.mu.Unlock()
	return nil
}

func (p *fakePusher) Push(_ context.Context, d PushDelivery) error {
	p.mu.Lock()
	p.got = append(p.got, d)
	p.mu.Unlock()
	p.ch <- d
	return nil
}

// harness is a Service on a fresh store.
type harness struct {
	t      testing.TB
	home   string
	db     *store.DB
	k      *kernel.Kernel
	svc    *Service
	agents *fakeAgents
	opts   Options
}

var testAgent = Agent{ID: "11111111-1111-1111-1111-111111111111", Name: "helper", Description: "helps", Tools: []string{"web_fetch"}, Available: true}
var otherAgent = Agent{ID: "22222222-2222-2222-2222-222222222222", Name: "other", Available: true}

func newHarness(t *testing.T, mutate func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, home: t.TempDir(), agents: newFakeAgents(testAgent)}
	opts := DefaultOptions()
	opts.BaseURL = "http://127.0.0.1:4545"
	opts.Agents = h.agents
	opts.Guard = &fakeGuard{blocked: map[string]bool{"10.0.0.1": true}}
	opts.RetryBackoff = kernel.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	opts.PollInterval = 20 * time.Millisecond
	opts.PollMax = 100 * time.Millisecond
	if mutate != nil {
		mutate(&opts)
	}
	h.opts = opts
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	db, vault := storetest.OpenWithVault(h.t, h.home)
	h.db = db
	h.k = kernel.New(zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel))
	opts := h.opts
	opts.Vault = vault
	svc, err := Start(h.k, db, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.svc = svc
}

// stop shuts the actors down and closes the store, as a daemon stop does.
func (h *harness) stop() {
	if h.k != nil {
		kerneltest.Stop(h.k, h.db)
		h.k = nil
	}
}

// restart is a daemon restart on the same store.
func (h *harness) restart() {
	h.stop()
	h.start()
}

func admin() context.Context {
	return context.WithValue(context.Background(), CallerKey, Caller{Name: "api_key", Admin: true})
}

func peer(name string) context.Context {
	return context.WithValue(context.Background(), CallerKey, Caller{Name: "peer:" + name})
}

// eventually polls cond until it holds or the deadline passes.
var eventually = kerneltest.WaitFor
