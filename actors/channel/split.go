package channel

import (
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/fangd/fangd/actors/kernel"
)

// Split cuts text into pieces of at most limit characters (runes, or UTF-16
// code units when utf16Units is set, as Telegram counts), preferring to cut
// at a paragraph break, then a line break, then the end of a sentence, then
// a space, and only then inside a word. limit <= 0 means no limit.
func Split(text string, limit int, utf16Units bool) []string {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil
	}
	if limit <= 0 || length(text, utf16Units) <= limit {
		return []string{text}
	}
	var out []string
	for text != "" {
		if length(text, utf16Units) <= limit {
			out = append(out, text)
			break
		}
		hard := prefixBytes(text, limit, utf16Units) // the longest prefix that fits
		cut := bestCut(text[:hard])
		if cut <= 0 {
			cut = hard
		}
		piece := strings.TrimRight(text[:cut], " \t\n")
		if piece != "" {
			out = append(out, piece)
		}
		text = strings.TrimLeft(text[cut:], " \t\n")
	}
	return out
}

func length(s string, utf16Units bool) int {
	if !utf16Units {
		return utf8.RuneCountInString(s)
	}
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// prefixBytes is the byte length of the longest prefix of s that is at
// most limit characters.
func prefixBytes(s string, limit int, utf16Units bool) int {
	n := 0
	for i, r := range s {
		w := 1
		if utf16Units {
			w = utf16.RuneLen(r)
		}
		if n+w > limit {
			return i
		}
		n += w
	}
	return len(s)
}

// bestCut returns where to end a piece within window: after the last
// paragraph break, line break, sentence end or space in its second half
// (cutting earlier would make many tiny pieces), or 0 when there is none.
func bestCut(window string) int {
	half := len(window) / 2
	for _, sep := range []string{"\n\n", "\n", ". ", "! ", "? ", " "} {
		if i := strings.LastIndex(window, sep); i >= half && i > 0 {
			return i + len(sep)
		}
	}
	return 0
}

// SplitBytes cuts s into pieces of at most n bytes, for a platform that
// counts bytes (an IRC line, an ntfy message): on a character boundary,
// after the last sep in the piece's second half when there is one (sep
// stays at the end of its piece). An empty s has no pieces.
func SplitBytes(s string, n int, sep byte) []string {
	var out []string
	for len(s) > n {
		piece, _ := kernel.CutUTF8(s, n)
		if piece == "" { // a character longer than n goes whole
			_, w := utf8.DecodeRuneInString(s)
			piece = s[:w]
		}
		if i := strings.LastIndexByte(piece, sep); i > len(piece)/2 {
			piece = piece[:i+1]
		}
		out = append(out, piece)
		s = s[len(piece):]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}
