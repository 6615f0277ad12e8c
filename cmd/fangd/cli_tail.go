package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// tailReconnectFor is how long a tail keeps trying to reconnect to a
// daemon that went away (a restart) before it gives up with exit 3.
const tailReconnectFor = time.Minute

// defaultRetry is the reconnect delay until the server names its own
// (transport/sse sends retry: 2000).
const defaultRetry = 2 * time.Second

// tail follows one SSE endpoint of the API: it reconnects when the stream
// ends, resuming with Last-Event-ID from the last id it saw, so nothing
// the server still holds is missed or repeated.
type tail struct {
	c     *client
	path  string
	query url.Values // the first connection's
	// resumed is the query of a reconnection (nil: query).
	resumed url.Values
	lastID  string
	count   int // stop after this many counted events (0: never)
	// handle prints one event and says whether it counts towards count.
	handle func(sse.Event) (bool, error)
}

func (t *tail) run(cmd *cobra.Command) error {
	ctx := cmd.Context()
	rd := &sse.Reader{Retry: defaultRetry}
	var (
		seen         int
		connected    bool
		failingSince time.Time
	)
	for {
		q := t.query
		if connected && t.resumed != nil {
			q = t.resumed
		}
		hdr := map[string]string{"Accept": "text/event-stream"}
		if t.lastID != "" {
			hdr["Last-Event-ID"] = t.lastID
		}
		resp, cancel, err := t.c.send(ctx, request{method: "GET", path: t.path, query: q, header: hdr, unbounded: true})
		if ctx.Err() != nil {
			return nil // stopped by a signal
		}
		if err != nil {
			var (
				ue *unreachableError
				se *serverError
			)
			retryable := errors.As(err, &ue) || (errors.As(err, &se) && se.Status >= 500)
			if !connected || !retryable {
				return err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > tailReconnectFor {
				return err
			}
			if !kernel.Sleep(ctx, rd.Retry) {
				return nil
			}
			continue
		}
		connected, failingSince = true, time.Time{}
		err = rd.Read(resp.Body, func(ev sse.Event) error {
			if ev.ID != "" {
				t.lastID = ev.ID
			}
			counted, err := t.handle(ev)
			if err != nil {
				return err
			}
			if counted {
				seen++
				if t.count > 0 && seen >= t.count {
					return sse.ErrStop
				}
			}
			return nil
		})
		cancel()
		resp.Body.Close()
		if ctx.Err() != nil || (t.count > 0 && seen >= t.count) {
			return nil
		}
		why := "the server ended the stream"
		if err != nil {
			why = err.Error()
		}
		from := "the start"
		if t.lastID != "" {
			from = "after id " + t.lastID
		}
		fmt.Fprintf(stderr(cmd), "fangd: %s; reconnecting from %s\n", why, from)
		if !kernel.Sleep(ctx, rd.Retry) {
			return nil
		}
	}
}

type tailFlags struct {
	since string
	count int
}

func (f *tailFlags) add(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.since, "since", "", "replay what the server still holds after this "+what+" id, then follow (sent as Last-Event-ID)")
	cmd.Flags().IntVar(&f.count, "count", 0, "stop after this many "+what+"s (default: follow until interrupted)")
}

// client checks the flags, then makes the tail's client.
func (f *tailFlags) client(o *clientOptions) (*client, error) {
	if f.since != "" {
		if _, err := strconv.ParseUint(f.since, 10, 64); err != nil {
			return nil, usagef("--since %q: want a non-negative integer id", f.since)
		}
	}
	if f.count < 0 {
		return nil, usagef("--count must not be negative")
	}
	return newClient(o)
}

func eventsCmd() *cobra.Command {
	o := &clientOptions{}
	var (
		typ string
		f   tailFlags
	)
	tailCmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow the event bus live (GET /api/comms/events/stream)",
		Long: `Follow the comms event bus: one line per event as it is committed. Without
--since only new events are shown; --since ID first replays what the bus still
holds after that id. When the stream ends (a daemon restart, a slow reader cut
by the server) the tail reconnects with Last-Event-ID, so no event is missed
or repeated; it gives up with exit 3 when the daemon stays unreachable for a
minute. A gap the bus no longer covers is reported on stderr ("resync").

--type takes one event type, a prefix ending in ".*", or "*" (see
docs/events.md for the types). --json prints each event's JSON as the server
sent it, one a line. Ctrl-C (or --count) ends the tail with exit 0.`,
		Example: `  fangd events tail
  fangd events tail --type 'approval.*'
  fangd events tail --type agent.message --count 1 --json | jq .detail
  fangd events tail --since 120`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client(o)
			if err != nil {
				return err
			}
			q := url.Values{}
			if typ != "" {
				q.Set("type", typ)
			}
			out := stdout(cmd)
			t := &tail{c: c, path: "/api/comms/events/stream", query: q, lastID: f.since, count: f.count,
				handle: func(ev sse.Event) (bool, error) {
					if ev.Event == "resync" {
						fmt.Fprintf(stderr(cmd), "fangd: resync: %s\n", oneLine(string(ev.Data)))
						return false, nil
					}
					if c.json {
						printRaw(out, ev.Data)
						return true, nil
					}
					printEvent(out, ev.Data)
					return true, nil
				}}
			return t.run(cmd)
		},
	}
	tailCmd.Flags().StringVar(&typ, "type", "", `event type filter: a type, "prefix.*" or "*"`)
	f.add(tailCmd, "event")
	cmd := group("events", "Follow the comms event bus", "  fangd events tail --type 'agent.*'", tailCmd)
	addClientFlags(cmd, o)
	return cmd
}

