package a2a

import (
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
)

// BenchmarkSendMessage is one blocking SendMessage through the protocol
// handler to a local agent that answers at once: task actor spawn, two
// journal writes (working, completed), the turn, passivation.
func BenchmarkSendMessage(b *testing.B) {
	h := newHarnessB(b)
	ctx := admin()
	b.ReportAllocs()
	// 64 callers at once (2 cores x 32), like the bench's HTTP load: the
	// journal commits their writes together.
	b.SetParallelism(32)
	b.ResetTimer()
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := h.svc.Handler("").SendMessage(ctx, sendReq("bench"))
			if err != nil {
				b.Fatal(err)
			}
			if res.(*a2a.Task).Status.State != a2a.TaskStateCompleted {
				b.Fatal("not completed")
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	// The process's CPU per send does not depend on the neighbours on a
	// shared machine, the rate does.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu_us/op")
}

// processCPU is the user + system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCompletedTaskMemory measures the heap a finished task leaves
// behind while it is kept (before retention removes it): finished tasks
// are passivated, so only the store holds them.
func BenchmarkCompletedTaskMemory(b *testing.B) {
	h := newHarnessB(b)
	ctx := admin()
	const n = 2000
	for i := 0; i < 200; i++ { // warm up pools and the store
		if _, err := h.svc.Handler("").SendMessage(ctx, sendReq("warm")); err != nil {
			b.Fatal(err)
		}
	}
	var perTask float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for j := 0; j < n; j++ {
			if _, err := h.svc.Handler("").SendMessage(ctx, sendReq("keep me")); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perTask = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n
	}
	b.ReportMetric(perTask, "heap-B/kept-task")
	b.ReportMetric(float64(h.k.ActorCounts()["a2a-task"]), "live-task-actors")
}

func newHarnessB(b *testing.B) *harness {
	h := &harness{t: b, home: b.TempDir(), agents: newFakeAgents(testAgent)}
	opts := DefaultOptions()
	opts.BaseURL = "http://127.0.0.1:4545"
	opts.Agents = h.agents
	opts.Guard = &fakeGuard{}
	h.opts = opts
	h.start()
	b.Cleanup(h.stop)
	return h
}
