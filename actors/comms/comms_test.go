package comms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
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

type harness struct {
	db  *store.DB
	k   *kernel.Kernel
	bus *Bus
}

func startBus(t testing.TB, home string, opts BusOptions) *harness {
	t.Helper()
	db := storetest.Open(t, home)
	k := kernel.New(zerolog.Nop())
	b, err := Start(k, db, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{db: db, k: k, bus: b}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.db != nil {
		kerneltest.Stop(h.k, h.db)
		h.db = nil
	}
}

func publishN(t *testing.T, b *Bus, n int, typ string) uint64 {
	t.Helper()
	for i := 0; i < n-1; i++ {
		b.Publish(typ, "system", "", map[string]int{"i": i})
	}
	id, err := b.PublishSync(context.Background(), typ, "system", "", map[string]int{"i": n - 1})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func decode(t *testing.T, r *Record) Event {
	t.Helper()
	var e Event
	if err := json.Unmarshal(r.JSON, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestQueryNewestFirstWithFilters(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	publishN(t, h.bus, 5, "agent.spawned")
	last := publishN(t, h.bus, 5, "hook.wake")
	if last != 10 {
		t.Fatalf("last id %d, want 10", last)
	}
	r, err := h.bus.Query(context.Background(), Query{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 3 || r.Events[0].ID != 10 || r.Events[2].ID != 8 {
		t.Fatalf("newest first: got %v", ids(r.Events))
	}
	r, _ = h.bus.Query(context.Background(), Query{Limit: 100, Type: "agent.*"})
	if len(r.Events) != 5 || r.Events[0].ID != 5 {
		t.Fatalf("prefix filter: %v", ids(r.Events))
	}
	r, _ = h.bus.Query(context.Background(), Query{Limit: 100, Type: "hook.wake", SinceID: 8})
	if got := ids(r.Events); fmt.Sprint(got) != "[10 9]" {
		t.Fatalf("since_id: %v", got)
	}
	e := decode(t, r.Events[0])
	if e.Type != "hook.wake" || e.Source != "system" || string(e.Detail) != `{"i":4}` || e.Timestamp == "" {
		t.Fatalf("event %+v", e)
	}
}

func ids(rs []*Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func TestLogIsBoundedAndSurvivesRestart(t *testing.T) {
	home := t.TempDir()
	h := startBus(t, home, BusOptions{LogSize: 50})
	publishN(t, h.bus, 120, "hook.wake")
	h.stop()

	h = startBus(t, home, BusOptions{LogSize: 50})
	r, err := h.bus.Query(context.Background(), Query{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 50 || r.Events[0].ID != 120 || r.Events[49].ID != 71 || r.Oldest != 71 {
		t.Fatalf("after restart: %d events, newest %d, oldest %d", len(r.Events), r.Events[0].ID, r.Oldest)
	}
	// Ids continue after a restart: a resuming client never sees one reused.
	if id := publishN(t, h.bus, 1, "hook.wake"); id != 121 {
		t.Fatalf("next id %d, want 121", id)
	}
	// The store holds no more than the log size.
	n := 0
	h.bus.log.Scan(0, false, func(uint64, []byte) (bool, error) { n++; return true, nil })
	if n != 50 {
		t.Fatalf("store holds %d events, want 50", n)
	}
}

func TestSubscribeReplaysThenGoesLive(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{LogSize: 20})
	publishN(t, h.bus, 30, "hook.wake")

	r, err := h.bus.Subscribe(context.Background(), Subscribe{Resume: true, After: 25, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Gap != nil || fmt.Sprint(ids(r.Replay)) != "[26 27 28 29 30]" {
		t.Fatalf("replay %v gap %+v", ids(r.Replay), r.Gap)
	}
	publishN(t, h.bus, 2, "hook.wake")
	for want := uint64(31); want <= 32; want++ {
		if got := (<-r.Sub.Events()).ID; got != want {
			t.Fatalf("live event %d, want %d", got, want)
		}
	}
	r.Sub.Close()

	// A resume point older than the log is announced as a gap.
	r, _ = h.bus.Subscribe(context.Background(), Subscribe{Resume: true, After: 3, Key: "k"})
	if r.Gap == nil || r.Gap.Reason != "trimmed" || r.Gap.Missed != 9 || r.Gap.OldestAvailable != 13 || len(r.Replay) != 20 {
		t.Fatalf("gap %+v replay %d", r.Gap, len(r.Replay))
	}
	r.Sub.Close()
	// A resume point ahead of the log (another daemon's id) too.
	r, _ = h.bus.Subscribe(context.Background(), Subscribe{Resume: true, After: 999, Key: "k"})
	if r.Gap == nil || r.Gap.Reason != "unknown_id" || len(r.Replay) != 0 {
		t.Fatalf("gap %+v", r.Gap)
	}
	r.Sub.Close()
	// Filters apply to replay and live events.
	r, _ = h.bus.Subscribe(context.Background(), Subscribe{Resume: true, After: 30, Type: "agent.*", Key: "k"})
	h.bus.Publish("hook.wake", "system", "", nil)
	publishN(t, h.bus, 1, "agent.spawned")
	if e := <-r.Sub.Events(); e.Type != "agent.spawned" {
		t.Fatalf("filter let through %s", e.Type)
	}
	r.Sub.Close()
}

func TestSlowSubscriberIsCutAndBusGoesOn(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	slow, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "slow", Buffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	fast, _ := h.bus.Subscribe(context.Background(), Subscribe{Key: "fast", Buffer: 1000})
	var got []uint64
	done := make(chan struct{})
	go func() {
		for r := range fast.Sub.Events() {
			got = append(got, r.ID)
			if r.ID == 100 {
				close(done)
				return
			}
		}
	}()
	publishN(t, h.bus, 100, "hook.wake")
	<-done
	n := 0
	for range slow.Sub.Events() {
		n++
	}
	if !slow.Sub.Cut() || n != 4 {
		t.Fatalf("slow subscriber: cut=%v after %d events", slow.Sub.Cut(), n)
	}
	if len(got) != 100 {
		t.Fatalf("fast subscriber got %d", len(got))
	}
	fast.Sub.Close()
}

func TestStreamCapPerKey(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{MaxStreamsPerKey: 2})
	a, _ := h.bus.Subscribe(context.Background(), Subscribe{Key: "alice"})
	h.bus.Subscribe(context.Background(), Subscribe{Key: "alice"})
	_, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "alice"})
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindRateLimited || de.Code != "comms_stream_limit" {
		t.Fatalf("third stream: %v", err)
	}
	if _, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "bob"}); err != nil {
		t.Fatalf("other key refused: %v", err)
	}
	a.Sub.Close()
	// The close is processed before the next subscribe (same mailbox).
	if _, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "alice"}); err != nil {
		t.Fatalf("after close: %v", err)
	}
}

// The per-key cap alone let every credential (and every loopback
// address) hold 64 buffered subscriptions: there is a daemon-wide cap.
func TestStreamCapDaemonWide(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{MaxStreamsPerKey: 2, MaxStreams: 3})
	a, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"bob", "carol"} {
		if _, err := h.bus.Subscribe(context.Background(), Subscribe{Key: k}); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	_, err = h.bus.Subscribe(context.Background(), Subscribe{Key: "dave"})
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindRateLimited || de.Code != "comms_stream_limit" {
		t.Fatalf("fourth stream: %v", err)
	}
	a.Sub.Close()
	if _, err := h.bus.Subscribe(context.Background(), Subscribe{Key: "dave"}); err != nil {
		t.Fatalf("after close: %v", err)
	}
}

func TestNormalizeFilter(t *testing.T) {
	for in, want := range map[string]string{"*": "*", "agent.*": "agent.*", "agent.spawned": "agent.spawned",
		"agent_spawned": "agent.spawned", "all": "*", "webhook.*": "webhook.*", "channel.message.*": "channel.message.*"} {
		got, err := NormalizeFilter(in)
		if err != nil || got != want {
			t.Errorf("NormalizeFilter(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "agent.spwned", "nope.*", "agent..*", "a b", "*.x"} {
		if _, err := NormalizeFilter(bad); err == nil {
			t.Errorf("NormalizeFilter(%q) accepted", bad)
		}
	}
	if !Match("agent.*", "agent.spawned") || Match("agent.*", "agents.x") || !Match("*", "x") || Match("a.b", "a.c") {
		t.Fatal("Match")
	}
}

// --- router ---

type fakeAgents struct {
	mu     sync.Mutex
	agents []Agent
	turns  []string
	fail   error
	block  chan struct{}
}

func (f *fakeAgents) Resolve(_ context.Context, ref string) (*Agent, error) {
	for i := range f.agents {
		if f.agents[i].ID == ref || f.agents[i].Name == ref {
			a := f.agents[i]
			return &a, nil
		}
	}
	return nil, kernel.NotFound("agent %s not found", ref)
}

func (f *fakeAgents) List(context.Context) ([]Agent, error) {
	return append([]Agent(nil), f.agents...), nil
}

func (f *fakeAgents) Turn(ctx context.Context, id, _, msg string) (*TurnResult, error) {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	f.turns = append(f.turns, id+"|"+msg)
	f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	return &TurnResult{Response: "echo: " + msg, InputTokens: len(msg), OutputTokens: 3, CostUSD: 0.001}, nil
}

func (f *fakeAgents) turnList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.turns...)
}

func team() *fakeAgents {
	return &fakeAgents{agents: []Agent{
		{ID: "a1", Name: "coder", Description: "writes and reviews Go code", Tags: []string{"code", "review"}, State: "running"},
		{ID: "a2", Name: "writer", Description: "drafts documentation and blog posts", Tags: []string{"docs"}, State: "running"},
		{ID: "a3", Name: "ops", Description: "deploys services and watches alerts", Tags: []string{"deploy", "oncall"}, State: "running"},
	}}
}

func startRouter(t *testing.T, h *harness, opts RouterOptions) *Router {
	t.Helper()
	opts.Bus = h.bus
	r, err := StartRouter(h.k, h.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSendToAgentRunsATurnAndRecordsTheRoute(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	agents := team()
	r := startRouter(t, h, RouterOptions{Agents: agents, LoopMaxBounces: 8})
	ctx := context.Background()
	res, err := r.Send(ctx, "", "agent:coder", "Please review the latest PR")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "delivered" || *res.Response != "echo: Please review the latest PR" || res.AgentID != "a1" || !strings.HasPrefix(res.MessageID, "msg-") {
		t.Fatalf("result %+v", res)
	}
	if _, err := r.Send(ctx, "agent:writer", "agent:a1", "hi"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ to, content, code string }{
		{"agent:ghost", "x", "not_found"},
		{"robot:x", "x", "invalid_input"},
		{"agent:coder", "  ", "invalid_input"},
		{"channel:telegram:42", "x", "not_found"},
		{"channel:telegram", "x", "invalid_input"},
		{"agent:coder", strings.Repeat("x", MaxMessageChars+1), "message_too_large"},
	} {
		_, err := r.Send(ctx, "", bad.to, bad.content)
		if de := kernel.AsError(err); de == nil || de.Code != bad.code {
			t.Errorf("send to %s: %v, want %s", bad.to, err, bad.code)
		}
	}
	if _, err := r.Send(ctx, "agent:ghost", "agent:coder", "x"); kernel.AsError(err) == nil {
		t.Fatal("unknown sender agent accepted")
	}
	// Wait for the delivered events, then check topology edges.
	kerneltest.WaitFor(t, "condition", func() bool {
		q, _ := h.bus.Query(context.Background(), Query{Limit: 100, Type: "message.delivered"})
		return len(q.Events) == 2
	})
	topo, err := r.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"system->agent:a1/agent_message": 1, "agent:a2->agent:a1/agent_message": 1}
	if len(topo.Edges) != 2 {
		t.Fatalf("edges %+v", topo.Edges)
	}
	for _, e := range topo.Edges {
		if want[e.From+"->"+e.To+"/"+e.Kind] != e.Messages {
			t.Fatalf("edge %+v", e)
		}
	}
	kinds := map[string]int{}
	for _, n := range topo.Nodes {
		kinds[n.Kind]++
	}
	if kinds["agent"] != 3 || kinds["external"] != 1 {
		t.Fatalf("nodes %+v", topo.Nodes)
	}
	if len(agents.turnList()) != 2 {
		t.Fatalf("turns %v", agents.turnList())
	}
}

func TestLoopGuardBlocksBouncingAgents(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	agents := team()
	r := startRouter(t, h, RouterOptions{Agents: agents, LoopMaxBounces: 4, LoopWindow: time.Hour})
	ctx := context.Background()
	pairs := [][2]string{{"agent:coder", "agent:writer"}, {"agent:writer", "agent:coder"}}
	for i := range 4 {
		p := pairs[i%2]
		if _, err := r.Send(ctx, p[0], p[1], fmt.Sprint("bounce ", i)); err != nil {
			t.Fatalf("bounce %d: %v", i, err)
		}
	}
	_, err := r.Send(ctx, "agent:coder", "agent:writer", "one more")
	if de := kernel.AsError(err); de == nil || de.Code != "loop_blocked" || de.Kind != kernel.KindRateLimited {
		t.Fatalf("5th bounce: %v", err)
	}
	if n := len(agents.turnList()); n != 4 {
		t.Fatalf("blocked message still ran a turn: %d turns", n)
	}
	// Other pairs and non-agent senders are not affected.
	if _, err := r.Send(ctx, "agent:coder", "agent:ops", "hi"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Send(ctx, "system", "agent:writer", "hi"); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		q, _ := h.bus.Query(context.Background(), Query{Limit: 10, Type: "loop.blocked"})
		return len(q.Events) == 1 && q.Events[0].Source == "agent:a1" && q.Events[0].Target == "agent:a2"
	})
	if h.k.Security.Status()["loop_guard"] != kernel.StateActive {
		t.Fatal("loop_guard not active")
	}
}

func TestLoopGuardOffIsInactive(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	startRouter(t, h, RouterOptions{Agents: team(), LoopMaxBounces: 0})
	if h.k.Security.Status()["loop_guard"] != kernel.StateInactive {
		t.Fatal("loop_guard active while off")
	}
}

func TestTaskRoutingExplainsItsChoice(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	agents := team()
	r := startRouter(t, h, RouterOptions{Agents: agents})
	ctx := context.Background()

	task, err := r.Dispatch(ctx, DispatchTask{Title: "Deploy the new release", Description: "roll out to production and watch alerts"})
	if err != nil {
		t.Fatal(err)
	}
	if task.AssignedTo != "a3" || task.Status != TaskRunning || !strings.Contains(task.Reason, "deploy") {
		t.Fatalf("task %+v", task)
	}
	task2, err := r.Dispatch(ctx, DispatchTask{Title: "Look at this", Tags: []string{"review"}})
	if err != nil || task2.AssignedTo != "a1" || !strings.Contains(task2.Reason, "tags review") {
		t.Fatalf("tag routing: %+v %v", task2, err)
	}
	task3, err := r.Dispatch(ctx, DispatchTask{Title: "Anything", AssignTo: "writer"})
	if err != nil || task3.AssignedTo != "a2" || task3.Reason != "assigned explicitly (assign_to)" {
		t.Fatalf("explicit: %+v %v", task3, err)
	}
	if _, err := r.Dispatch(ctx, DispatchTask{Title: "zzz qqq"}); kernel.AsError(err).Code != "no_matching_agent" {
		t.Fatalf("no match: %v", err)
	}
	if _, err := r.Dispatch(ctx, DispatchTask{Title: " "}); kernel.AsError(err).Code != "invalid_input" {
		t.Fatalf("empty title: %v", err)
	}
	if _, err := r.Dispatch(ctx, DispatchTask{Title: "x", AssignTo: "ghost"}); kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("unknown assignee: %v", err)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		got, err := r.Task(ctx, task.ID)
		return err == nil && got.Status == TaskCompleted
	})
	got, _ := r.Task(ctx, task.ID)
	if got.Result == nil || !strings.Contains(*got.Result, "Deploy the new release") {
		t.Fatalf("result %+v", got)
	}
	if _, err := r.Task(ctx, "task-nope"); kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatal("unknown task")
	}
}

