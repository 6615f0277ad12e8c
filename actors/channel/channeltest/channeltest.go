// Package channeltest is what every channel adapter's tests are built on.
// Model: litestream's RunWithReplicaClient and tailscale's tstest.
//
// The runtime: Harness runs the channels runtime in-process (a kernel, a
// temp store and vault, the channels supervisor with the builders under
// test, a fake agent runtime that answers "echo: <text>", a bus that
// records events), on the wall clock or on a FakeClock.
//
// The conformance suite: Conformance runs the runtime's guarantees against
// one adapter and its fake (inbound reaches the agent and the reply
// arrives; a refused credential is an error with no retry; an outage backs
// off and catches up; queued replies survive a restart; a rate limit's
// wait is honoured; a forged webhook is refused). Every adapter's
// conformance_test.go implements Platform in a few lines and calls it; a
// case an adapter cannot support is named in Suite.Skip with the reason,
// and the suite skips it with that reason. A new adapter starts there.
//
// The fake toolkit: a platform fake embeds FakeState (its lock, change
// notification with Wait and WaitMatch instead of sleeps, per-route request
// counts, and the outage and rate-limit switches behind Gate); a platform
// that is not HTTP sits behind a Proxy, which counts connections and plays
// the outage in front of a real server. A fake writes only what is its
// platform's own: routes, wire formats, error bodies.
//
// Naming rule for fakes: the fake of platform P is the package
// actors/channel/<p>/<p>test (telegramtest, discordtest, gotifytest, ...),
// never <p>fake or testutil; its doc comment names the documented API it
// follows.
package channeltest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

// AgentName and AgentID name the one agent the fake runtime knows.
const (
	AgentName = "my-agent"
	AgentID   = "00000000-0000-4000-8000-000000000001"
)

// Harness is a running channels subsystem.
type Harness struct {
	T        *testing.T
	Dir      string
	Kernel   *kernel.Kernel
	DB       *store.DB
	Vault    *store.Vault
	Service  *channel.Service
	Agents   *Agents
	Bus      *Bus
	builders channel.Builders
	backoff  kernel.Backoff
	env      func(string) string
	net      channel.Network
	clock    kernel.Clock
	cluster  channel.Cluster
}

// Option changes a Harness before it starts.
type Option func(*Harness)

// WithBackoff sets the reconnect backoff (tests use short ones).
func WithBackoff(b kernel.Backoff) Option { return func(h *Harness) { h.backoff = b } }

// WithEnv sets the environment lookup used for config-file secrets.
func WithEnv(env map[string]string) Option {
	return func(h *Harness) { h.env = func(k string) string { return env[k] } }
}

// WithNetwork sets the network policy adapters dial through.
func WithNetwork(n channel.Network) Option { return func(h *Harness) { h.net = n } }

// WithClock sets the clock the runtime paces reconnects and retries by
// (a *FakeClock holds them until the test advances it).
func WithClock(c kernel.Clock) Option { return func(h *Harness) { h.clock = c } }

// WithCluster runs the runtime in cluster mode on cl (channels start only
// when an ApplyCluster round says this node owns them).
func WithCluster(cl channel.Cluster) Option { return func(h *Harness) { h.cluster = cl } }

// FastBackoff reconnects within tens of milliseconds.
var FastBackoff = kernel.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxRetries: 20, Window: time.Minute}

// New starts the runtime with builders in a temp dir; it stops at cleanup.
func New(t *testing.T, builders channel.Builders, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{T: t, Dir: t.TempDir(), Agents: NewAgents(), Bus: &Bus{}, builders: builders, backoff: FastBackoff}
	for _, o := range opts {
		o(h)
	}
	h.start()
	t.Cleanup(h.Stop)
	return h
}

func (h *Harness) start() {
	h.T.Helper()
	db, err := store.Open(store.DefaultOptions(store.DataDir(h.Dir)))
	if err != nil {
		h.T.Fatal(err)
	}
	h.DB = db
	h.T.Setenv(store.VaultKeyEnv, strings.Repeat("ab", 32))
	if h.Vault, err = store.OpenVault(db, h.Dir); err != nil {
		h.T.Fatal(err)
	}
	h.Kernel = kernel.New(zerolog.New(zerolog.NewTestWriter(h.T)).Level(zerolog.WarnLevel))
	h.Service, err = channel.Start(channel.Options{Kernel: h.Kernel, DB: db, Vault: h.Vault, Builders: h.builders,
		Agents: h.Agents, Bus: h.Bus, Backoff: h.backoff, Env: h.env, Network: h.net, Clock: h.clock,
		Clustered: h.cluster != nil})
	if err != nil {
		h.T.Fatal(err)
	}
	if h.cluster != nil {
		h.Service.UseCluster(h.cluster)
	}
}

// Stop shuts the runtime down (idempotent).
func (h *Harness) Stop() {
	if h.Kernel != nil {
		kerneltest.Stop(h.Kernel, h.DB)
		h.Kernel = nil
	}
}

