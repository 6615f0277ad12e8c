package stdio

import (
	"context"
	"errors"
	"strings"
	"testing"
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

// The rlimits reach the server: sh applies them before exec.
func TestRlimitsApply(t *testing.T) {
	tr := New(Options{Command: "/bin/sh", Args: []string{"-c", "ulimit -t; ulimit -v; cat"}, CPUSeconds: 7, MemoryMB: 64, Dir: t.TempDir()})
	conn, err := tr.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The script printed its limits to stdout before cat: read them raw.
	p := tr.Process()
	buf := make([]byte, 64)
	n, _ := p.stdout.Read(buf)
	if got := strings.Fields(string(buf[:n])); len(got) < 2 || got[0] != "7" || got[1] != "65536" {
		t.Fatalf("limits seen by the server: %q", buf[:n])
	}
}
