package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	// idleSettle is how long the daemon sits idle before SettledRSS reads
	// its RSS, so start-up allocations that are about to be collected
	// settle.
	idleSettle    = 2 * time.Second
	healthTimeout = 15 * time.Second // start to healthy, before giving up
	stopTimeout   = 15 * time.Second // SIGTERM to exit, before SIGKILL
)

// Daemon is one `fangd serve` child process on a loopback port.
type Daemon struct {
	Home    string
	Addr    string // 127.0.0.1:port
	APIKey  string
	Healthy time.Duration // process start until GET /api/health answered 200

	cmd    *exec.Cmd
	stderr *tailBuffer
	exited chan struct{}
	mu     sync.Mutex
	err    error // from Wait, once exited is closed
}

// StartDaemon writes a config into home and starts bin serving it: an API
// key (so the authenticated paths are the ones measured), the rate limiter
// off (it would turn load into 429s), and warn-level logs (a log line per
// request would measure the logger). It returns once GET /api/health is
// 200, or an error; a non-nil Daemon must be stopped either way.
func StartDaemon(ctx context.Context, bin, home string) (*Daemon, error) {
	return StartDaemonWith(ctx, bin, home, "", nil)
}

// StartDaemonWith is StartDaemon with extra TOML appended to the config
// and extra environment variables (scenarios that need providers or
// other sections).
func StartDaemonWith(ctx context.Context, bin, home, extraConfig string, env []string) (*Daemon, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("fangd binary: %w (run make build)", err)
	}
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	d := &Daemon{Home: home, Addr: addr, APIKey: hex.EncodeToString(key), stderr: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	cfgPath := filepath.Join(home, "config.toml")
	cfg := fmt.Sprintf("api_listen = %q\napi_key = %q\n\n[rate_limit]\napi_requests_per_minute = 0\nexempt_loopback = true\n\n[log]\nlevel = \"warn\"\n", addr, d.APIKey) + extraConfig
	if !strings.Contains(extraConfig, "[network_policy]") {
		// The scenarios' fake platforms and receivers listen on loopback,
		// which the network policy refuses unless allow-listed.
		cfg += "\n[network_policy]\nallow_hosts = [\"127.0.0.1/32\"]\n"
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(bin, "serve", "--home", home, "--config", cfgPath, "--listen", addr)
	d.cmd.Env = append(cleanEnv(), env...)
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	// If the harness dies without running its cleanups, the kernel kills
	// the daemon rather than leaving it serving.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	begin := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		err := d.cmd.Wait()
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
		close(d.exited)
	}()
	if err := d.waitHealthy(ctx, begin); err != nil {
		return d, err
	}
	d.Healthy = time.Since(begin)
	return d, nil
}

// cleanEnv is the harness's environment without FANGD_* variables, which
// would override the bench's config (a developer's FANGD_API_KEY, say).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FANGD_") {
			env = append(env, kv)
		}
	}
	return env
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1. Another
// process could take it before fangd binds it; StartDaemon then fails with
// fangd's own "address in use" message.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitHealthy polls GET /api/health every millisecond (a refused connect
// costs microseconds) until it answers 200, the process exits, or the
// deadline passes.
func (d *Daemon) waitHealthy(ctx context.Context, begin time.Time) error {
	client := &fasthttp.Client{ReadTimeout: time.Second, WriteTimeout: time.Second, MaxIdleConnDuration: time.Second}
	deadline := begin.Add(healthTimeout)
	url := d.URL("/api/health")
	for {
		status, _, err := client.GetTimeout(nil, url, time.Second)
		if err == nil && status == fasthttp.StatusOK {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("fangd exited before it was healthy: %v\n%s", d.exitErr(), d.stderr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fangd not healthy after %s (last: status %d, %v)\n%s", healthTimeout, status, err, d.stderr)
		}
	}
}

func (d *Daemon) exitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// URL is http://<addr><path>.
func (d *Daemon) URL(path string) string { return "http://" + d.Addr + path }

// AuthHeader is the header wrk and the client send on authenticated routes.
func (d *Daemon) AuthHeader() string { return "Authorization: Bearer " + d.APIKey }

// RSS is the daemon's resident set (VmRSS) in bytes, now.
func (d *Daemon) RSS() (int64, error) { return vmRSS(d.cmd.Process.Pid) }

// SettledRSS is RSS after the daemon has sat idle for idleSettle, so
// allocations about to be collected (start-up, a restart's load) do not
// count; it gives up when ctx ends.
func (d *Daemon) SettledRSS(ctx context.Context) (int64, error) {
	select {
	case <-time.After(idleSettle):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return d.RSS()
}

// Stop sends SIGTERM and waits for a graceful exit; after stopTimeout it
// kills the process. A non-zero exit is an error: the daemon promises 0.
func (d *Daemon) Stop() error {
	select {
	case <-d.exited:
		return d.exitErr()
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if err := d.exitErr(); err != nil {
			return fmt.Errorf("fangd exit: %w\n%s", err, d.stderr)
		}
		return nil
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("fangd did not stop within %s of SIGTERM; killed", stopTimeout)
	}
}

// vmRSS reads VmRSS from /proc/<pid>/status.
func vmRSS(pid int) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// tailBuffer keeps the last max bytes written: the daemon's recent log
// lines, shown when something goes wrong.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
