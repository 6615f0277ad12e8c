package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// maxSSELine bounds one line of an event stream: a log line or an event
// is far smaller; a server sending more is not one to trust with memory.
const maxSSELine = 16 << 20

// streamEvent is one dispatched Server-Sent Event.
type streamEvent struct {
	ID    string // "" when the event had no id: field
	Event string // "message" when the event had no event: field
	Data  []byte
}

// errStopStream is returned by an event handler that wants no more.
var errStopStream = errors.New("stop")

// sseReader parses an event stream (the WHATWG EventSource format, as
// transport/sse writes it) and remembers the server's retry: interval.
type sseReader struct {
	retry time.Duration
}

// read calls fn for each event until the stream ends (nil), fn returns an
// error (errStopStream is returned as nil), or reading fails.
func (s *sseReader) read(r io.Reader, fn func(streamEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxSSELine)
	var (
		ev      streamEvent
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
					if errors.Is(err, errStopStream) {
						return nil
					}
					return err
				}
			}
			ev, hasData = streamEvent{}, false
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
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return sc.Err()
}
