package channeltest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// FakeState is the kit every platform fake (gotifytest, teamstest, ...)
// embeds: one lock for the fake's own data, change notification so tests
// wait for a condition instead of sleeping, per-route request counts, and
// the outage and rate-limit switches behind Gate. A fake keeps only what is
// its platform's: routes, wire formats, error bodies.
//
// The fake guards its own fields with Lock/Unlock, and calls Changed (with
// the lock held) whenever something a test may wait for changed.
type FakeState struct {
	mu        sync.Mutex
	notify    chan struct{}
	requests  map[string]int
	down      bool
	limitNext int
	limitWait int
	// sockets are the websockets the fake serves to the adapter, each
	// with its write lock (gorilla allows one writer at a time).
	sockets map[*websocket.Conn]*sync.Mutex
}

// Lock locks the fake's state (FakeState's and the embedding fake's).
func (f *FakeState) Lock() { f.mu.Lock() }

// Unlock unlocks it.
func (f *FakeState) Unlock() { f.mu.Unlock() }

// Changed wakes every Wait. The caller holds the lock.
func (f *FakeState) Changed() {
	if f.notify != nil {
		close(f.notify)
	}
	f.notify = make(chan struct{})
}

// Wait blocks until done reports true or ctx ends. done runs with the lock
// held, after every Changed; the error names what was awaited.
func (f *FakeState) Wait(ctx context.Context, what string, done func() bool) error {
	for {
		f.mu.Lock()
		if done() {
			f.mu.Unlock()
			return nil
		}
		if f.notify == nil {
			f.notify = make(chan struct{})
		}
		ch := f.notify
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
	}
}

// SetDown makes every request through Gate answer the platform's outage
// error until SetDown(false); starting an outage drops every attached
// websocket.
func (f *FakeState) SetDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.Changed()
	f.mu.Unlock()
	if down {
		f.DropSockets()
	}
}

// Attach adds a websocket the fake serves (a stream, a gateway session) to
// the set that Broadcast writes to and an outage drops. Call the returned
// detach when the connection ends.
func (f *FakeState) Attach(c *websocket.Conn) (detach func()) {
	f.mu.Lock()
	if f.down {
		// An outage that began while this connection was being set up
		// (a fake answers its handshake, then attaches) drops it too;
		// otherwise it outlived the outage and the client never saw one
		// (TestDiscordOutageAndQueuedReplies under CI load).
		f.mu.Unlock()
		_ = c.Close()
		return func() {}
	}
	if f.sockets == nil {
		f.sockets = map[*websocket.Conn]*sync.Mutex{}
	}
	f.sockets[c] = &sync.Mutex{}
	f.Changed()
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.sockets, c)
		f.Changed()
		f.mu.Unlock()
		_ = c.Close()
	}
}

// Sockets is the number of attached websockets. The caller holds the lock.
func (f *FakeState) Sockets() int { return len(f.sockets) }

// WaitSockets waits until n websockets are attached.
func (f *FakeState) WaitSockets(ctx context.Context, n int) error {
	return f.Wait(ctx, fmt.Sprintf("%d websockets not open", n), func() bool { return len(f.sockets) >= n })
}

// Write runs write on c holding c's write lock (c need not be attached:
// before Attach only the fake's own handler writes to it).
func (f *FakeState) Write(c *websocket.Conn, write func(*websocket.Conn) error) error {
	f.mu.Lock()
	wmu := f.sockets[c]
	f.mu.Unlock()
	if wmu != nil {
		wmu.Lock()
		defer wmu.Unlock()
	}
	return write(c)
}

// Broadcast writes one text message to every attached websocket.
func (f *FakeState) Broadcast(data []byte) {
	for _, c := range f.socketList() {
		_ = f.Write(c, func(c *websocket.Conn) error { return c.WriteMessage(websocket.TextMessage, data) })
	}
}

// DropSockets closes every attached websocket (an outage, Close).
func (f *FakeState) DropSockets() {
	for _, c := range f.socketList() {
		_ = c.Close()
	}
}

// socketList copies the attached websockets, to write to or close them
// without the lock.
func (f *FakeState) socketList() []*websocket.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	cs := make([]*websocket.Conn, 0, len(f.sockets))
	for c := range f.sockets {
		cs = append(cs, c)
	}
	return cs
}

// Down reports the outage switch. The caller holds the lock.
func (f *FakeState) Down() bool { return f.down }

// RateLimitNext makes the next n rate-limited requests answer 429 asking
// for a wait of secs.
func (f *FakeState) RateLimitNext(n, secs int) {
	f.mu.Lock()
	f.limitNext, f.limitWait = n, secs
	f.mu.Unlock()
}

// TakeLimit consumes one armed rate limit, for fakes that limit inside one
// handler rather than in Gate: ok reports whether this request is limited,
// secs is the wait to ask for. It takes the lock itself.
func (f *FakeState) TakeLimit() (ok bool, secs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.takeLimit()
}

