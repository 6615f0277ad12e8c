package channel

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// SplitBytes keeps every piece within the byte cap and whole characters,
// loses nothing, and cuts after the separator when one is in the piece's
// second half.
func TestSplitBytes(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want []string
	}{
		{"", 5, nil},
		{"short", 5, []string{"short"}},
		{"one two three", 8, []string{"one two ", "three"}},
		{"a twoword", 8, []string{"a twowor", "d"}}, // the space is in the first half: cut in the word
		{"üüü", 3, []string{"ü", "ü", "ü"}},
		{"€", 2, []string{"€"}}, // a character over the cap still goes
	} {
		if got := SplitBytes(tc.s, tc.n, ' '); strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("SplitBytes(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
	long := strings.Repeat("ab ü\n", 300)
	pieces := SplitBytes(long, 100, '\n')
	for _, p := range pieces {
		if len(p) > 100 || !utf8.ValidString(p) || !strings.HasSuffix(p, "\n") {
			t.Fatalf("piece %q", p)
		}
	}
	if strings.Join(pieces, "") != long {
		t.Fatal("pieces do not add up to the text")
	}
}