// Restart stops everything and starts again on the same store, as a
// daemon restart does. Everything acknowledged before must survive.
func (h *Harness) Restart() {
	h.Stop()
	h.start()
}

// SendThroughOutage takes the platform down under connected channel name,
// sends text to to while the channel backs off, restarts the daemon and
// brings the platform back, waiting until the channel is connected again.
// The send must be queued and kept across the restart: the caller then
// waits for the platform to have it, exactly once.
func (h *Harness) SendThroughOutage(p interface{ SetDown(bool) }, name, to, text string) {
	h.T.Helper()
	p.SetDown(true)
	h.WaitState(name, channel.StateBackoff)
	if _, err := h.Service.SendMessage(context.Background(), name, to, text, ""); err != nil {
		h.T.Fatal(err)
	}
	h.Restart()
	p.SetDown(false)
	h.WaitState(name, channel.StateConnected)
}

// Configure configures channel name with body (the API's JSON body) and
// fails the test on error.
func (h *Harness) Configure(name string, body map[string]any) *channel.ConfigureResult {
	h.T.Helper()
	res, err := h.TryConfigure(name, body)
	if err != nil {
		h.T.Fatalf("configure %s: %v", name, err)
	}
	return res
}

// Connect configures channel name with body and waits until it is
// connected.
func (h *Harness) Connect(name string, body map[string]any) *channel.View {
	h.T.Helper()
	h.Configure(name, body)
	return h.WaitState(name, channel.StateConnected)
}

// TryConfigure is Configure that returns the error. body goes through
// JSON like an API call's, so numbers arrive as json.Number.
func (h *Harness) TryConfigure(name string, body map[string]any) (*channel.ConfigureResult, error) {
	raw, _ := json.Marshal(body)
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return h.Service.Configure(context.Background(), name, m)
}

// Get returns the channel's view, failing the test on error.
func (h *Harness) Get(name string) *channel.View {
	h.T.Helper()
	v, err := h.Service.Get(context.Background(), name)
	if err != nil {
		h.T.Fatalf("get %s: %v", name, err)
	}
	return v
}

// WaitState waits until channel name reports state.
func (h *Harness) WaitState(name, state string) *channel.View {
	h.T.Helper()
	var v *channel.View
	h.WaitFor(fmt.Sprintf("channel %s to be %s", name, state), func() bool {
		v = h.Get(name)
		return v.State == state
	}, func() string { return fmt.Sprintf("last: %s %q", v.State, v.LastError) })
	return v
}

// WaitFor polls cond until it holds (fails after 15 s). detail, if given,
// describes the last observed state in the failure.
func (h *Harness) WaitFor(what string, cond func() bool, detail ...func() string) {
	h.T.Helper()
	kerneltest.WaitFor(h.T, what, cond, detail...)
}

// Agents is a fake agent runtime: it knows AgentName and answers every
// message with Reply (default "echo: <message>"). Turns are recorded.
type Agents struct {
	mu    sync.Mutex
	turns []Turn
	// Reply makes the answer to a message; it may return an error.
	Reply func(session, message string) (string, error)
}

// Turn is one recorded agent turn.
type Turn struct{ AgentID, Session, Message string }

// NewAgents returns the echoing fake.
func NewAgents() *Agents {
	return &Agents{Reply: func(_, m string) (string, error) { return "echo: " + m, nil }}
}

// Resolve implements channel.Agents.
func (a *Agents) Resolve(_ context.Context, ref string) (string, string, error) {
	if ref == AgentName || ref == AgentID {
		return AgentID, AgentName, nil
	}
	return "", "", kernel.NotFound("agent %q not found", ref)
}

// Turn implements channel.Agents.
func (a *Agents) Turn(_ context.Context, agentID, session, message string) (string, error) {
	a.mu.Lock()
	a.turns = append(a.turns, Turn{AgentID: agentID, Session: session, Message: message})
	reply := a.Reply
	a.mu.Unlock()
	return reply(session, message)
}

// SetReply replaces the reply function.
func (a *Agents) SetReply(fn func(session, message string) (string, error)) {
	a.mu.Lock()
	a.Reply = fn
	a.mu.Unlock()
}

// Turns returns the turns so far.
func (a *Agents) Turns() []Turn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Turn(nil), a.turns...)
}

// Bus records published events.
type Bus struct {
	mu     sync.Mutex
	events []channel.Event
}

// Publish implements channel.Bus.
func (b *Bus) Publish(ev channel.Event) {
	b.mu.Lock()
	b.events = append(b.events, ev)
	b.mu.Unlock()
}

