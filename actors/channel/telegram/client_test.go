package telegram

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A long poll that the server holds open ends as soon as its context is
// cancelled (the channel stops or reconnects), and the connection it held
// is closed, not handed to the next call.
func TestCancelEndsWaitingCall(t *testing.T) {
	closed := make(chan struct{})
	held := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http notices a client closing only after the body
		held <- struct{}{}
		select {
		case <-r.Context().Done(): // the client went away
			close(closed)
		case <-time.After(time.Minute):
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := client.post(ctx, srv.URL+"/botx/getUpdates", []byte(`{}`), time.Now().Add(time.Minute), offStack)
		done <- err
	}()
	<-held
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end when its context was cancelled")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection of the cancelled call stayed open")
	}
}

// A pooled connection that the server closed while it sat idle is not an
// error for the next call: it goes out again on a new connection.
func TestStalePooledConnectionIsRetried(t *testing.T) {
	var conns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				// Answer exactly one request, keep-alive, then close.
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				if !strings.Contains(string(buf[:n]), "\r\n\r\n{}") {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
				time.Sleep(50 * time.Millisecond)
			}()
		}
	}()
	url := "http://" + ln.Addr().String() + "/botx/"
	for _, method := range []string{"getMe", "getUpdates", "sendMessage"} {
		time.Sleep(200 * time.Millisecond) // the server has closed the pooled one
		r, err := client.post(context.Background(), url+method, []byte(`{}`), time.Now().Add(10*time.Second), inline)
		if err != nil {
			t.Fatalf("%s after the server closed the idle connection: %v", method, err)
		}
		if string(r.body) != `{"ok":true}` {
			t.Fatalf("%s body = %q", method, r.body)
		}
	}
	if n := conns.Load(); n < 3 {
		t.Fatalf("%d connections for 3 calls, each after a close", n)
	}
}
