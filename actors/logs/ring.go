// Package logs keeps the daemon's recent structured log lines in a bounded
// ring and fans new lines out to live subscribers (GET /api/logs/stream).
//
// The ring is not an actor: zerolog writes to it from every goroutine, and
// a mutex costs less than a mailbox hop per log line. Publishing never
// blocks: a subscriber whose buffer is full is dropped.
package logs

import (
	"bytes"
	"sync"

	"github.com/rs/zerolog"
)

// Line is one log line with its stream id.
type Line struct {
	ID    uint64
	Level zerolog.Level
	JSON  []byte
}

// Ring is a zerolog.LevelWriter that remembers the last lines.
type Ring struct {
	mu   sync.Mutex
	buf  []Line
	head int    // index of the oldest line when full
	next uint64 // id of the next line
	subs map[*Sub]struct{}
	size int // cap(buf), kept apart: buf's header changes under mu
}

// NewRing keeps the last size lines.
func NewRing(size int) *Ring {
	return &Ring{buf: make([]Line, 0, size), next: 1, subs: map[*Sub]struct{}{}, size: size}
}

// Write implements io.Writer for lines without a level.
func (r *Ring) Write(p []byte) (int, error) { return r.WriteLevel(zerolog.NoLevel, p) }

// WriteLevel implements zerolog.LevelWriter.
func (r *Ring) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	line := Line{Level: level, JSON: bytes.Clone(bytes.TrimRight(p, "\n"))}
	r.mu.Lock()
	line.ID = r.next
	r.next++
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, line)
	} else {
		r.buf[r.head] = line
		r.head = (r.head + 1) % len(r.buf)
	}
	for s := range r.subs {
		if !s.wants(level) {
			continue
		}
		select {
		case s.ch <- line:
		default:
			delete(r.subs, s)
			s.dropped = true
			close(s.ch)
		}
	}
	r.mu.Unlock()
	return len(p), nil
}

// Sub is a live subscription.
type Sub struct {
	ring     *Ring
	minLevel zerolog.Level
	ch       chan Line
	dropped  bool
}

func (s *Sub) wants(l zerolog.Level) bool { return l >= s.minLevel || l == zerolog.NoLevel }

// Lines delivers new lines; it is closed when the subscriber was too slow.
func (s *Sub) Lines() <-chan Line { return s.ch }

// Close ends the subscription.
func (s *Sub) Close() {
	s.ring.mu.Lock()
	if _, ok := s.ring.subs[s]; ok {
		delete(s.ring.subs, s)
		close(s.ch)
	}
	s.ring.mu.Unlock()
}

// Replay is what a new subscriber gets before live lines.
type Replay struct {
	Lines []Line
	// Missed is how many lines after the requested id are no longer held.
	Missed uint64
}

// Subscribe registers a subscriber for lines at minLevel or above, with room
// for buffer undelivered lines. Lines with id > after still in the ring are
// returned for replay (after = 0 and tail > 0 replays the last tail lines).
// Replay and registration happen under one lock: nothing is missed or sent
// twice between them.
func (r *Ring) Subscribe(after uint64, tail int, minLevel zerolog.Level, buffer int) (*Sub, Replay) {
	s := &Sub{ring: r, minLevel: minLevel, ch: make(chan Line, buffer)}
	r.mu.Lock()
	defer r.mu.Unlock()
	var rep Replay
	held := r.ordered()
	if after == 0 && tail > 0 && tail < len(held) {
		held = held[len(held)-tail:]
	}
	if after > 0 || tail > 0 {
		if len(held) > 0 && after > 0 && held[0].ID > after+1 {
			rep.Missed = held[0].ID - after - 1
		}
		for _, l := range held {
			if l.ID > after && s.wants(l.Level) {
				rep.Lines = append(rep.Lines, l)
			}
		}
	}
	r.subs[s] = struct{}{}
	return s, rep
}

// ordered returns the held lines oldest first. Callers hold r.mu.
func (r *Ring) ordered() []Line {
	out := make([]Line, 0, len(r.buf))
	out = append(out, r.buf[r.head:]...)
	return append(out, r.buf[:r.head]...)
}

// Size is how many lines the ring holds at most.
// It reads no guarded field: GET /api/logs/stream asks while lines are
// written.
func (r *Ring) Size() int { return r.size }