func TestRunningTaskIsMarkedInterruptedAfterRestart(t *testing.T) {
	home := t.TempDir()
	h := startBus(t, home, BusOptions{})
	agents := team()
	agents.block = make(chan struct{})
	r := startRouter(t, h, RouterOptions{Agents: agents})
	task, err := r.Dispatch(context.Background(), DispatchTask{Title: "deploy", AssignTo: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	close(agents.block)

	h = startBus(t, home, BusOptions{})
	r = startRouter(t, h, RouterOptions{Agents: team()})
	got, err := r.Task(context.Background(), task.ID)
	if err != nil || got.Status != TaskFailed || !strings.Contains(got.Error, "interrupted") {
		t.Fatalf("after restart: %+v %v", got, err)
	}
}

func TestWakeNowAndNext(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	agents := team()
	r := startRouter(t, h, RouterOptions{Agents: agents})
	ctx := context.Background()
	res, err := r.Wake(ctx, Wake{Text: "build is red", Mode: "next", Agent: "ops", Via: "hook:wake"})
	if err != nil || res.AgentID != "a3" || res.EventID == 0 {
		t.Fatalf("next: %+v %v", res, err)
	}
	if len(agents.turnList()) != 0 {
		t.Fatal("next ran a turn at once")
	}
	if _, err := r.Send(ctx, "", "agent:ops", "status?"); err != nil {
		t.Fatal(err)
	}
	if turns := agents.turnList(); len(turns) != 1 || !strings.Contains(turns[0], "[wake] build is red") {
		t.Fatalf("held wake not prepended: %v", turns)
	}
	if _, err := r.Wake(ctx, Wake{Text: "now please", Agent: "coder", Via: "hook:wake"}); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "condition", func() bool { return len(agents.turnList()) == 2 })
	if turns := agents.turnList(); !strings.HasPrefix(turns[1], "a1|[wake] now please") || strings.Contains(turns[1], "build is red") {
		t.Fatalf("turns %v", turns)
	}
	res, err = r.Wake(ctx, Wake{Text: "just an event", Via: "hook:wake"})
	if err != nil || res.AgentID != "" {
		t.Fatalf("agentless wake: %+v %v", res, err)
	}
	q, _ := h.bus.Query(context.Background(), Query{Limit: 10, Type: "hook.wake"})
	if len(q.Events) != 3 {
		t.Fatalf("%d hook.wake events", len(q.Events))
	}
	if _, err := r.Wake(ctx, Wake{Text: "x", Mode: "later"}); kernel.AsError(err).Code != "invalid_input" {
		t.Fatalf("bad mode: %v", err)
	}
	if _, err := r.Wake(ctx, Wake{Text: "x", Agent: "ghost"}); !errors.Is(err, err) || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("unknown agent: %v", err)
	}
}

