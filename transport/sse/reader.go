package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// MaxLine bounds one line of a stream Reader reads: a log line or an
// event is far smaller; a server sending more is not one to trust with
// memory.
const MaxLine = 16 << 20

// Event is one dispatched Server-Sent Event, as a Reader reads it.
type Event struct {
	ID    string // "" when the event had no id: field
	Event string // "message" when the event had no event: field
	Data  []byte
}

// ErrStop is returned by a Reader's handler that wants no more events.
var ErrStop = errors.New("stop")

// Reader is the client side of Writer: it parses an event stream (the
// WHATWG EventSource format, less a lone CR as a line end, which Writer
// never sends) and remembers the server's retry: interval.
type Reader struct {
	Retry time.Duration
}

// Read calls fn for each event until the stream ends (nil), fn returns an
// error (ErrStop is returned as nil), or reading fails.
func (s *Reader) Read(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var (
		ev      Event
		data    bytes.Buffer
		hasData bool
	)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if hasData {
				ev.Data = bytes.Clone(data.Bytes())
				if ev.Event == "" {
					ev.Event = "message"
				}
				if err := fn(ev); err != nil {
					if errors.Is(err, ErrStop) {
						return nil
					}
					return err
				}
			}
			ev, hasData = Event{}, false
			data.Reset()
			continue
		}
		if line[0] == ':' { // a comment: heartbeat, "live"
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "id":
			ev.ID = string(value)
		case "event":
			ev.Event = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
				s.Retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return sc.Err()
}
