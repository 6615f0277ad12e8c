package stdio

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnvironKeepsOnlyTheAllowlistAndExtra(t *testing.T) {
	got := Environ([]string{"PATH", "HOME"},
		[]string{"PATH=/bin", "HOME=/root", "FANGD_API_KEY=secret", "AWS_SECRET_ACCESS_KEY=x"},
		[]string{"TOKEN=abc", "HOME=/srv"})
	if strings.Join(got, ",") != "PATH=/bin,HOME=/srv,TOKEN=abc" {
		t.Fatalf("environ: %v", got)
	}
}

func TestCommandNotFoundIsRecognisable(t *testing.T) {
	_, err := New(Options{Command: "fangd-no-such-command-xyz", Dir: t.TempDir()}).Connect(context.Background())
	if !errors.Is(err, ErrCommandNotFound) {
		t.Fatalf("err = %v", err)
	}
}

// The rlimits reach the server: sh applies them before exec. The server
// writes what it sees to a file in its working directory (reading its
// stdout here would race the transport's own reader for the lines).
func TestRlimitsApply(t *testing.T) {
	dir := t.TempDir()
	tr := New(Options{Command: "/bin/sh", Args: []string{"-c", "ulimit -t > limits.tmp; ulimit -v >> limits.tmp; mv limits.tmp limits; cat"},
		CPUSeconds: 7, MemoryMB: 64, Dir: dir})
	conn, err := tr.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := os.ReadFile(filepath.Join(dir, "limits"))
		if err == nil {
			if got := strings.Fields(string(raw)); len(got) != 2 || got[0] != "7" || got[1] != "65536" {
				t.Fatalf("limits seen by the server: %q", raw)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandboxed shell wrote no limits within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A server's last stderr line is in ExitError as soon as Done is closed:
// Wait does not wait for our own stderr pipe, so without the drain the
// reader sometimes lost the race ("exit status 3" with no reason).
func TestExitErrorQuotesLastStderrLine(t *testing.T) {
	for i := 0; i < 20; i++ {
		tr := New(Options{Command: "/bin/sh", Args: []string{"-c", "echo broken config >&2; exit 3"}, Dir: t.TempDir()})
		conn, err := tr.Connect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p := tr.Process()
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the shell did not exit")
		}
		if e := p.ExitError(); e == nil || !strings.Contains(e.Error(), "broken config") {
			t.Fatalf("run %d: exit error %v lacks the last stderr line", i, e)
		}
		conn.Close()
	}
}