func (f *FakeState) takeLimit() (bool, int) {
	if f.limitNext <= 0 {
		return false, 0
	}
	f.limitNext--
	return true, f.limitWait
}

// Requests counts requests Gate saw for route (by default "METHOD /path").
func (f *FakeState) Requests(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[route]
}

// Count counts one more request for route, for what a fake sees outside
// Gate (a websocket frame such as Discord's IDENTIFY). It takes the lock.
func (f *FakeState) Count(route string) {
	f.mu.Lock()
	if f.requests == nil {
		f.requests = map[string]int{}
	}
	f.requests[route]++
	f.Changed()
	f.mu.Unlock()
}

// Gate says how a fake's front door behaves in an outage and under a rate
// limit, in its platform's own words.
type Gate struct {
	// Route names a request for Requests; nil means "METHOD /path".
	Route func(*http.Request) string
	// Limits reports whether an armed rate limit applies to r; nil means
	// none does here (the fake calls TakeLimit in its handler instead).
	Limits func(r *http.Request) bool
	// Down writes the outage answer; nil means a plain-text 503.
	Down func(w http.ResponseWriter)
	// Limited writes the 429 asking for secs; nil means a plain-text 429
	// with Retry-After.
	Limited func(w http.ResponseWriter, secs int)
}

// Gate wraps next: it counts the request, then answers for an outage or
// an armed rate limit, or passes the request on.
func (f *FakeState) Gate(g Gate, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.Method + " " + r.URL.Path
		if g.Route != nil {
			route = g.Route(r)
		}
		f.mu.Lock()
		if f.requests == nil {
			f.requests = map[string]int{}
		}
		f.requests[route]++
		down := f.down
		limited, wait := false, 0
		if !down && g.Limits != nil && g.Limits(r) {
			limited, wait = f.takeLimit()
		}
		f.Changed()
		f.mu.Unlock()
		switch {
		case down && g.Down != nil:
			g.Down(w)
		case down:
			http.Error(w, "503 Service Unavailable", http.StatusServiceUnavailable)
		case limited && g.Limited != nil:
			g.Limited(w, wait)
		case limited:
			w.Header().Set("Retry-After", strconv.Itoa(wait))
			http.Error(w, "429 Too Many Requests", http.StatusTooManyRequests)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// WaitMatch waits until one of items (read with f's lock held) matches,
// and returns it: the "wait for the message the adapter sent" every fake
// offers.
func WaitMatch[T any](ctx context.Context, f *FakeState, what string, items func() []T, match func(T) bool) (T, error) {
	var got T
	err := f.Wait(ctx, what, func() bool {
		for _, it := range items() {
			if match(it) {
				got = it
				return true
			}
		}
		return false
	})
	return got, err
}

// Select copies the items (read with f's lock held) that keep accepts (nil
// keeps all): the "what did the adapter send" every fake offers, safe to
// use after the lock is released.
func Select[T any](f *FakeState, items func() []T, keep func(T) bool) []T {
	f.Lock()
	defer f.Unlock()
	var out []T
	for _, it := range items() {
		if keep == nil || keep(it) {
			out = append(out, it)
		}
	}
	return out
}

// Recorder is FakeState for a fake that records what the adapter sent it
// (the bot's messages), with the two reads every such fake offers: Sent and
// WaitSent. The fake embeds it instead of FakeState and calls Record, with
// the lock held, for each message it takes.
type Recorder[T any] struct {
	FakeState
	sent []T
}

// Record adds one sent message and wakes every Wait. The caller holds the
// lock.
func (r *Recorder[T]) Record(v T) {
	r.sent = append(r.sent, v)
	r.Changed()
}

// Sent returns the bot's messages so far.
func (r *Recorder[T]) Sent() []T {
	return Select(&r.FakeState, func() []T { return r.sent }, nil)
}

// SentWhere returns the bot's messages that keep accepts.
func (r *Recorder[T]) SentWhere(keep func(T) bool) []T {
	return Select(&r.FakeState, func() []T { return r.sent }, keep)
}

// WaitSent waits for a message of the bot matching match.
func (r *Recorder[T]) WaitSent(ctx context.Context, match func(T) bool) (T, error) {
	return WaitMatch(ctx, &r.FakeState, "no matching message sent", func() []T { return r.sent }, match)
}

// Cleanup closes fake when t ends (after the adapter it serves has
// stopped, which the harness registered later) and returns it: the start
// of every test that runs against a platform fake.
func Cleanup[F interface{ Close() }](t testing.TB, fake F) F {
	t.Cleanup(fake.Close)
	return fake
}

// ReadJSON is a fake's websocket read loop: it decodes each frame from c
// as JSON into a fresh T and hands it to fn (with the decode error, for the
// fake to answer as its platform does) until c ends or fn returns false.
func ReadJSON[T any](c *websocket.Conn, fn func(v T, err error) bool) {
	for {
		_, raw, err := c.ReadMessage()
		if err != nil {
			return
		}
		var v T
		err = json.Unmarshal(raw, &v)
		if !fn(v, err) {
			return
		}
	}
}
