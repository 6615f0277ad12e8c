package main

import (
	"strings"
	"testing"
	"time"
)

// Real `wrk --latency` reports (wrk 4.1.0), one clean and one with errors.
const wrkClean = `Running 1s test @ http://127.0.0.1:45991/api/health
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.39ms    1.04ms  12.54ms   83.13%
    Req/Sec    43.55k     2.60k   50.29k    90.00%
  Latency Distribution
     50%    1.20ms
     75%    1.43ms
     90%    2.26ms
     99%    6.04ms
  43502 requests in 1.01s, 21.70MB read
Requests/sec:  43133.04
Transfer/sec:     21.51MB
`

const wrkErrors = `Running 1s test @ http://127.0.0.1:45991/api/nope
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    81.47us  162.01us   3.43ms   97.87%
    Req/Sec    54.83k     9.11k   70.57k    54.55%
  Latency Distribution
     50%   60.00us
     75%   71.00us
     90%   88.00us
     99%    2.10s
  59927 requests in 1.10s, 34.23MB read
  Socket errors: connect 1, read 2, write 0, timeout 4
  Non-2xx or 3xx responses: 59927
Requests/sec:  54482.16
Transfer/sec:     31.12MB
`

func TestParseWrkCleanRun(t *testing.T) {
	r, err := parseWrk(wrkClean)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{RequestsPerSec: 43133.04, P50: 1200 * time.Microsecond, P99: 6040 * time.Microsecond, Requests: 43502}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
}

func TestParseWrkCountsErrors(t *testing.T) {
	r, err := parseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	if r.Non2xx != 59927 || r.SocketErrors != 7 || r.P50 != 60*time.Microsecond || r.P99 != 2100*time.Millisecond {
		t.Fatalf("got %+v", r)
	}
}

func TestParseWrkRejectsReportWithoutLatency(t *testing.T) {
	// Without --latency there is no distribution: that must be an error,
	// not a silent p99 of zero.
	noDist := strings.Replace(wrkClean, "     99%    6.04ms\n", "", 1)
	if _, err := parseWrk(noDist); err == nil {
		t.Fatal("want an error for a report without the 99% line")
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("want an error for wrk's connect failure")
	}
}

func TestParseWrkDurationUnits(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"480.00us": 480 * time.Microsecond,
		"1.20ms":   1200 * time.Microsecond,
		"2.00s":    2 * time.Second,
		"1.50m":    90 * time.Second,
		"1.00h":    time.Hour,
	} {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ms", "1.2", "-1ms", "abcus"} {
		if _, err := parseWrkDuration(bad); err == nil {
			t.Errorf("parseWrkDuration(%q): want an error", bad)
		}
	}
}

func TestTableIsAlignedAndCountsTargets(t *testing.T) {
	rows := []Row{
		{Metric: "a", Value: "1", Target: "< 2", Verdict: Pass},
		{Metric: "longer metric", Value: "3", Target: "< 2", Verdict: Fail},
		infoRow("context", "x"),
	}
	out := renderReport(Options{Connections: 64, Duration: time.Second}, rows, "")
	if !strings.Contains(out, "1 of 2 targets met") {
		t.Fatalf("summary missing:\n%s", out)
	}
	var widths []int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "|") {
			widths = append(widths, len(l))
		}
	}
	if len(widths) != 5 {
		t.Fatalf("want header, rule and 3 rows:\n%s", out)
	}
	for _, w := range widths {
		if w != widths[0] {
			t.Fatalf("rows are not aligned:\n%s", out)
		}
	}
}

func TestMedianAndCeilingSummary(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median even = %v", m)
	}
	steady := ceilingSummary([]WrkResult{{RequestsPerSec: 100000, P99: time.Millisecond}, {RequestsPerSec: 110000, P99: 3 * time.Millisecond}})
	if steady != "100,000 / 110,000 (p99 1.00 ms - 3.00 ms)" {
		t.Fatalf("steady = %q", steady)
	}
	drifted := ceilingSummary([]WrkResult{{RequestsPerSec: 100000}, {RequestsPerSec: 120000}})
	if !strings.Contains(drifted, "drifted") {
		t.Fatalf("a 20%% spread is not flagged: %q", drifted)
	}
}
