package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fangd/fangd/transport/sse"
)

// maxStdinMessage bounds a message or manifest read from stdin (the
// server's body limit is 8 MiB by default).
const maxStdinMessage = 8 << 20

func readAllStdin() ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdinMessage+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxStdinMessage {
		return nil, usagef("stdin holds more than %d bytes", maxStdinMessage)
	}
	return raw, nil
}

// turnAnswer is the part of an agent turn's answer the table shows; the
// rest is printed as is with --json.
type turnAnswer struct {
	Response string `json:"response"`
}

func sendCmd() *cobra.Command {
	o := &clientOptions{}
	var (
		session  string
		noStream bool
	)
	cmd := &cobra.Command{
		Use:   "send AGENT MESSAGE...",
		Short: "Send a message to an agent and print its reply (streamed when the server can)",
		Long: `Send one message to an agent (by name or id) and print the reply.

The reply is streamed as it is written through POST /api/agents/{id}/message/stream
(Server-Sent Events). A server without that endpoint (it answers 404 or 405) is
asked again through POST /api/agents/{id}/message, which answers once the turn
is done; fangd says so on stderr. --no-stream asks the plain endpoint directly.
Tool calls the agent makes are noted on stderr as they start.

With --json the turn's whole answer is printed as the server sent it: the
"done" event of the stream (response, usage, cost, session_id, ...), or the
plain endpoint's answer, which has the same fields.

MESSAGE is the remaining arguments joined by spaces; "-" reads it from stdin.
A turn has no time limit: it may wait for a human approval.`,
		Example: `  fangd send ops "what changed in the last hour?"
  fangd send ops --session 2d6c0c2e-7f8e-4a55-9d52-3b1c6f1f0a11 and then?
  git diff | fangd send reviewer -
  fangd send ops --json "status?" | jq -r .response`,
		Args: args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			msg := strings.Join(a[1:], " ")
			if msg == "-" {
				raw, err := readAllStdin()
				if err != nil {
					return err
				}
				msg = string(raw)
			}
			if strings.TrimSpace(msg) == "" {
				return usagef("the message is empty")
			}
			c, err := newClient(o)
			if err != nil {
				return err
			}
			body := map[string]string{"message": msg}
			if session != "" {
				body["session_id"] = session
			}
			path := "/api/agents/" + pathEscape(a[0]) + "/message"
			var fellBack *serverError
			if !noStream {
				err := c.streamTurn(cmd, path+"/stream", body)
				if !errors.As(err, &fellBack) || (fellBack.Status != http.StatusNotFound && fellBack.Status != http.StatusMethodNotAllowed) {
					return err
				}
				// No streaming endpoint, or no such agent: the plain
				// endpoint says which.
			}
			raw, err := c.call(cmd.Context(), request{method: "POST", path: path, body: body, unbounded: true})
			if err != nil {
				return err
			}
			if fellBack != nil {
				fmt.Fprintf(stderr(cmd), "fangd: %s does not stream replies (POST %s/stream answered %d); the reply came whole\n",
					c.base, path, fellBack.Status)
			}
			if c.json {
				printRaw(stdout(cmd), raw)
				return nil
			}
			var ans turnAnswer
			if err := decodeAnswer(raw, &ans); err != nil {
				return err
			}
			fmt.Fprintln(stdout(cmd), printable(ans.Response))
			return nil
		},
	}
	cmd.Flags().StringVar(&session, "session", "", "the session to continue (default: the agent's default session)")
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "use POST /api/agents/{id}/message: the reply comes whole")
	addClientFlags(cmd, o)
	return cmd
}

// streamTurn runs a turn through the streaming endpoint, printing text as
// it arrives. A 4xx/5xx before the stream begins is a *serverError (the
// caller falls back on 404/405); an error event ends it with the status
// the plain call would have had.
func (c *client) streamTurn(cmd *cobra.Command, path string, body any) error {
	resp, cancel, err := c.send(cmd.Context(), request{method: "POST", path: path, body: body, unbounded: true,
		header: map[string]string{"Accept": "text/event-stream"}})
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	out := stdout(cmd)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		// A server that answered the turn whole after all.
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return &unreachableError{base: c.base.String(), from: c.from, err: err}
		}
		if c.json {
			printRaw(out, raw)
			return nil
		}
		var ans turnAnswer
		if err := decodeAnswer(raw, &ans); err != nil {
			return err
		}
		fmt.Fprintln(out, printable(ans.Response))
		return nil
	}
	var (
		printed, endsInNewline bool
		result                 error
		finished               bool
	)
	rd := &sse.Reader{}
	err = rd.Read(resp.Body, func(ev sse.Event) error {
		switch ev.Event {
		case "chunk":
			var ch struct {
				Content string `json:"content"`
			}
			if json.Unmarshal(ev.Data, &ch) == nil && ch.Content != "" && !c.json {
				io.WriteString(out, printable(ch.Content))
				printed, endsInNewline = true, strings.HasSuffix(ch.Content, "\n")
			}
		case "tool_use":
			var tu struct {
				Tool string `json:"tool"`
			}
			if json.Unmarshal(ev.Data, &tu) == nil && !c.json {
				if printed && !endsInNewline {
					io.WriteString(out, "\n")
					endsInNewline = true
				}
				fmt.Fprintf(stderr(cmd), "[tool %s]\n", oneLine(tu.Tool))
			}
		case "done":
			finished = true
			if c.json {
				printRaw(out, ev.Data)
				return sse.ErrStop
			}
			var ans turnAnswer
			json.Unmarshal(ev.Data, &ans)
			switch {
			case !printed && ans.Response != "":
				fmt.Fprintln(out, printable(ans.Response))
			case printed && !endsInNewline:
				io.WriteString(out, "\n")
			}
			return sse.ErrStop
		case "error":
			finished = true
			var e struct {
				Error     string `json:"error"`
				Code      string `json:"code"`
				RequestID string `json:"request_id"`
				Status    int    `json:"status"`
			}
			json.Unmarshal(ev.Data, &e)
			if e.Status < 400 {
				e.Status = http.StatusInternalServerError
			}
			if printed && !endsInNewline {
				io.WriteString(out, "\n")
			}
			result = &serverError{Method: "POST", Path: path, Status: e.Status, Code: e.Code, Message: e.Error, RequestID: e.RequestID}
			return sse.ErrStop
		}
		return nil
	})
	if result != nil {
		return result
	}
	if cmd.Context().Err() != nil {
		return errors.New("interrupted: the turn is cancelled with the connection")
	}
	if !finished {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return &unreachableError{base: c.base.String(), from: c.from,
			err: fmt.Errorf("the stream ended before the turn finished: %w", err)}
	}
	return nil
}
