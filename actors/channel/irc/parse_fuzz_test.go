package irc

import (
	"strings"
	"testing"
)

// format writes m back as a protocol line (the last parameter always in
// trailing form), for the round trip.
func format(m *message) string {
	var b strings.Builder
	if m.prefix != "" || strings.HasPrefix(m.command, ":") {
		b.WriteString(":" + m.prefix + " ")
	}
	b.WriteString(m.command)
	for i, p := range m.params {
		if i == len(m.params)-1 {
			b.WriteString(" :" + p)
		} else {
			b.WriteString(" " + p)
		}
	}
	return b.String()
}

// FuzzParse: lines come from the IRC server (and, relayed, from anyone on
// it). parse must not panic, must return a command for every line it
// accepts, must not invent more than the line holds, and what it returns
// must read back the same. lineSafe must leave nothing that ends a line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"@time=x :nick!u@h PRIVMSG #c :hello there :)\r\n", "PING :tok", ":srv 001 fangdbot :Welcome",
		":srv CAP * LS * :multi-prefix sasl=PLAIN", "AUTHENTICATE +", ":a!b@c KICK #c fangdbot :bye", "PING :tok\rJOIN #x\r\n",
		"@", ":", " :x", "CMD  a   b :", ":p\x00 CMD \x00", "\xff\xfe PRIVMSG x :y", "\xff\r\x00", "NOTICE * :*** ident"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parse(line)
		if safe := lineSafe(line); strings.ContainsAny(safe, "\r\n\x00") || len(safe) != len(line) {
			t.Fatalf("lineSafe(%q) = %q", line, safe)
		}
		if err != nil {
			return
		}
		if m.command == "" {
			t.Fatalf("%q: accepted without a command", line)
		}
		n := len(m.prefix) + len(m.command)
		for _, p := range m.params {
			n += len(p)
		}
		if len(m.params) > len(line) || n > 4*len(line) {
			t.Fatalf("%q: %d params, %d bytes out of %d", line, len(m.params), n, len(line))
		}
		if f := format(m); strings.HasSuffix(f, "\r") || strings.HasSuffix(f, "\n") {
			// A word that ends in CR ("CMD \r "): written last it would
			// read as the line's end. The real reader ends lines at LF,
			// so only CR can be left inside a word.
			return
		}
		again, err := parse(format(m))
		if err != nil {
			t.Fatalf("%q: its own formatting %q does not parse: %v", line, format(m), err)
		}
		if again.prefix != m.prefix || again.command != m.command || strings.Join(again.params, "\x00") != strings.Join(m.params, "\x00") ||
			len(again.params) != len(m.params) {
			t.Fatalf("%q: round trip %+v -> %q -> %+v", line, m, format(m), again)
		}
	})
}