// TestDocsListEveryEventType keeps docs/events.md in step with Types.
func TestDocsListEveryEventType(t *testing.T) {
	raw, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range Types {
		if !strings.Contains(string(raw), "| `"+ti.Type+"` |") {
			t.Errorf("docs/events.md does not list %s", ti.Type)
		}
	}
}

// TestEventJSONMatchesEncodingJSON pins the hand-written encoder to what
// encoding/json produces for the same event.
func TestEventJSONMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	for _, s := range []string{"plain", `quo"te\back`, "tab\tnew\nline\r", "ctl\x01\x1f", "ünïcødé ✓", "bad\xffutf8", "<html>&"} {
		m := &publish{typ: "hook.wake", source: s, target: "agent:" + s}
		got := encodeEvent(7, at, m, json.RawMessage(`{"a":1}`))
		var back Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, got, err)
		}
		want := Event{ID: 7, Timestamp: at.Format(time.RFC3339Nano), Type: "hook.wake", Source: strings.ToValidUTF8(s, "\ufffd"),
			Target: strings.ToValidUTF8("agent:"+s, "\ufffd"), Detail: json.RawMessage(`{"a":1}`)}
		if back.Source != want.Source || back.Target != want.Target || back.Timestamp != want.Timestamp || string(back.Detail) != `{"a":1}` {
			t.Fatalf("%q: round trip %+v", s, back)
		}
		var lf map[string]any
		if err := json.Unmarshal(got, &lf); err != nil || lf["kind"] != "hook_wake" || lf["source_id"] != want.Source ||
			lf["source_name"] != want.Source || lf["target_id"] != strings.ToValidUTF8(s, "\ufffd") || lf["target_name"] != lf["target_id"] {
			t.Fatalf("%q: LibreFang's fields %v", s, lf)
		}
	}
	// LibreFang's CommsEventKind for the events its feed has.
	for typ, want := range map[string]string{"agent.message": "agent_message", "agent.spawned": "agent_spawned",
		"agent.terminated": "agent_terminated", "task.created": "task_posted", "task.completed": "task_completed"} {
		if k := lfKind(typ, ""); k != want {
			t.Errorf("%s: kind %s, want %s", typ, k, want)
		}
	}
	if lfKind("message.routed", "agent_message") != "agent_message" || lfKind("message.routed", "task") != "message_routed" {
		t.Error("message.routed kinds")
	}
}

