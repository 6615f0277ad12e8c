package channeltest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
