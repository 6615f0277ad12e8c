package kernel

import (
	"testing"
	"unicode/utf8"
)

func TestCutUTF8KeepsWholeCharacters(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
		cut  bool
	}{
		{"abc", 5, "abc", false},
		{"abc", 3, "abc", false},
		{"abcd", 3, "abc", true},
		{"aé", 2, "a", true}, // é is 2 bytes: cutting at 2 would split it
		{"a€b", 3, "a", true},
		{"a€b", 4, "a€", true},
		{"€", 0, "", true},
		{"€", -1, "", true},
	} {
		got, cut := CutUTF8(c.s, c.n)
		if got != c.want || cut != c.cut || !utf8.ValidString(got) {
			t.Errorf("CutUTF8(%q, %d) = %q, %v; want %q, %v", c.s, c.n, got, cut, c.want, c.cut)
		}
	}
}
