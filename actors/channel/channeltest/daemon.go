package channeltest

import (
	"os/exec"
	"sync"
	"testing"
)

// Daemon is a real platform server a test runs on loopback (prosody,
// ngircd): one command line, started and killed at will, which is how
// those tests make an outage. Stop is safe from any goroutine.
type Daemon struct {
	// Name is the server's name in failures.
	Name string
	// Args is the command line.
	Args []string
	// Port is where it listens once up.
	Port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs the server and waits until it listens on Port.
func (d *Daemon) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(d.Args[0], d.Args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.cmd = cmd
	d.mu.Unlock()
	WaitListening(t, d.Name, d.Port)
}

// Stop kills the server and waits for it (nothing when it is not running).
func (d *Daemon) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.cmd = nil
	}
}
