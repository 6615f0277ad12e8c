// Package stdio runs a stdio MCP server as a sandboxed subprocess and
// speaks MCP to it over its stdin/stdout: the environment is cleared except
// an allowlist plus what the server declares, the process leads its own
// process group (so stopping it also stops whatever it spawned, like the
// node process behind npx), its working directory is given by the caller,
// and optional CPU and memory rlimits apply.
package stdio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// DefaultAllowlist names the daemon environment variables a server
// inherits. Everything else (API keys, the vault key, cloud credentials)
// is withheld unless the server's spec declares it.
var DefaultAllowlist = []string{"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM"}

// ErrCommandNotFound is returned when the command does not resolve to an
// executable; retrying cannot fix it.
var ErrCommandNotFound = errors.New("command not found")

// Options describe one server process.
type Options struct {
	Command string
	Args    []string
	// Env is the complete environment of the process (see Environ).
	Env []string
	// Dir is the working directory; it must exist.
	Dir string
	// CPUSeconds and MemoryMB, when positive, become RLIMIT_CPU and
	// RLIMIT_AS of the process (set by /bin/sh's ulimit before exec).
	CPUSeconds int
	MemoryMB   int
	// Grace is how long Close waits for the process to exit after closing
	// its stdin before signalling the group; default 2 s.
	Grace time.Duration
	Log   zerolog.Logger
}

// Environ builds a sandboxed environment: the allowlisted variables of
// parent, then extra (NAME=value, which wins).
func Environ(allow, parent, extra []string) []string {
	allowed := map[string]bool{}
	for _, a := range allow {
		allowed[a] = true
	}
	vals := map[string]string{}
	var order []string
	set := func(kv string) {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return
		}
		if _, seen := vals[name]; !seen {
			order = append(order, name)
		}
		vals[name] = val
	}
	for _, kv := range parent {
		if name, _, _ := strings.Cut(kv, "="); allowed[name] {
			set(kv)
		}
	}
	for _, kv := range extra {
		set(kv)
	}
	out := make([]string, 0, len(order))
	for _, name := range order {
		out = append(out, name+"="+vals[name])
	}
	return out
}

// Transport is an sdk.Transport that starts the process on Connect. Use it
// for one connection only.
type Transport struct {
	opts Options
	mu   sync.Mutex
	proc *Process
}

// New returns a transport for opts.
func New(opts Options) *Transport {
	if opts.Grace <= 0 {
		opts.Grace = 2 * time.Second
	}
	return &Transport{opts: opts}
}

// Process returns the started process, or nil before Connect.
func (t *Transport) Process() *Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.proc
}

// Connect starts the process and returns the MCP connection over its
// stdin/stdout. Closing the connection stops the process group.
func (t *Transport) Connect(ctx context.Context) (sdk.Connection, error) {
	p, err := start(t.opts)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.proc = p
	t.mu.Unlock()
	inner, err := newResponseConn(ctx, p.stdout, p.stdin)
	if err != nil {
		p.Stop()
		return nil, err
	}
	return &conn{Connection: inner, proc: p}, nil
}

// conn stops the process when the connection is closed.
type conn struct {
	sdk.Connection
	proc *Process
	once sync.Once
}

func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		c.proc.Stop()
		err = c.Connection.Close()
	})
	return err
}

// Process is a running server.
type Process struct {
	cmd    *exec.Cmd
	pgid   int
	stdin  *os.File
	stdout *os.File
	grace  time.Duration
	log    zerolog.Logger

	done       chan struct{}
	stderrDone chan struct{} // closed when the stderr reader has stopped
	exitErr    error
	stopped    sync.Once

	mu     sync.Mutex
	stderr []string // last lines, for error reports
}

const stderrKeep = 20

// stderrDrain bounds how long an exit waits for the rest of stderr.
const stderrDrain = 250 * time.Millisecond

func start(o Options) (*Process, error) {
	path, err := exec.LookPath(o.Command)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrCommandNotFound, o.Command)
	}
	name, args := path, o.Args
	if o.CPUSeconds > 0 || o.MemoryMB > 0 {
		// Go's exec cannot set rlimits on the child alone; /bin/sh sets
		// them and execs the server, so the server is the group leader's
		// image and the limits bind it and its children.
		var script []string
		if o.CPUSeconds > 0 {
			script = append(script, "ulimit -t "+strconv.Itoa(o.CPUSeconds))
		}
		if o.MemoryMB > 0 {
			script = append(script, "ulimit -v "+strconv.Itoa(o.MemoryMB*1024))
		}
		script = append(script, `exec "$0" "$@"`)
		name = "/bin/sh"
		args = append([]string{"-c", strings.Join(script, " && "), path}, o.Args...)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = o.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Dir = o.Dir
	// Our own *os.File pipes rather than StdoutPipe: Wait then never closes
	// the read side under the MCP reader.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If fangd dies without stopping it, the server dies too.
		Pdeathsig: syscall.SIGKILL,
	}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrCommandNotFound, o.Command)
		}
		return nil, err
	}
	p := &Process{cmd: cmd, pgid: cmd.Process.Pid, stdin: inW, stdout: outR,
		grace: o.Grace, log: o.Log, done: make(chan struct{}), stderrDone: make(chan struct{})}
	go p.readStderr(errR)
	go p.wait()
	return p, nil
}

func (p *Process) readStderr(r io.ReadCloser) {
	defer close(p.stderrDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	for sc.Scan() {
		line := sc.Text()
		p.log.Debug().Str("stderr", line).Msg("mcp server output")
		p.mu.Lock()
		p.stderr = append(p.stderr, line)
		if len(p.stderr) > stderrKeep {
			p.stderr = p.stderr[len(p.stderr)-stderrKeep:]
		}
		p.mu.Unlock()
	}
}

// wait reaps the leader, then kills what is left of its group: children
// that outlive their parent (node behind npx) would otherwise keep the
// stdout pipe open and hide the exit.
func (p *Process) wait() {
	err := p.cmd.Wait()
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	// Wait does not wait for our own stderr pipe: let the reader take the
	// server's last words first, so ExitError quotes them (the group is
	// dead, so EOF is near; the bound covers a grandchild that escaped it).
	select {
	case <-p.stderrDone:
	case <-time.After(stderrDrain):
	}
	p.exitErr = err
	close(p.done)
}

// Pid is the process id (also the process group id).
func (p *Process) Pid() int { return p.pgid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitError describes how the process ended, with the last stderr lines;
// nil while it runs.
func (p *Process) ExitError() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	msg := "exited"
	if p.exitErr != nil {
		msg = p.exitErr.Error()
	}
	if tail := p.StderrTail(3); tail != "" {
		msg += ": " + tail
	}
	return errors.New(msg)
}

// StderrTail returns up to n last stderr lines joined by " | ".
func (p *Process) StderrTail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.stderr
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Stop ends the process the way the MCP spec asks (close stdin, wait),
// then signals the whole group: SIGTERM, and SIGKILL if it lingers.
func (p *Process) Stop() {
	p.stopped.Do(func() {
		p.stdin.Close()
		select {
		case <-p.done:
			return
		case <-time.After(p.grace):
		}
		_ = syscall.Kill(-p.pgid, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(p.grace):
		}
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
		<-p.done
	})
}
