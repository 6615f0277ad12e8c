package kernel

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newKernel(t testing.TB) (*Kernel, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	k := New(zerolog.New(buf))
	t.Cleanup(func() {
		kerneltest.Stop(k)
	})
	return k, buf
}

func TestSpreadStaysWithinBounds(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := Spread(8, 12)
		if d < 8 || d > 12 {
			t.Fatalf("Spread(8, 12) = %v", d)
		}
		seen[d] = true
	}
	if len(seen) < 3 {
		t.Fatalf("Spread does not spread: %v", seen)
	}
	if d := Spread(5, 5); d != 5 {
		t.Fatalf("Spread(5, 5) = %v", d)
	}
	if d := Spread(5, 1); d != 5 {
		t.Fatalf("Spread(5, 1) = %v", d)
	}
}

func TestBackoffDelayIsCappedExponential(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, MaxRetries: 5, Window: time.Minute}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	for range 100 {
		if j := b.Jittered(3); j < 200*time.Millisecond || j > 400*time.Millisecond {
			t.Fatalf("Jittered(3) = %v outside [200ms, 400ms]", j)
		}
	}
}

// crasher panics with its reason on every "crash" message and counts starts.
type crasher struct {
	starts *atomic.Int32
	reason error
}

func (c *crasher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.starts.Add(1)
	case string:
		if m == "crash" {
			panic(c.reason)
		}
		ctx.Respond("pong")
	}
}

var waitFor = kerneltest.WaitFor

func TestTransientFailureRestartsAndLogsStack(t *testing.T) {
	k, logs := newKernel(t)
	var starts atomic.Int32
	pid, err := k.SpawnRoot("flaky", func() actor.Actor { return &crasher{starts: &starts, reason: errors.New("network down")} })
	if err != nil {
		t.Fatal(err)
	}
	k.Root.Send(pid, "crash")
	waitFor(t, "restart", func() bool { return starts.Load() == 2 })
	out := logs.String()
	if !strings.Contains(out, "actor panicked") || !strings.Contains(out, "kernel_test.go") || !strings.Contains(out, `"message_type":"string"`) {
		t.Fatalf("panic not logged with stack and message type:\n%s", out)
	}
	waitFor(t, "restart metric", func() bool { return strings.Contains(logs.String(), "actor restarted by supervisor") })
	if got, err := Ask[string](within(t, time.Second), k, pid, "ping"); err != nil || got != "pong" {
		t.Fatalf("after restart: %q %v", got, err)
	}
}

func TestPermanentFailureStopsWithoutRetry(t *testing.T) {
	k, logs := newKernel(t)
	var starts atomic.Int32
	pid, _ := k.SpawnRoot("badcreds", func() actor.Actor {
		return &crasher{starts: &starts, reason: Permanent(errors.New("401 invalid token"))}
	})
	k.Root.Send(pid, "crash")
	waitFor(t, "stop", func() bool { _, ok := k.System.ProcessRegistry.Get(pid); return !ok })
	if starts.Load() != 1 {
		t.Fatalf("permanently failing actor started %d times", starts.Load())
	}
	if !strings.Contains(logs.String(), "actor stopped by supervisor") {
		t.Fatal("stop not logged")
	}
	_, err := Ask[string](within(t, 200*time.Millisecond), k, pid, "ping")
	if e := AsError(err); e == nil || e.Kind != KindUnavailable {
		t.Fatalf("ask of a stopped actor = %v, want Unavailable", err)
	}
}

func TestTooManyFailuresStop(t *testing.T) {
	k, _ := newKernel(t)
	var starts atomic.Int32
	b := Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxRetries: 3, Window: time.Minute}
	props := k.Props(func() actor.Actor { return &crasher{starts: &starts, reason: errors.New("boom")} },
		actor.WithGuardian(b.Strategy()))
	pid, _ := k.Root.SpawnNamed(props, "hopeless")
	for i := 0; i < 10; i++ {
		k.Root.Send(pid, "crash")
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, "stop after retries", func() bool { _, ok := k.System.ProcessRegistry.Get(pid); return !ok })
	if s := starts.Load(); s != 4 { // first start + 3 restarts
		t.Fatalf("started %d times, want 4", s)
	}
}

type silent struct{}

func (silent) Receive(actor.Context) {}