// TestChannelRoutesCountAsEdgesAcrossRestart: an inbound chat message
// handed to an agent is an observed route, also after a restart (the kind
// is read back from the stored detail).
func TestChannelRoutesCountAsEdgesAcrossRestart(t *testing.T) {
	home := t.TempDir()
	h := startBus(t, home, BusOptions{})
	ctx := context.Background()
	for range 2 {
		h.bus.PublishEdge("channel.message.received", "channel:telegram:42", "agent:a1", "channel_message", map[string]any{"text": "hi"})
	}
	// Durable, so the two before it (published in order) are too.
	if _, err := h.bus.PublishSync(ctx, "channel.message.sent", "channel:telegram:42", "", map[string]any{"length": 3}); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		edges, err := h.bus.Edges(context.Background())
		if err != nil || len(edges) != 1 || edges[0] != (Edge{From: "channel:telegram:42", To: "agent:a1", Kind: "channel_message", Messages: 2}) {
			t.Fatalf("edges %+v %v", edges, err)
		}
	}
	check()
	h.stop()
	h = startBus(t, home, BusOptions{})
	check()
	q, _ := h.bus.Query(context.Background(), Query{Limit: 1, Type: "channel.message.received"})
	if e := decode(t, q.Events[0]); !strings.Contains(string(e.Detail), `"route":"channel_message"`) {
		t.Fatalf("stored detail %s", e.Detail)
	}
}