// printEvent prints one bus event as a line: time, id, type, route, detail.
func printEvent(w io.Writer, data []byte) {
	var e struct {
		ID        uint64          `json:"id"`
		Timestamp string          `json:"timestamp"`
		Type      string          `json:"type"`
		Source    string          `json:"source"`
		Target    string          `json:"target"`
		Detail    json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(data, &e) != nil {
		printRaw(w, []byte(oneLine(string(data))))
		return
	}
	route := orDash(e.Source)
	if e.Target != "" {
		route += " -> " + e.Target
	}
	detail := ""
	if len(e.Detail) > 0 && string(e.Detail) != "null" {
		var b bytes.Buffer
		if json.Compact(&b, e.Detail) == nil {
			detail = "  " + b.String()
		}
	}
	fmt.Fprintln(w, oneLine(fmt.Sprintf("%s  #%d  %s  %s%s", e.Timestamp, e.ID, e.Type, route, detail)))
}

func logsCmd() *cobra.Command {
	o := &clientOptions{}
	var (
		level string
		lines int
		f     tailFlags
	)
	tailCmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow the daemon's log (GET /api/logs/stream)",
		Long: `Follow the daemon's log lines live. It starts with the last --lines lines
(default: the server's 200), or with what follows --since ID. When the stream
ends it reconnects with Last-Event-ID from the last line seen, so a restart of
the tail's connection loses nothing the server's ring still holds; lines that
fell out of the ring meanwhile are reported on stderr ("gap"). It gives up
with exit 3 when the daemon stays unreachable for a minute.

Lines are shown as "time LEVEL message key=value ..."; --json prints each
line's JSON as the daemon logged it. Ctrl-C (or --count) ends with exit 0.`,
		Example: `  fangd logs tail
  fangd logs tail --level warn --lines 0
  fangd logs tail --json | jq 'select(.level == "error")'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client(o)
			if err != nil {
				return err
			}
			q := url.Values{}
			if level != "" {
				q.Set("level", level)
			}
			resumed := url.Values{}
			for k, v := range q {
				resumed[k] = v
			}
			if cmd.Flags().Changed("lines") {
				if lines < 0 {
					return usagef("--lines must not be negative")
				}
				q.Set("tail", strconv.Itoa(lines))
			}
			out := stdout(cmd)
			t := &tail{c: c, path: "/api/logs/stream", query: q, resumed: resumed, lastID: f.since, count: f.count,
				handle: func(ev sse.Event) (bool, error) {
					switch ev.Event {
					case "gap":
						fmt.Fprintf(stderr(cmd), "fangd: log lines were missed: %s\n", oneLine(string(ev.Data)))
						return false, nil
					case "log":
						if c.json {
							printRaw(out, ev.Data)
						} else {
							printLogLine(out, ev.Data)
						}
						return true, nil
					}
					return false, nil
				}}
			return t.run(cmd)
		},
	}
	tailCmd.Flags().StringVar(&level, "level", "", "least level shown: trace, debug, info, warn or error")
	tailCmd.Flags().IntVar(&lines, "lines", 0, "start with the last N lines (default: the server's 200)")
	f.add(tailCmd, "log line")
	cmd := group("logs", "Follow the daemon's log", "  fangd logs tail --level warn", tailCmd)
	addClientFlags(cmd, o)
	return cmd
}

// printLogLine prints one zerolog JSON line as "time LEVEL message k=v...".
func printLogLine(w io.Writer, data []byte) {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		printRaw(w, []byte(oneLine(string(data))))
		return
	}
	str := func(k string) string {
		var s string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) == nil {
			delete(m, k)
			return s
		}
		return ""
	}
	ts, lvl, msg := str("time"), strings.ToUpper(str("level")), str("message")
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", ts, lvl, msg)
	for _, k := range keys {
		v := string(m[k])
		var s string
		if json.Unmarshal(m[k], &s) == nil && !strings.ContainsAny(s, " \t\"=") && s != "" {
			v = s
		}
		fmt.Fprintf(&b, " %s=%s", k, oneLine(v))
	}
	fmt.Fprintln(w, oneLine(b.String()))
}