func TestAskTimeoutIsUnavailable(t *testing.T) {
	k, _ := newKernel(t)
	pid, _ := k.SpawnRoot("silent", func() actor.Actor { return silent{} })
	_, err := Ask[string](within(t, 50*time.Millisecond), k, pid, "anyone?")
	e := AsError(err)
	if e == nil || e.Kind != KindUnavailable || e.Code != "actor_timeout" {
		t.Fatalf("err = %v", err)
	}
}

type recorder struct {
	name  string
	order *[]string
	mu    *sync.Mutex
}

func (r *recorder) Receive(c actor.Context) {
	if _, ok := c.Message().(*actor.Stopped); ok {
		r.mu.Lock()
		*r.order = append(*r.order, r.name)
		r.mu.Unlock()
	}
}

func TestShutdownStopsRootsInReverseOrder(t *testing.T) {
	k := New(zerolog.Nop())
	var order []string
	var mu sync.Mutex
	for _, n := range []string{"store-owner", "audit", "http-facing"} {
		k.SpawnRoot(n, func() actor.Actor { return &recorder{name: n, order: &order, mu: &mu} })
	}
	counts := k.ActorCounts()
	if counts["audit"] != 1 || counts["store-owner"] != 1 || len(counts) != 3 {
		t.Fatalf("actor counts = %v", counts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if late := k.Shutdown(ctx); len(late) != 0 {
		t.Fatalf("late: %v", late)
	}
	if strings.Join(order, ",") != "http-facing,audit,store-owner" {
		t.Fatalf("stop order = %v", order)
	}
}

func TestKindOf(t *testing.T) {
	cases := map[string]string{
		"audit": "audit", "agents/agent/123": "agent", "channels/channel/telegram": "channel",
		"$5": "", "agents/$7": "", "deadletter": "", "guardian$1": "",
	}
	for id, want := range cases {
		if got := kindOf(id); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestSecurityRegistry(t *testing.T) {
	s := NewSecurity()
	on := true
	s.Register("loop_guard", func() State {
		if on {
			return StateActive
		}
		return StateInactive
	})
	st := s.Status()
	if len(st) != 16 || st["loop_guard"] != StateActive || st["taint_tracking"] != StateUnavailable {
		t.Fatalf("status = %v", st)
	}
	on = false
	if s.Status()["loop_guard"] != StateInactive {
		t.Fatal("probe not re-measured")
	}
}

// SendAfter delivers at once for a deadline already passed, later for a
// future one, and not at all once its timer is stopped.
func TestSendAfter(t *testing.T) {
	k, _ := newKernel(t)
	got := make(chan string, 4)
	var timers []*time.Timer
	pid := k.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case string:
			switch m {
			case "arm":
				if tm := SendAfter(c, -time.Second, "now"); tm != nil {
					got <- "a timer for a passed deadline"
				}
				timers = append(timers, SendAfter(c, 20*time.Millisecond, "later"), SendAfter(c, 30*time.Millisecond, "never"))
				timers[1].Stop()
			default:
				got <- m
			}
		}
	}))
	k.Root.Send(pid, "arm")
	for _, want := range []string{"now", "later"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q", want)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("a stopped timer delivered %q", m)
	case <-time.After(100 * time.Millisecond):
	}
}

// Actors spawned from one PropsTemplate share its middleware and
// supervision but each keeps its own producer, for its restarts too.
func TestPropsTemplateKeepsEachActorsProducer(t *testing.T) {
	k, logs := newKernel(t)
	b := Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxRetries: 3, Window: time.Minute}
	props := k.PropsTemplate(actor.WithGuardian(b.Strategy()))
	var startsA, startsB atomic.Int32
	a, err := k.Root.SpawnNamed(props(func() actor.Actor { return &crasher{starts: &startsA, reason: errors.New("a down")} }), "tmpl-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Root.SpawnNamed(props(func() actor.Actor { return &crasher{starts: &startsB} }), "tmpl-b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both started", func() bool { return startsA.Load() == 1 && startsB.Load() == 1 })
	k.Root.Send(a, "crash")
	waitFor(t, "a restarted", func() bool { return startsA.Load() == 2 })
	if !strings.Contains(logs.String(), "actor panicked") {
		t.Fatalf("the template's panic logger did not run:\n%s", logs.String())
	}
	if got, err := Ask[string](within(t, time.Second), k, a, "ping"); err != nil || got != "pong" {
		t.Fatalf("after restart: %q %v", got, err)
	}
	if s := startsB.Load(); s != 1 {
		t.Fatalf("b started %d times, want 1: a's restart used b's producer", s)
	}
}