// Events returns the events of type typ ("" for all).
func (b *Bus) Events(typ string) []channel.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []channel.Event
	for _, e := range b.events {
		if typ == "" || e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// Host is a channel.Host for running one adapter without the runtime:
// it passes delivered messages to Delivered and keeps cursors in memory.
type Host struct {
	Connections chan channel.Identity
	Delivered   chan channel.Inbound
	log         zerolog.Logger
	mu          sync.Mutex
	cursors     map[string]string
	degraded    string
}

// NewHost makes a Host with room for a few connections and messages.
func NewHost() *Host {
	return &Host{Connections: make(chan channel.Identity, 4), Delivered: make(chan channel.Inbound, 16),
		log: zerolog.Nop(), cursors: map[string]string{}}
}

// Connected implements channel.Host.
func (h *Host) Connected(id channel.Identity) { h.Connections <- id }

// Deliver implements channel.Host.
func (h *Host) Deliver(ctx context.Context, msgs ...channel.Inbound) error {
	for _, m := range msgs {
		h.Delivered <- m
	}
	return nil
}

// DeliverAndSave implements channel.Host.
func (h *Host) DeliverAndSave(ctx context.Context, cur channel.Cursor, msgs ...channel.Inbound) error {
	if err := h.Deliver(ctx, msgs...); err != nil {
		return err
	}
	return h.SaveCursor(cur.Key, cur.Value)
}

// Alive implements channel.Host.
func (h *Host) Alive() {}

// Degraded records the adapter's last report.
func (h *Host) Degraded(msg string) {
	h.mu.Lock()
	h.degraded = msg
	h.mu.Unlock()
}

// LastDegraded is the adapter's last Degraded report.
func (h *Host) LastDegraded() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.degraded
}

// Cursor implements channel.Host.
func (h *Host) Cursor(k string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cursors[k], nil
}

// SaveCursor implements channel.Host.
func (h *Host) SaveCursor(k, v string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cursors[k] = v
	return nil
}

// Log implements channel.Host.
func (h *Host) Log() *zerolog.Logger { return &h.log }

// WebhookURL serves the runtime's webhook entry at /channels/<name>/webhook
// the way the HTTP layer does (status from the error kind), so that a
// platform fake posts real HTTP, and returns that URL for channel name.
func (h *Harness) WebhookURL(name string) string {
	t := h.T
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/channels/"), "/webhook")
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		resp, err := h.Service.Webhook(r.Context(), name, &channel.WebhookRequest{Method: r.Method, Query: r.URL.Query(),
			Header: r.Header, Body: body, RemoteIP: "127.0.0.1"})
		if err != nil {
			status := http.StatusBadRequest
			if e := kernel.AsError(err); e != nil {
				switch e.Kind {
				case kernel.KindUnauthorized:
					status = http.StatusUnauthorized
				case kernel.KindNotFound:
					status = http.StatusNotFound
				case kernel.KindUnavailable:
					status = http.StatusServiceUnavailable
				}
			}
			http.Error(w, err.Error(), status)
			return
		}
		if resp == nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "{}")
			return
		}
		w.Header().Set("Content-Type", resp.ContentType)
		w.WriteHeader(resp.Status)
		_, _ = w.Write(resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/channels/" + name + "/webhook"
}

// Recv takes the next value from ch (what a Host reports), failing t after
// 10 s.
func Recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the adapter")
	}
	var zero T
	return zero
}

// Run starts a.Run against h in the background, as the runtime would;
// cancel ends it and done takes what Run returned.
func Run(a channel.Adapter, h *Host) (cancel context.CancelFunc, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan error, 1)
	go func() { d <- a.Run(ctx, h) }()
	return cancel, d
}

// RunConnected is Run against a new Host, cancelled when the test ends,
// that waits for the adapter to connect; done gets Run's result.
func RunConnected(t testing.TB, a channel.Adapter) (h *Host, done <-chan error) {
	t.Helper()
	h = NewHost()
	stop, done := Run(a, h)
	t.Cleanup(stop)
	Recv(t, h.Connections)
	return h, done
}

// Rerun runs a against h again (after an Outage, once the platform is
// back), cancelled when the test ends, and waits for it to connect.
func Rerun(t testing.TB, a channel.Adapter, h *Host) {
	t.Helper()
	stop, _ := Run(a, h)
	t.Cleanup(stop)
	Recv(t, h.Connections)
}

// Outage takes the platform down (goDown) under a running adapter whose
// Run reports to done: Run must end with a transient error, and a new Run
// against h must fail transiently too while it stays down.
func Outage(t testing.TB, a channel.Adapter, h *Host, done <-chan error, goDown func()) {
	t.Helper()
	goDown()
	if err := Recv(t, done); err == nil || channel.IsPermanent(err) {
		t.Fatalf("Run during an outage = %v, want a transient error", err)
	}
	if err := a.Run(context.Background(), h); err == nil || channel.IsPermanent(err) {
		t.Fatalf("reconnect during an outage = %v, want a transient error", err)
	}
}

// Build builds adapter name with its registered spec, as the runtime
// would, from values and secrets, for tests that drive it without the
// runtime (with a Host); it fails t on error.
func Build(t testing.TB, b channel.Builder, name string, values, secrets map[string]string) channel.Adapter {
	t.Helper()
	spec, _ := channel.Lookup(name)
	a, err := b(&channel.Config{Name: name, Adapter: name, Spec: spec, Values: values, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// WriteJSON is a fake platform's JSON answer: status and v as
// application/json.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
