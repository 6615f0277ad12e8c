package approval

import (
	"strings"
	"testing"
)

// FuzzParseCommand: chat text is untrusted. A command's parts must be the
// text's own words: the verb, the id as the second word, the rest exactly
// what follows it (spacing inside kept), never more than the text.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"/approve 1a2b3c4d", "  /approve@fangd_bot 1a2b3c4d 123456 ", "/reject 1a2b too risky,  really",
		"/REJECT", "/approved 1a2b", "hello", "/reject e because", "/approve a 123456", "/approve\u00a01a2b", "/reject\t1a\tb c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		verb, id, rest, ok := parseCommand(text)
		if !ok {
			if verb != "" || id != "" || rest != "" {
				t.Fatalf("%q: not a command but parts %q %q %q", text, verb, id, rest)
			}
			return
		}
		if verb != "approve" && verb != "reject" {
			t.Fatalf("%q: verb %q", text, verb)
		}
		fields := strings.Fields(text)
		if len(id)+len(rest) > len(text) {
			t.Fatalf("%q: parts longer than the text", text)
		}
		wantID := ""
		if len(fields) > 1 {
			wantID = fields[1]
		}
		if id != wantID {
			t.Fatalf("%q: id %q, want the second word %q", text, id, wantID)
		}
		if got, want := strings.Join(strings.Fields(rest), " "), strings.Join(fields[min(len(fields), 2):], " "); got != want {
			t.Fatalf("%q: rest %q, want the words after the id %q", text, rest, want)
		}
		if rest != "" && !strings.HasSuffix(strings.TrimSpace(text), rest) {
			t.Fatalf("%q: rest %q is not the text's tail", text, rest)
		}
	})
}
