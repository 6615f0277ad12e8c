// Command bench is fangd's load harness (`make bench`). It starts the real
// bin/fangd on a temp home, drives it with wrk, compares each route with a
// bare fasthttp ceiling measured in the same run, measures durable audit
// appends in-process, and prints one table of results against the targets.
// It also writes the table to bench/out/latest.md. See docs/bench.md.
//
// Scenarios are listed in scenario.go, one file each.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	opts := Options{}
	flag.StringVar(&opts.Fangd, "fangd", "bin/fangd", "fangd binary to measure")
	flag.DurationVar(&opts.Duration, "duration", 10*time.Second, "length of each measured wrk run")
	flag.DurationVar(&opts.Warmup, "warmup", 2*time.Second, "discarded wrk run before the first measured run of each URL (0: none)")
	flag.IntVar(&opts.Rounds, "rounds", 3, "route runs per HTTP scenario, alternating with ceiling runs; the ratio is their median")
	flag.IntVar(&opts.Connections, "connections", 64, "wrk connections (-c)")
	flag.DurationVar(&opts.AppendFor, "append-duration", 5*time.Second, "length of each audit-append run")
	flag.IntVar(&opts.Writers, "writers", 64, "concurrent audit writers")
	flag.IntVar(&opts.AppendRounds, "append-rounds", 3, "audit-append: alternating rounds (one fsync per append, group commit), plus a closing one-per-append run; the speed-up is the median of the rounds")
	flag.IntVar(&opts.Starts, "starts", 3, "fresh starts sampled for start-to-healthy")
	flag.StringVar(&opts.TempDir, "tmp", "", "parent directory for temp homes (default: the system temp dir; must be a real disk, not tmpfs, for fsync numbers to mean anything)")
	flag.DurationVar(&opts.ReplyFor, "reply-duration", 10*time.Second, "measured length of channel-reply (after a 2s warm-up)")
	flag.IntVar(&opts.ReplyRate, "reply-rate", 500, "channel-reply: inbound messages per second over all 100 channels")
	flag.DurationVar(&opts.LLMLatency, "llm-latency", 50*time.Millisecond, "channel-reply: the fake LLM's fixed latency, subtracted from each round trip")
	flag.DurationVar(&opts.MCPDuration, "mcp-duration", 3*time.Second, "mcp-gateway: each timed run (one system, one concurrency)")
	flag.IntVar(&opts.MCPRounds, "mcp-rounds", 3, "mcp-gateway: alternating rounds per concurrency (stdio, fangd, mcp-proxy each)")
	flag.StringVar(&opts.DaemonPprof, "daemon-pprof", "", "mcp-gateway: serve the measured fangd's net/http/pprof on this loopback address (e.g. 127.0.0.1:6061), with block and mutex profiling on")
	flag.StringVar(&opts.ProfileDir, "profile", "", "write the measured daemon's CPU, block and mutex profiles of each measured run into this directory (mcp-gateway: each fangd round; wrk scenarios: each route run)")
	mcpClients := flag.String("mcp-clients", "1,16,64", "mcp-gateway: the client counts measured, comma-separated")
	out := flag.String("out", "bench/out/latest.md", "where to write the result table (empty: nowhere)")
	only := flag.String("run", "", "run only scenarios whose name matches this regexp (e.g. 'health|audit-recent')")
	cpuprofile := flag.String("cpuprofile", "", "write the harness's own CPU profile here (covers in-process scenarios such as audit-append)")
	flag.Parse()
	if opts.Duration < time.Second || opts.Rounds < 1 || opts.MCPRounds < 1 || opts.MCPDuration <= 0 || opts.Connections < 1 || opts.Writers < 1 || opts.AppendFor <= 0 || opts.AppendRounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -duration must be >= 1s; -rounds, -connections, -writers and -append-duration must be positive")
		return 2
	}
	for _, f := range strings.Split(*mcpClients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "bench: -mcp-clients: want positive integers, got", *mcpClients)
			return 2
		}
		opts.MCPClients = append(opts.MCPClients, n)
	}
	filter, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: -run:", err)
		return 2
	}

	// SIGINT/SIGTERM cancel the scenarios; the deferred Close still stops
	// the daemon and servers.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	env := &Env{Opts: opts, Log: os.Stderr}
	defer env.Close()
	if note := tmpfsNote(opts.TempDir); note != "" {
		env.logf("%s", note)
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cpuprofile:", err)
			return 2
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	loadBefore := loadAverage()
	var rows []Row
	failed := false
	for _, s := range scenarios {
		if !filter.MatchString(s.Name) {
			continue
		}
		env.logf("scenario %s: %s", s.Name, s.About)
		r, err := s.Run(ctx, env)
		rows = append(rows, r...)
		if err != nil {
			failed = true
			msg := firstLine(err.Error())
			if ctx.Err() != nil {
				msg = "interrupted"
			}
			rows = append(rows, Row{Metric: s.Name, Value: msg, Target: "-", Verdict: Error})
			env.logf("scenario %s failed: %v", s.Name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	env.Close()

	report := renderReport(opts, rows, loadBefore+" before, "+loadAverage()+" after")
	fmt.Print("\n" + report)
	if *out != "" {
		if err := writeReport(*out, report); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// renderReport is the table with a header line that says when, where and
// how it was measured.
func renderReport(opts Options, rows []Row, load string) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "fangd bench, %s, %s, %d CPUs (GOMAXPROCS %d), %s/%s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "wrk -t1 -c%d -d%s --latency (after a %s warm-up), %d round(s) per route; audit appends: %d writers x %s per run, %d alternating round(s)\n",
		opts.Connections, opts.Duration, opts.Warmup, opts.Rounds, opts.Writers, opts.AppendFor, opts.AppendRounds)
	if load != "" {
		// Other processes on the machine move every number: say how busy it was.
		fmt.Fprintf(&b, "1-minute load average: %s\n", load)
	}
	b.WriteString("\n")
	writeTable(&b, rows)
	pass, total := 0, 0
	for _, r := range rows {
		switch r.Verdict {
		case Pass:
			pass++
			total++
		case Fail, Error:
			total++
		}
	}
	fmt.Fprintf(&b, "\n%d of %d targets met\n", pass, total)
	return b.String()
}

// writeTable prints rows as an aligned markdown table.
func writeTable(w io.Writer, rows []Row) {
	head := [4]string{"metric", "value", "target", "result"}
	width := [4]int{}
	cells := make([][4]string, 0, len(rows))
	for _, r := range rows {
		cells = append(cells, [4]string{r.Metric, r.Value, r.Target, string(r.Verdict)})
	}
	for _, c := range append([][4]string{head}, cells...) {
		for i, s := range c {
			width[i] = max(width[i], len(s))
		}
	}
	line := func(c [4]string) {
		fmt.Fprintf(w, "| %-*s | %-*s | %-*s | %-*s |\n", width[0], c[0], width[1], c[1], width[2], c[2], width[3], c[3])
	}
	line(head)
	fmt.Fprintf(w, "|%s|%s|%s|%s|\n", strings.Repeat("-", width[0]+2), strings.Repeat("-", width[1]+2),
		strings.Repeat("-", width[2]+2), strings.Repeat("-", width[3]+2))
	for _, c := range cells {
		line(c)
	}
}

// loadAverage is the 1-minute load average from /proc/loadavg, or "?".
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func writeReport(path, report string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(report), 0o644)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// tmpfsNote warns when temp homes would live on tmpfs, where fsync is free
// and the append numbers would flatter both modes.
func tmpfsNote(dir string) string {
	if dir == "" {
		dir = os.TempDir()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	const tmpfsMagic = 0x01021994
	if st.Type == tmpfsMagic {
		return dir + " is tmpfs: fsync costs nothing there, so the audit-append rows are not meaningful; pass -tmp DIR on a real disk"
	}
	return ""
}
