// Command fangd-devetcd runs an embedded etcd server on loopback for
// `make cluster` and local trials of cluster mode. Development only:
// production clusters use a real etcd deployment (docs/cluster.md).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fangd/fangd/actors/cluster/devetcd"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2379", "client address (loopback)")
	dir := flag.String("dir", "", "data directory (default: a new temp directory)")
	termOnly := flag.Bool("term-only", false, "stop on SIGTERM only, not on SIGINT (make cluster: a terminal's Ctrl-C reaches the whole process group, and the nodes must leave while etcd still answers; the script stops etcd after them)")
	flag.Parse()
	// Before the endpoint is printed: whoever reads it may signal at once.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, stopSignals(*termOnly)...)
	if *termOnly {
		signal.Ignore(syscall.SIGINT)
	}
	d := *dir
	if d == "" {
		var err error
		if d, err = os.MkdirTemp("", "fangd-devetcd"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
	}
	s, err := devetcd.Start(d, *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
	fmt.Printf("etcd://%s\n", s.Endpoint)
	<-sig
	s.Close()
}

// stopSignals are the signals that stop the server.
func stopSignals(termOnly bool) []os.Signal {
	if termOnly {
		return []os.Signal{syscall.SIGTERM}
	}
	return []os.Signal{syscall.SIGINT, syscall.SIGTERM}
}
