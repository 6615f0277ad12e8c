package sse

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzReader: a stream comes from a server the client may not trust.
// Reading arbitrary bytes must not panic; and whatever Writer writes
// (ids, names, multi-line data, comments, retry) Reader reads back as it
// was sent.
func FuzzReader(f *testing.F) {
	f.Add(uint64(7), "chunk", []byte(`{"content":"hi"}`), []byte("id: 1\nevent: x\ndata: a\ndata: b\n\n: ping\n\n"))
	f.Add(uint64(0), "log", []byte("two\nlines\n"), []byte("data:no-space\n\nretry: 10\n\nid\n\n"))
	f.Add(uint64(1), "", []byte(""), []byte("data: \n\n\n\n:\n"))
	f.Fuzz(func(t *testing.T, id uint64, event string, data, raw []byte) {
		(&Reader{}).Read(bytes.NewReader(raw), func(Event) error { return nil })

		if event == "" || strings.ContainsAny(event, "\r\n") || bytes.ContainsRune(data, '\r') {
			return // not what Writer is given: names are one line, data has LF line ends
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		w := NewWriter(bw, nil, 0)
		w.Retry(1500 * time.Millisecond)
		w.Event(id, event, data)
		w.Comment("ping")
		w.Event(id, event, data)
		w.Flush()
		r := &Reader{}
		var got []Event
		if err := r.Read(&buf, func(e Event) error { got = append(got, e); return nil }); err != nil {
			t.Fatal(err)
		}
		wantID := ""
		if id > 0 {
			wantID = strconv.FormatUint(id, 10)
		}
		if len(got) != 2 || r.Retry != 1500*time.Millisecond {
			t.Fatalf("read %d events, retry %v, from %q", len(got), r.Retry, buf.String())
		}
		for _, e := range got {
			if e.ID != wantID || e.Event != event || !bytes.Equal(e.Data, data) {
				t.Fatalf("sent id %q event %q data %q; read %+v", wantID, event, data, e)
			}
		}
	})
}