// A graceful stop keeps every event published before it, including those
// that arrived while a commit was in flight (they used to be dropped).
func TestGracefulStopKeepsEveryPublishedEvent(t *testing.T) {
	home := t.TempDir()
	h := startBus(t, home, BusOptions{})
	const n = 3000
	for i := 0; i < n; i++ {
		h.bus.Publish("hook.wake", "system", "", map[string]int{"i": i})
	}
	h.stop()

	h = startBus(t, home, BusOptions{})
	r, err := h.bus.Query(context.Background(), Query{Limit: n + 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != n || r.Last != n {
		t.Fatalf("after a graceful stop: %d of %d events kept, last id %d", len(r.Events), n, r.Last)
	}
}

// PublishDurable's wait returns once the event is in the stored log,
// which is what a crash right after the wait would keep.
func TestPublishDurableWaitsForTheStoredLog(t *testing.T) {
	h := startBus(t, t.TempDir(), BusOptions{})
	var waits []func(context.Context) error
	for i := 0; i < 200; i++ {
		waits = append(waits, h.bus.PublishDurable("approval.requested", "api", "agent:a", map[string]int{"i": i}))
	}
	last := waits[len(waits)-1]
	if err := last(context.Background()); err != nil {
		t.Fatal(err)
	}
	stored := 0
	if err := h.bus.Since(0, func(*Record) bool { stored++; return true }); err != nil {
		t.Fatal(err)
	}
	if stored != 200 {
		t.Fatalf("the stored log holds %d events once the last wait returned, want 200", stored)
	}
	// Waiting again gives the same answer.
	if err := last(context.Background()); err != nil {
		t.Fatalf("second wait: %v", err)
	}
}

// withField adds the route to any detail object, and never makes invalid
// JSON of one.
func TestWithFieldKeepsDetailValidJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{}`:                   `{"route":"hook"}`,
		`{ }`:                  `{"route":"hook"}`,
		`{"a":1}`:              `{"route":"hook","a":1}`,
		`{"route":"x","b":[]}`: `{"b":[],"route":"hook"}`,
		`[1,2]`:                `{"route":"hook"}`,
		`{"s":"route"}`:        `{"route":"hook","s":"route"}`,
	} {
		got := withField(json.RawMessage(in), "route", "hook")
		var a, b any
		if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("withField(%s) = %s, want %s", in, got, want)
		}
	}
}
