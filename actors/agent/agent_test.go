package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/llm/llmtest"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

const key = "sk-agent-test-key-0001"

type harness struct {
	t      *testing.T
	home   string
	db     *store.DB
	k      *kernel.Kernel
	audit  *audit.Log
	meter  *usage.Meter
	agents *Agents
	fake   *llmtest.Fake
	reg    *llm.Registry
	// Set by newToolHarness: a toolbox, and approvals gating it.
	tools     *fakeTools
	toolbox   Toolbox // used instead of tools when set
	policy    *approval.Policy
	vault     *store.Vault
	approvals *approval.Approvals
	// anthropicAPI makes the fake provider Anthropic's API.
	anthropicAPI bool
	// maxSessions overrides Options.MaxSessions when set.
	maxSessions int
	// maxAgents overrides Options.MaxAgents when set.
	maxAgents int

	mu     sync.Mutex
	events []any
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, &harness{t: t, home: t.TempDir(), fake: llmtest.NewOpenAI(key)})
}

func newHarnessWith(t *testing.T, h *harness) *harness {
	t.Helper()
	t.Cleanup(h.fake.Close)
	db := storetest.Open(t, h.home)
	h.db = db
	t.Cleanup(func() { h.stop(); db.Close() })
	h.start()
	return h
}

func (h *harness) start() {
	t := h.t
	h.k = kernel.New(zerolog.Nop())
	h.k.System.EventStream.Subscribe(func(e any) {
		switch e.(type) {
		case *AgentSpawned, *AgentTerminated, *AgentMessage:
			h.mu.Lock()
			h.events = append(h.events, e)
			h.mu.Unlock()
		}
	})
	var err error
	if h.audit, err = audit.Start(h.k, h.db, audit.Options{AnchorPath: audit.AnchorPath(h.home)}); err != nil {
		t.Fatal(err)
	}
	h.reg, err = llm.NewRegistry(llm.Options{
		Providers: map[string]llm.ProviderConfig{"fake": {API: h.api(), BaseURL: h.fake.BaseURL, APIKeyEnv: "FAKE_KEY"}},
		Models:    []llm.ModelConfig{{Provider: "fake", ID: "m", InputPerM: f64(1), OutputPerM: f64(2), ContextWindow: 100_000}},
		Metrics:   prometheus.NewRegistry(), Timeout: 10 * time.Second,
		Getenv: func(string) string { return key }})
	if err != nil {
		t.Fatal(err)
	}
	if h.meter, err = usage.Start(h.k, h.db, h.audit, usage.Options{}); err != nil {
		t.Fatal(err)
	}
	opts := Options{QueuePerSession: 2, MaxSessions: h.maxSessions, MaxAgents: h.maxAgents}
	if h.tools != nil {
		opts.Tools = h.tools
	}
	if h.toolbox != nil {
		opts.Tools = h.toolbox
	}
	if h.policy != nil {
		if h.vault == nil {
			if h.vault, err = store.OpenVault(h.db, h.home); err != nil {
				t.Fatal(err)
			}
		}
		if h.approvals, err = approval.Start(h.k, h.db, h.vault, h.audit, approval.Options{Policy: *h.policy}); err != nil {
			t.Fatal(err)
		}
		opts.Gate = h.approvals
	}
	if h.agents, err = Start(h.k, h.db, h.audit, h.reg, h.meter, opts); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) stop() {
	if h.k != nil {
		kerneltest.Stop(h.k)
		h.k = nil
	}
}

func f64(v float64) *float64 { return &v }

