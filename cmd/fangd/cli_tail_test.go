package main

import (
	"bytes"
	"testing"
)

// A log line prints as "time LEVEL message" and then the other fields in
// key order, bare where a string needs no quoting and as JSON otherwise,
// whatever order the daemon wrote them in.
func TestPrintLogLineOrdersFields(t *testing.T) {
	var b bytes.Buffer
	printLogLine(&b, []byte(`{"zeta":"z","level":"warn","alpha":3,"message":"disk low","mid":"two words","time":"2026-12-08T00:00:00Z"}`))
	want := "2026-12-08T00:00:00Z WARN  disk low alpha=3 mid=\"two words\" zeta=z\n"
	if got := b.String(); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
