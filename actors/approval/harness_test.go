package approval

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

// sink records published events. It makes an event durable only when
// someone waits for it: the slowest bus there could be, so a test sees
// whether an answer was given before its event was on disk.
type sink struct {
	mu      sync.Mutex
	events  []string
	durable []bool
}

func (s *sink) PublishDurable(typ, source, target string, detail any) func(context.Context) error {
	rec := detail.(*Event)
	s.mu.Lock()
	i := len(s.events)
	s.events = append(s.events, typ+" "+rec.ID+" "+source+" "+target)
	s.durable = append(s.durable, false)
	s.mu.Unlock()
	return func(context.Context) error {
		s.mu.Lock()
		s.durable[i] = true
		s.mu.Unlock()
		return nil
	}
}

// durableTypes are the types of id's events that are durable by now.
func (s *sink) durableTypes(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for i, e := range s.events {
		if f := strings.Fields(e); f[1] == id && s.durable[i] {
			out = append(out, f[0])
		}
	}
	return out
}

func (s *sink) types(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		f := strings.Fields(e)
		if f[1] == id {
			out = append(out, f[0])
		}
	}
	return out
}

// posts records what would be sent to chats.
type posts struct {
	mu   sync.Mutex
	msgs []string // "<channel>/<chat>: <text>"
}

func (p *posts) Post(_ context.Context, channel, chatID, text string) error {
	p.mu.Lock()
	p.msgs = append(p.msgs, channel+"/"+chatID+": "+text)
	p.mu.Unlock()
	return nil
}

func (p *posts) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs...)
}

type harness struct {
	t      testing.TB
	home   string
	db     *store.DB
	vault  *store.Vault
	k      *kernel.Kernel
	audit  *audit.Log
	a      *Approvals
	policy Policy
	clock  *kerneltest.Clock // nil: real time
	events *sink
	posts  *posts
}

func newHarness(t testing.TB, p Policy, c *kerneltest.Clock) *harness {
	t.Helper()
	h := &harness{t: t, home: t.TempDir(), policy: p, clock: c, events: &sink{}, posts: &posts{}}
	db, vault := storetest.OpenWithVault(t, h.home)
	h.db, h.vault = db, vault
	t.Cleanup(func() { h.stop(); db.Close() })
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	h.k = kernel.New(zerolog.Nop())
	var err error
	if h.audit, err = audit.Start(h.k, h.db, audit.Options{AnchorPath: audit.AnchorPath(h.home)}); err != nil {
		h.t.Fatal(err)
	}
	opts := Options{Policy: h.policy, Events: h.events}
	if h.clock != nil {
		opts.Now = h.clock.Now
	}
	if h.a, err = Start(h.k, h.db, h.vault, h.audit, opts); err != nil {
		h.t.Fatal(err)
	}
	h.a.SetNotifier(h.posts)
}

func (h *harness) stop() {
	if h.k != nil {
		kerneltest.Stop(h.k)
		h.k = nil
	}
}

func (h *harness) restart() { h.stop(); h.start() }

func (h *harness) create(agentID, action string) *Approval {
	h.t.Helper()
	rec, err := h.a.Create(context.Background(), Request{AgentID: agentID, AgentName: "bot-" + agentID, Action: action,
		Description: "wants " + action, Payload: json.RawMessage(`{"path":"/tmp/x"}`), RequestedBy: "api_key"})
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// gate sends a Gate the way an agent does and returns a channel that gets
// the decided record (or an error).
func (h *harness) gate(req Request) <-chan any {
	return kerneltest.Await(h.k.Root.RequestFuture(h.a.PID(), &Gate{Req: req}, time.Minute))
}

func recv(t *testing.T, ch <-chan any) *Approval {
	t.Helper()
	select {
	case v := <-ch:
		rec, ok := v.(*Approval)
		if !ok {
			t.Fatalf("waiter got %v", v)
		}
		return rec
	case <-time.After(20 * time.Second):
		t.Fatal("no decision reached the waiter")
	}
	return nil
}

func api(identity string) Decider {
	return Decider{Identity: identity, Via: ViaAPI, SourceIP: "127.0.0.1"}
}

func kindOf(err error) (kernel.Kind, string) {
	if de := kernel.AsError(err); de != nil {
		return de.Kind, de.Code
	}
	return -1, fmt.Sprint(err)
}

func (h *harness) auditEntries() []audit.Entry {
	rec, err := h.audit.Recent(context.Background(), 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []audit.Entry
	for i := len(rec.Entries) - 1; i >= 0; i-- {
		var e audit.Entry
		json.Unmarshal(rec.Entries[i], &e)
		out = append(out, e)
	}
	return out // oldest first
}

func (h *harness) auditTypes(id string) []string {
	var out []string
	for _, e := range h.auditEntries() {
		if id == "" || strings.Contains(e.Details, id) {
			out = append(out, e.EventType+":"+e.Outcome)
		}
	}
	return out
}

var waitFor = kerneltest.WaitFor

var _ = actor.PID{}