func (h *harness) create(name string) *Agent {
	h.t.Helper()
	a, err := h.agents.Create(context.Background(), Spec{Name: name, Model: "fake/m", SystemPrompt: "you are " + name}, Who{Actor: "test"})
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

func (h *harness) auditTypes() []string {
	rec, err := h.audit.Recent(context.Background(), 500)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, raw := range rec.Entries {
		var e audit.Entry
		json.Unmarshal(raw, &e)
		out = append(out, e.EventType+":"+e.Outcome)
	}
	return out
}

var waitFor = kerneltest.WaitFor

// sawMessage reports whether the fake provider received a request whose
// last message is text.
func (h *harness) sawMessage(text string) bool {
	for _, r := range h.fake.Requests() {
		if r.Messages[len(r.Messages)-1].Content == text {
			return true
		}
	}
	return false
}

func code(err error) string {
	if de := kernel.AsError(err); de != nil {
		return de.Code
	}
	return ""
}

func TestAgentLifecycleAndLookup(t *testing.T) {
	h := newHarness(t)
	a := h.create("coder")
	if a.MaxTokens != DefaultMaxTokens || a.Provider != "fake" || a.ModelID != "m" || a.State != "running" || len(a.ID) != 36 {
		t.Fatalf("created %+v", a)
	}
	if _, err := h.agents.Create(context.Background(), Spec{Name: "CODER", Model: "fake/m"}, Who{}); code(err) != "agent_name_taken" {
		t.Fatalf("duplicate name (case-insensitive): %v", err)
	}
	for _, bad := range []Spec{
		{Name: "x", Model: "nosuch/m"}, {Name: "x", Model: "no-prefix"}, {Name: "has space", Model: "fake/m"},
		{Name: a.ID, Model: "fake/m"}, {Name: "x", Model: "fake/m", MaxTokens: new(int)},
		{Name: "x", Model: "fake/m", Tools: []string{"bad tool"}},
	} {
		if _, err := h.agents.Create(context.Background(), bad, Who{}); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	byName, err := h.agents.Get(context.Background(), Ref{Name: "Coder"})
	if err != nil || byName.ID != a.ID {
		t.Fatalf("by name: %+v %v", byName, err)
	}
	name2, desc := "coder2", "writes code"
	up, err := h.agents.Update(context.Background(), Ref{ID: a.ID}, Patch{Name: &name2, Description: &desc}, Who{})
	if err != nil || up.Name != "coder2" || up.Description != desc || !up.UpdatedAt.After(a.CreatedAt) {
		t.Fatalf("update %+v %v", up, err)
	}
	if _, err := h.agents.Get(context.Background(), Ref{Name: "coder"}); code(err) != "agent_not_found" {
		t.Fatalf("old name still resolves: %v", err)
	}
	h.create("coder") // the old name is free again
	list, _ := h.agents.List(context.Background())
	if len(list) != 2 || list[0].ID != a.ID {
		t.Fatalf("list %+v", list)
	}
	if _, err := h.agents.Delete(context.Background(), Ref{Name: "coder2"}, Who{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.agents.Get(context.Background(), Ref{ID: a.ID}); code(err) != "agent_not_found" {
		t.Fatalf("deleted agent: %v", err)
	}
	types := strings.Join(h.auditTypes(), " ")
	if strings.Count(types, "agent_spawned:ok") != 2 || strings.Count(types, "agent_terminated:ok") != 1 {
		t.Fatalf("audit %s", types)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) != 3 {
		t.Fatalf("events %+v", h.events)
	}
	if sp, ok := h.events[0].(*AgentSpawned); !ok || sp.AgentID != a.ID || sp.Kind() != "agent_spawned" {
		t.Fatalf("first event %+v", h.events[0])
	}
}

func TestTurnsKeepHistoryPerSessionAndSurviveRestart(t *testing.T) {
	h := newHarness(t)
	a := h.create("chat")
	r1, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "first", From: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Response != "echo: first" || r1.SessionID != a.DefaultSessionID || r1.InputTokens == 0 || r1.CostUSD <= 0 {
		t.Fatalf("turn %+v", r1)
	}
	other := "5f8e7f5e-8a39-4a4a-9f5e-1f2b3c4d5e6f"
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{Name: "chat"}, Text: "elsewhere", SessionID: other}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h.start()
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "second"}); err != nil {
		t.Fatal(err)
	}
	reqs := h.fake.Requests()
	last := reqs[len(reqs)-1]
	if last.System != "you are chat" || len(last.Messages) != 3 || last.Messages[0].Content != "first" ||
		last.Messages[1].Content != "echo: first" || last.Messages[2].Content != "second" {
		t.Fatalf("after restart the default session's history must be sent: %+v", last.Messages)
	}
	if reqs[1].Messages[0].Content != "elsewhere" || len(reqs[1].Messages) != 1 {
		t.Fatalf("another session starts empty: %+v", reqs[1].Messages)
	}
	rep, _ := h.meter.Usage(context.Background(), "day")
	if rep.RequestCount != 3 || rep.ActiveAgents != 1 {
		t.Fatalf("usage %+v", rep)
	}
	if n := strings.Count(strings.Join(h.auditTypes(), " "), "agent_message:ok"); n != 3 {
		t.Fatalf("%d agent_message entries", n)
	}
}

// An agent keeps maxCachedHistories histories in memory: with more
// sessions than that, each session's second turn still builds on its
// first (read back from the store once memory forgot it). A session
// forgotten to make room for a newer one starts empty, also after a
// restart, while the others keep their history.
func TestHistoriesOutliveTheMemoryCacheAndForgottenSessionsStayGone(t *testing.T) {
	n := maxCachedHistories + 8
	h := newHarnessWith(t, &harness{t: t, home: t.TempDir(), fake: llmtest.NewOpenAI(key), maxSessions: n})
	a := h.create("many")
	sid := func(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }
	send := func(i int, text string) {
		t.Helper()
		if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: text, SessionID: sid(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sent := func(text string) []llmtest.Message {
		t.Helper()
		for _, r := range h.fake.Requests() {
			if m := r.Messages; len(m) > 0 && m[len(m)-1].Content == text {
				return m
			}
		}
		t.Fatalf("no provider request ended with %q", text)
		return nil
	}
	for round := 1; round <= 2; round++ {
		for i := range n {
			send(i, fmt.Sprintf("r%d-s%d", round, i))
			// The answer came, so the history is on disk.
			stored, err := sessionCollection(h.db, a.ID).Get(sid(i))
			if err != nil || len(stored.Messages) != 2*round {
				t.Fatalf("answered before session %d's history was stored: %+v %v", i, stored, err)
			}
		}
	}
	for i := range n {
		m := sent(fmt.Sprintf("r2-s%d", i))
		if len(m) != 3 || m[0].Content != fmt.Sprintf("r1-s%d", i) || m[1].Content != fmt.Sprintf("echo: r1-s%d", i) {
			t.Fatalf("session %d lost its history: %+v", i, m)
		}
	}
	send(n, "newest") // session 0 is the least recently used: forgotten
	h.stop()
	h.start()
	send(0, "back")
	if m := sent("back"); len(m) != 1 {
		t.Fatalf("a forgotten session must start empty: %+v", m)
	}
	// Session 0 coming back took session 1's place; session 2 is kept.
	send(2, "still here")
	if m := sent("still here"); len(m) != 5 || m[2].Content != "r2-s2" {
		t.Fatalf("a kept session must keep its history across a restart: %+v", m)
	}
}

// Two messages to one session run one after the other (the second sees
// the first's exchange); messages to other sessions run at the same time,
// so a slow provider never blocks the agent.
func TestSessionsSerialiseButDoNotBlockEachOther(t *testing.T) {
	h := newHarness(t)
	a := h.create("par")
	release := make(chan struct{})
	h.fake.SetReply(func(r llmtest.Request) string {
		last := r.Messages[len(r.Messages)-1].Content
		switch last {
		case "slow":
			select { // held until another session's call reaches the provider
			case <-release:
			case <-time.After(10 * time.Second):
				return "timed out waiting for a concurrent call"
			}
		case "other":
			close(release)
		}
		return "re:" + last
	})
	var wg sync.WaitGroup
	results := make(map[string]*TurnResult)
	var mu sync.Mutex
	send := func(text, session string) {
		defer wg.Done()
		r, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: text, SessionID: session})
		if err != nil {
			t.Error(text, err)
			return
		}
		mu.Lock()
		results[text] = r
		mu.Unlock()
	}
	wg.Add(1)
	go send("slow", "")
	waitFor(t, "the slow call to reach the provider", func() bool { return h.sawMessage("slow") })
	wg.Add(2)
	go send("queued", "")
	go send("other", "00000000-0000-4000-8000-000000000001")
	wg.Wait()
	if results["slow"].Response != "re:slow" {
		t.Fatalf("slow: %+v (the other session's call never ran concurrently)", results["slow"])
	}
	var queued llmtest.Request
	for _, r := range h.fake.Requests() {
		if r.Messages[len(r.Messages)-1].Content == "queued" {
			queued = r
		}
	}
	if len(queued.Messages) != 3 || queued.Messages[1].Content != "re:slow" {
		t.Fatalf("the queued message must see the slow exchange: %+v", queued.Messages)
	}
}

func TestQueueBoundAndBudgetRefusal(t *testing.T) {
	h := newHarness(t)
	a := h.create("busy")
	release := make(chan struct{})
	h.fake.SetReply(func(r llmtest.Request) string {
		<-release
		return "done"
	})
	errs := make(chan error, 6)
	go func() {
		_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "first"})
		errs <- err
	}()
	waitFor(t, "the first call to reach the provider", func() bool { return h.sawMessage("first") })
	for i := 0; i < 5; i++ {
		go func() {
			_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "more"})
			errs <- err
		}()
	}
	busy := 0
	for busy < 3 { // two wait behind the first, three are refused at once
		err := <-errs
		if code(err) != "session_busy" {
			t.Fatalf("while the session is busy: %v", err)
		}
		busy++
	}
	close(release)
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	tiny := 1e-9
	if _, err := h.meter.SetAgentBudget(context.Background(), usage.SetAgentBudget{AgentID: a.ID, DailyLimitUSD: &tiny}); err != nil {
		t.Fatal(err)
	}
	before := len(h.fake.Requests())
	_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "hi"})
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindPaymentRequired || de.Code != "budget_exceeded" {
		t.Fatalf("over budget: %v", err)
	}
	if len(h.fake.Requests()) != before {
		t.Fatal("a refused call reached the provider")
	}
	if !strings.Contains(strings.Join(h.auditTypes(), " "), "agent_message:denied") {
		t.Fatal("the refused turn is not audited as denied")
	}
}

