package sse

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestEventFraming(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(bufio.NewWriter(&buf), nil, time.Second)
	w.Event(7, "log", []byte("line one\r\nline two"))
	w.Event(0, "", []byte("x"))
	w.Comment("ping")
	w.Retry(1500 * time.Millisecond)
	w.Flush()
	want := "id: 7\nevent: log\ndata: line one\ndata: line two\n\ndata: x\n\n: ping\n\nretry: 1500\n\n"
	if buf.String() != want {
		t.Fatalf("got %q\nwant %q", buf.String(), want)
	}
}

func TestLastEventID(t *testing.T) {
	cases := []struct {
		header, query string
		id            uint64
		ok, err       bool
	}{
		{"", "", 0, false, false},
		{"42", "", 42, true, false},
		{"", "9", 9, true, false},
		{"5", "9", 5, true, false},
		{"abc", "", 0, false, true},
		{"-1", "", 0, false, true},
	}
	for _, c := range cases {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/x?last_event_id=" + c.query)
		if c.query == "" {
			ctx.Request.SetRequestURI("/x")
		}
		if c.header != "" {
			ctx.Request.Header.Set("Last-Event-ID", c.header)
		}
		id, ok, err := LastEventID(&ctx)
		if id != c.id || ok != c.ok || (err != nil) != c.err {
			t.Errorf("header %q query %q: %d %v %v", c.header, c.query, id, ok, err)
		}
	}
}
