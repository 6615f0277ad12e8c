package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// runStartup starts fangd on an empty home Opts.Starts times, measuring
// process start until GET /api/health answers 200 each time. The last
// start stays up as the daemon the HTTP scenarios load, and its RSS after a
// short idle spell is the idle RSS.
func runStartup(ctx context.Context, env *Env) ([]Row, error) {
	n := max(1, env.Opts.Starts)
	var times []time.Duration
	for i := range n {
		var d *Daemon
		var err error
		if i == n-1 {
			d, err = env.Daemon(ctx)
		} else {
			d, err = env.startDaemon(ctx)
			if err == nil {
				err = d.Stop()
			}
		}
		if err != nil {
			return nil, err
		}
		times = append(times, d.Healthy)
	}
	slices.Sort(times)
	median := times[len(times)/2]
	rows := []Row{{
		Metric:  fmt.Sprintf("start to healthy, empty home (median of %d)", n),
		Value:   fmt.Sprintf("%s (min %s, max %s)", ms(median), ms(times[0]), ms(times[len(times)-1])),
		Target:  "< 300 ms",
		Verdict: verdict(median < 300*time.Millisecond),
	}}

	d, err := env.Daemon(ctx)
	if err != nil {
		return rows, err
	}
	rss, err := d.SettledRSS(ctx)
	if err != nil {
		return rows, err
	}
	rows = append(rows, Row{
		Metric:  fmt.Sprintf("idle RSS (%s after start)", idleSettle),
		Value:   mib(rss),
		Target:  "< 40 MiB",
		Verdict: verdict(rss < 40<<20),
	})
	// The split says which half moved: the anonymous part is what the
	// daemon allocates (heap, stacks, Badger's memtable arena as far as
	// touched); the file-backed part is almost all the fangd binary's own
	// mapped pages, which grow with the binary (docs/bench.md, "Idle RSS
	// and start-up").
	if anon, file, err := rssParts(d.cmd.Process.Pid); err == nil {
		rows = append(rows, infoRow("  of which anonymous (heap, stacks) / file-backed (mostly the binary's mapped pages)", mib(anon)+" / "+mib(file)))
	}
	return rows, nil
}

// runLoadedRSS reports the daemon's RSS after the HTTP scenarios: no
// target, but growth here is what a memory leak or an unsized cache looks
// like.
func runLoadedRSS(ctx context.Context, env *Env) ([]Row, error) {
	d, err := env.Daemon(ctx)
	if err != nil {
		return nil, err
	}
	rss, err := d.RSS()
	if err != nil {
		return nil, err
	}
	return []Row{infoRow("RSS after the HTTP load", mib(rss))}, nil
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
