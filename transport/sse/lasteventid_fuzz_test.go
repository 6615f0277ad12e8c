package sse

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzLastEventID: the header and the query parameter come from any
// client. Parsing must not panic, must answer ok only with a number that
// is exactly what was sent (leading zeros aside) and an error for anything
// else present; and an id the Writer sent must come back as itself.
func FuzzLastEventID(f *testing.F) {
	for _, s := range [][2]string{{"42", ""}, {"", "7"}, {"18446744073709551615", ""}, {"18446744073709551616", ""},
		{"-1", ""}, {"+1", ""}, {" 1", ""}, {"0x10", ""}, {"1_000", ""}, {"", "%31"}, {"007", ""}, {"", "a&last_event_id=1"}} {
		f.Add(s[0], s[1], uint64(3))
	}
	f.Fuzz(func(t *testing.T, header, query string, sent uint64) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.Set("Last-Event-ID", header)
		ctx.Request.SetRequestURI("/events?last_event_id=" + query)
		raw := string(ctx.Request.Header.Peek("Last-Event-ID"))
		if raw == "" {
			raw = string(ctx.QueryArgs().Peek("last_event_id"))
		}
		id, ok, err := LastEventID(&ctx)
		switch {
		case raw == "":
			if ok || err != nil {
				t.Fatalf("nothing sent: %d %v %v", id, ok, err)
			}
		case ok:
			if err != nil || strings.TrimLeft(raw, "0") != strings.TrimLeft(strconv.FormatUint(id, 10), "0") {
				t.Fatalf("%q read as %d", raw, id)
			}
		case err == nil:
			t.Fatalf("%q: neither an id nor an error", raw)
		}

		// What the Writer sends as "id: N" resumes at N.
		var buf bytes.Buffer
		w := NewWriter(bufio.NewWriter(&buf), nil, time.Second)
		w.Event(sent, "x", []byte("y"))
		w.Flush()
		line, _, _ := strings.Cut(buf.String(), "\n")
		echoed, found := strings.CutPrefix(line, "id: ")
		if sent == 0 {
			if found {
				t.Fatalf("id 0 was written: %q", buf.String())
			}
			return
		}
		var back fasthttp.RequestCtx
		back.Request.Header.Set("Last-Event-ID", echoed)
		if got, ok, err := LastEventID(&back); !found || !ok || err != nil || got != sent {
			t.Fatalf("sent id %d, wrote %q, read back %d %v %v", sent, buf.String(), got, ok, err)
		}
	})
}
