package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMain runs main when the test binary is started as the command.
func TestMain(m *testing.M) {
	if os.Getenv("FANGD_DEVETCD_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// With -term-only (make cluster) a SIGINT, which a terminal's Ctrl-C
// sends to every process of make cluster at once, leaves etcd serving,
// so that the nodes leave the cluster while it still answers (with etcd
// gone first each waited out its etcd timeouts); SIGTERM, which the
// script sends once the nodes are gone, stops it.
func TestTermOnlyIgnoresInterrupt(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-listen", "127.0.0.1:0", "-dir", t.TempDir(), "-term-only")
	cmd.Env = append(os.Environ(), "FANGD_DEVETCD_RUN_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		_ = cmd.Process.Kill()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { exited <- cmd.Wait() }()
	endpoint := strings.TrimPrefix(strings.TrimSpace(line), "etcd://")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// A write after the interrupt is answered: the server is still up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "after SIGINT"); err != nil {
		t.Fatalf("etcd stopped answering after SIGINT with -term-only: %v", err)
	}
	select {
	case err := <-exited:
		t.Fatalf("exited on SIGINT: %v", err)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
}

// Without the flag SIGINT stops it, as before.
func TestStopSignals(t *testing.T) {
	if got := stopSignals(false); len(got) != 2 || got[0] != syscall.SIGINT {
		t.Fatalf("default %v", got)
	}
	if got := stopSignals(true); len(got) != 1 || got[0] != syscall.SIGTERM {
		t.Fatalf("term-only %v", got)
	}
}