func TestDeleteDuringTurnAnswersCallerAndRemovesSessions(t *testing.T) {
	h := newHarness(t)
	a := h.create("gone")
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "keep me"}); err != nil {
		t.Fatal(err)
	}
	h.fake.SetLatency(2 * time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "in flight"})
		done <- err
	}()
	waitFor(t, "the call to reach the provider", func() bool { return h.sawMessage("in flight") })
	if _, err := h.agents.Delete(context.Background(), Ref{ID: a.ID}, Who{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; code(err) != "agent_deleted" {
		t.Fatalf("the waiting caller got %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		sessionCollection(h.db, a.ID).Each(func(string, history) bool { n++; return true })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions left after delete", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHistoryTrimAndContextWindow(t *testing.T) {
	msgs := []llm.Message{}
	for i := 0; i < 10; i++ {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: strings.Repeat("u", 100)}, llm.Message{Role: llm.RoleAssistant, Content: "a"})
	}
	if got := trimHistory(msgs, 6, 1_000_000); len(got) != 6 || got[0].Role != llm.RoleUser {
		t.Fatalf("message bound: %d", len(got))
	}
	if got := trimHistory(msgs, 100, 250); len(got) != 4 {
		t.Fatalf("char bound: %d", len(got))
	}
	route := llm.Route{Pricing: llm.Pricing{ContextWindow: 200}}
	req := buildRequest(Manifest{MaxTokens: 50}, route, msgs, "new")
	if len(req.Messages) >= 21 || req.Messages[len(req.Messages)-1].Content != "new" || req.Messages[0].Role != llm.RoleUser {
		t.Fatalf("context trimming kept %d messages", len(req.Messages))
	}
}

func TestRefsAndMessages(t *testing.T) {
	if r, err := ParseRef("5F8E7F5E-8A39-4A4A-9F5E-1F2B3C4D5E6F"); err != nil || r.ID != "5f8e7f5e-8a39-4a4a-9f5e-1f2b3c4d5e6f" {
		t.Fatalf("uuid ref %+v %v", r, err)
	}
	if r, _ := ParseRef("coder"); r.Name != "coder" {
		t.Fatal("name ref")
	}
	for _, bad := range []string{"", "a b", "../etc", strings.Repeat("x", 65), "-x"} {
		if _, err := ParseRef(bad); code(err) != "invalid_agent_id" {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if err := CheckMessage("  \n"); code(err) != "empty_message" {
		t.Fatal(err)
	}
	if err := CheckMessage(strings.Repeat("é", MaxMessageChars)); err != nil {
		t.Fatal(err)
	}
	if err := CheckMessage(strings.Repeat("é", MaxMessageChars+1)); kernel.AsError(err).Kind != kernel.KindTooLarge {
		t.Fatal(err)
	}
	if _, err := ParseSessionID("not-a-uuid"); code(err) != "invalid_session_id" {
		t.Fatal(err)
	}
}

// A crashed agent restarts with its latest manifest (not the one it was
// first spawned with) and its sessions.
func TestRestartedAgentUsesLatestManifest(t *testing.T) {
	h := newHarness(t)
	a := h.create("phoenix")
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "before"}); err != nil {
		t.Fatal(err)
	}
	prompt := "you are reborn"
	if _, err := h.agents.Update(context.Background(), Ref{ID: a.ID}, Patch{SystemPrompt: &prompt}, Who{}); err != nil {
		t.Fatal(err)
	}
	proc, ok := h.k.System.ProcessRegistry.GetLocal("agents/agent/" + a.ID)
	if !ok {
		t.Fatal("no agent actor")
	}
	proc.SendSystemMessage(nil, &actor.Restart{})
	if _, err := h.agents.Send(context.Background(), Send{Ref: Ref{ID: a.ID}, Text: "after"}); err != nil {
		t.Fatal(err)
	}
	reqs := h.fake.Requests()
	last := reqs[len(reqs)-1]
	if last.System != prompt || len(last.Messages) != 3 {
		t.Fatalf("after a restart: system %q, %d messages", last.System, len(last.Messages))
	}
}
