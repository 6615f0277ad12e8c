package logs

import (
	"fmt"
	"testing"

	"github.com/rs/zerolog"
)

func write(r *Ring, level zerolog.Level, n int) {
	for i := range n {
		r.WriteLevel(level, []byte(fmt.Sprintf(`{"level":%q,"i":%d}`+"\n", level, i)))
	}
}

func TestRingKeepsLastLinesAndReplaysAfterID(t *testing.T) {
	r := NewRing(4)
	write(r, zerolog.InfoLevel, 6) // ids 1..6, ring holds 3..6
	sub, rep := r.Subscribe(4, 0, zerolog.TraceLevel, 8)
	defer sub.Close()
	if len(rep.Lines) != 2 || rep.Lines[0].ID != 5 || rep.Lines[1].ID != 6 || rep.Missed != 0 {
		t.Fatalf("replay after 4 = %+v", rep)
	}
	_, rep = r.Subscribe(1, 0, zerolog.TraceLevel, 8)
	if rep.Missed != 1 || rep.Lines[0].ID != 3 {
		t.Fatalf("replay after 1: missed=%d first=%d, want 1 and 3", rep.Missed, rep.Lines[0].ID)
	}
	write(r, zerolog.InfoLevel, 1)
	if l := <-sub.Lines(); l.ID != 7 || l.JSON[len(l.JSON)-1] == '\n' {
		t.Fatalf("live line = %d %q", l.ID, l.JSON)
	}
}

func TestTailAndLevelFilter(t *testing.T) {
	r := NewRing(10)
	write(r, zerolog.DebugLevel, 3)
	write(r, zerolog.WarnLevel, 2)
	_, rep := r.Subscribe(0, 4, zerolog.WarnLevel, 8)
	if len(rep.Lines) != 2 || rep.Lines[0].Level != zerolog.WarnLevel {
		t.Fatalf("tail 4 at warn = %+v", rep.Lines)
	}
	_, rep = r.Subscribe(0, 0, zerolog.TraceLevel, 8)
	if len(rep.Lines) != 0 {
		t.Fatal("no Last-Event-ID and no tail must replay nothing")
	}
}

func TestSlowSubscriberIsDroppedNotBlocking(t *testing.T) {
	r := NewRing(100)
	slow, _ := r.Subscribe(0, 0, zerolog.TraceLevel, 2)
	write(r, zerolog.InfoLevel, 50) // must not block
	n := 0
	for range slow.Lines() {
		n++
	}
	if n != 2 || !slow.dropped {
		t.Fatalf("slow subscriber got %d lines, dropped=%v; want 2, true", n, slow.dropped)
	}
	slow.Close() // closing a dropped subscriber is safe
}

// Size is read by GET /api/logs/stream while other goroutines log; under
// -race this failed when Size read the slice that WriteLevel reassigns.
func TestSizeWhileWriting(t *testing.T) {
	r := NewRing(8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			r.Write([]byte(`{"message":"x"}`))
		}
	}()
	for i := 0; i < 100; i++ {
		if r.Size() != 8 {
			t.Fatalf("size %d", r.Size())
		}
	}
	<-done
}
