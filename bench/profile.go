package main

import (
	"context"
	"fmt"
	"io"
	"math"
	nethttp "net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// daemonProfiler collects a measured daemon's CPU, block and mutex
// profiles over exactly the runs that measure it (-profile DIR), from the
// net/http/pprof the daemon serves when started with FANGD_PPROF_LISTEN.
// Block and mutex profiles are fetched as deltas over the same window
// (?seconds=N), so each file holds only that run's waits, not the
// daemon's whole life. The files are named <name>-{cpu,block,mutex}.pb.gz;
// `go tool pprof -top DIR/mcpgw-fangd-c1-*-cpu.pb.gz` merges rounds.
type daemonProfiler struct {
	dir  string
	addr string // the daemon's pprof address, 127.0.0.1:port
	logf func(string, ...any)
}

// pprofEnv is the environment that makes a daemon serve pprof for p (nil
// p: none).
func (p *daemonProfiler) pprofEnv() []string {
	if p == nil {
		return nil
	}
	return []string{"FANGD_PPROF_LISTEN=" + p.addr}
}

// newDaemonProfiler returns nil when profiling is off. addr is the
// -daemon-pprof address when given, else a free loopback port.
func newDaemonProfiler(env *Env, addr string) (*daemonProfiler, error) {
	if env.Opts.ProfileDir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(env.Opts.ProfileDir, 0o755); err != nil {
		return nil, fmt.Errorf("-profile: %w", err)
	}
	if addr == "" {
		a, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		addr = a
	}
	return &daemonProfiler{dir: env.Opts.ProfileDir, addr: addr, logf: env.logf}, nil
}

// start begins the three profiles for a run of about d and returns the
// function that waits for them and writes the files. Profiles cover whole
// seconds (pprof's unit), so a run is rounded up; the daemon is idle
// before and after its own runs, so the extra fraction adds no samples.
// A nil profiler does nothing.
func (p *daemonProfiler) start(ctx context.Context, name string, d time.Duration) (wait func()) {
	if p == nil {
		return func() {}
	}
	secs := int(math.Ceil(d.Seconds()))
	var wg sync.WaitGroup
	for kind, endpoint := range map[string]string{"cpu": "profile", "block": "block", "mutex": "mutex"} {
		file := filepath.Join(p.dir, name+"-"+kind+".pb.gz")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", p.addr, endpoint, secs), file, d+30*time.Second); err != nil {
				p.logf("profile %s: %v", file, err)
			}
		}()
	}
	// The CPU profile starts when its request arrives: give the three
	// requests a moment to reach the daemon before the run begins.
	time.Sleep(20 * time.Millisecond)
	return wg.Wait
}

func (p *daemonProfiler) fetch(ctx context.Context, url, file string, timeout time.Duration) error {
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := nethttp.NewRequestWithContext(c, "GET", url, nil)
	if err != nil {
		return err
	}
	// Loopback only, and no proxy from the environment.
	resp, err := (&nethttp.Client{Transport: &nethttp.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != nethttp.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileSlug makes a file name part of a route path with its query.
func profileSlug(path string) string {
	out := make([]byte, 0, len(path))
	for _, c := range []byte(strings.TrimPrefix(path, "/")) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			out = append(out, c)
		default:
			out = append(out, '_')
		}
	}
	return string(out)
}
