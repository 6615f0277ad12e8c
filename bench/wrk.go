package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WrkResult is what the harness reads from one wrk run.
type WrkResult struct {
	RequestsPerSec float64
	P50, P99       time.Duration
	Requests       int64
	// Non2xx counts responses outside 2xx/3xx: a run that measured errors
	// measured the wrong thing, so callers treat it as a failure.
	Non2xx int64
	// SocketErrors is connect+read+write+timeout errors.
	SocketErrors int64
}

// wrkLoad describes one load run: wrk -t1 -c<Connections> -d<Duration>
// --latency [-H header]... URL.
type wrkLoad struct {
	URL         string
	Headers     []string // "Name: value"
	Connections int
	Duration    time.Duration
	// Script, when set, is a wrk Lua script (-s): a POST body, say.
	Script string
}

// runWrk runs wrk and parses its report. The run is bounded by its own
// duration plus a grace period, so a wedged server cannot hang the bench.
func runWrk(ctx context.Context, l wrkLoad) (WrkResult, error) {
	if !strings.HasPrefix(l.URL, "http://127.0.0.1:") {
		return WrkResult{}, fmt.Errorf("refusing to load %s: the bench only sends traffic to 127.0.0.1", l.URL)
	}
	secs := max(1, int(l.Duration.Round(time.Second)/time.Second))
	args := []string{"-t1", "-c" + strconv.Itoa(l.Connections), "-d" + strconv.Itoa(secs) + "s", "--latency"}
	for _, h := range l.Headers {
		args = append(args, "-H", h)
	}
	if l.Script != "" {
		args = append(args, "-s", l.Script)
	}
	args = append(args, l.URL)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the harness
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("%w\nwrk output:\n%s", err, out)
	}
	return r, nil
}

// parseWrk reads the text report of `wrk --latency`.
func parseWrk(out string) (WrkResult, error) {
	var r WrkResult
	var haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(fields) == 2:
			v, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: bad Requests/sec %q", fields[1])
			}
			r.RequestsPerSec, haveRPS = v, true
		case (fields0(fields) == "50%" || fields0(fields) == "99%") && len(fields) == 2:
			d, err := parseWrkDuration(fields[1])
			if err != nil {
				return r, err
			}
			if fields[0] == "50%" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		case strings.Contains(line, " requests in ") && len(fields) > 0:
			n, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: bad request count in %q", line)
			}
			r.Requests = n
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: bad non-2xx count in %q", line)
			}
			r.Non2xx = n
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(fields); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(fields[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: bad socket error count in %q", line)
				}
				r.SocketErrors += n
			}
		}
	}
	if !haveRPS || !have50 || !have99 {
		return r, errors.New("wrk: report lacks Requests/sec or the 50%/99% latency lines (was --latency passed?)")
	}
	return r, nil
}

func fields0(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// parseWrkDuration reads wrk's time format: "%.2f" followed by us, ms, s,
// m or h.
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				break
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("wrk: bad latency %q", s)
}
