package stdio

import (
	"bufio"
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
	rd := bufio.NewReader(tr.Process().stdout)
	cpu, _ := rd.ReadString('\n')
	mem, _ := rd.ReadString('\n')
	if strings.TrimSpace(cpu) != "7" || strings.TrimSpace(mem) != "65536" {
		t.Fatalf("limits seen by the server: cpu %q, memory %q", cpu, mem)
	}
}
