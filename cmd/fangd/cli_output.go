package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
)

// table prints rows under a header, columns aligned (text/tabwriter).
// Cells are single-line: tabs and newlines in server data would break
// the alignment, so they become spaces.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = oneLine(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// tableOf prints items as a table under header, one row each.
func tableOf[T any](w io.Writer, header []string, items []T, row func(T) []string) error {
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		rows = append(rows, row(it))
	}
	return table(w, header, rows)
}

// pagedTable prints one page of a list as tableOf does on stdout, then,
// when there is a next page, the note on stderr saying how to get it.
func pagedTable[T any](cmd *cobra.Command, header []string, items []T, offset, total int, next *int, row func(T) []string) error {
	if err := tableOf(stdout(cmd), header, items, row); err != nil {
		return err
	}
	pageNote(stderr(cmd), len(items), offset, total, next)
	return nil
}

// fields prints name/value pairs, one a line, values aligned.
func fields(w io.Writer, pairs ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], oneLine(pairs[i+1]))
	}
	return tw.Flush()
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// printable drops control characters but newlines and tabs from text
// that came from the server (an agent's reply, an error message, a log
// line): an escape sequence in it must not drive the user's terminal.
// --json output needs none of this: JSON escapes control characters.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// orDash shows an empty value as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortID is the first 8 characters of an id, as tables show approval ids
// (any unique prefix is accepted back).
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// clip shortens s to n runes with an ellipsis.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// since says how long ago t was, coarsely ("5s ago", "3m ago", "2h ago",
// else the date); a zero time is "-".
func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + coarse(-d)
	case d < 48*time.Hour:
		return coarse(d) + " ago"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func coarse(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh", int(d.Hours()))
}

// pageNote says on stderr that a table shows one page of a longer list.
func pageNote(w io.Writer, shown, offset, total int, next *int) {
	if next != nil {
		fmt.Fprintf(w, "(%d-%d of %d; --offset %d for more)\n", offset+1, offset+shown, total, *next)
	}
}

// printJSONLine writes v as one line of JSON (for --json where the server
// answered no body).
func printJSONLine(w io.Writer, v any) {
	raw, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", raw)
}
