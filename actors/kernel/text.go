package kernel

// CutUTF8 cuts s to at most n bytes without splitting a character, and
// says whether it cut. Records bound for etcd and error messages that
// echo input are capped in bytes; a cut through a multi-byte character
// would leave invalid UTF-8, which JSON encoders replace with U+FFFD.
func CutUTF8(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	if n < 0 {
		n = 0
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n], true
}
