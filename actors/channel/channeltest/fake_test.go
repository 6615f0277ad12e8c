package channeltest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestGateCountsAndAnswersOutagesAndLimits(t *testing.T) {
	var f FakeState
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(f.Gate(Gate{Limits: func(r *http.Request) bool { return r.Method == http.MethodPost }}, ok))
	defer srv.Close()
	do := func(method string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/send", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := do(http.MethodPost); r.StatusCode != http.StatusNoContent {
		t.Fatalf("open: %d", r.StatusCode)
	}
	f.RateLimitNext(1, 7)
	if r := do(http.MethodGet); r.StatusCode != http.StatusNoContent {
		t.Fatalf("GET is not limited here: %d", r.StatusCode)
	}
	if r := do(http.MethodPost); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "7" {
		t.Fatalf("limited: %d %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := do(http.MethodPost); r.StatusCode != http.StatusNoContent {
		t.Fatalf("limit used up: %d", r.StatusCode)
	}
	f.SetDown(true)
	if r := do(http.MethodPost); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("down: %d", r.StatusCode)
	}
	if n := f.Requests("POST /send"); n != 4 {
		t.Fatalf("POST /send counted %d, want 4", n)
	}
}

func TestWaitWakesOnChangeAndHonoursContext(t *testing.T) {
	var f FakeState
	var items []string
	go func() {
		f.Lock()
		items = append(items, "hello")
		f.Changed()
		f.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := WaitMatch(ctx, &f, "hello", func() []string { return items }, func(s string) bool { return s == "hello" })
	if err != nil || got != "hello" {
		t.Fatalf("got %q, %v", got, err)
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	if err := f.Wait(done, "never", func() bool { return false }); err == nil {
		t.Fatal("Wait ignored a cancelled context")
	}
}

func TestFakeClockFiresDueTimersInOrderOnlyWhenAdvanced(t *testing.T) {
	c := NewFakeClock()
	start := c.Now()
	var fired []string
	c.AfterFunc(2*time.Second, func() { fired = append(fired, "2s") })
	c.AfterFunc(time.Second, func() { fired = append(fired, "1s") })
	stopped := c.AfterFunc(1500*time.Millisecond, func() { fired = append(fired, "stopped") })
	mark := c.Mark()
	c.AfterFunc(time.Minute, func() { fired = append(fired, "1m") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop reports whether it prevented the call")
	}
	if got := c.PendingSince(mark); len(got) != 1 || got[0] != time.Minute {
		t.Fatalf("pending since mark = %v", got)
	}
	c.Advance(999 * time.Millisecond)
	if len(fired) != 0 {
		t.Fatalf("fired before due: %v", fired)
	}
	c.Advance(2 * time.Second)
	if strings.Join(fired, ",") != "1s,2s" || c.Now().Sub(start) != 2999*time.Millisecond {
		t.Fatalf("fired %v at %s", fired, c.Now().Sub(start))
	}
	d, err := c.WaitPending(context.Background(), mark, "the minute timer", func(d time.Duration) bool { return d > 50*time.Second })
	if err != nil || d != time.Minute-2999*time.Millisecond {
		t.Fatalf("WaitPending = %s, %v", d, err)
	}
}

// A websocket attached during an outage is dropped at once, like those
// open when it began.
func TestAttachDuringAnOutageDrops(t *testing.T) {
	var f FakeState
	attached := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.SetDown(true) // the outage starts between handshake and Attach
		detach := f.Attach(c)
		defer detach()
		close(attached)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-attached
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the socket attached during the outage stayed open: %v", err)
	}
	f.mu.Lock()
	n := f.Sockets()
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sockets attached during an outage", n)
	}
}
