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
	flag.Parse()
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
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
}
