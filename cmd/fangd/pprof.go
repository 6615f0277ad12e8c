package main

import (
	"fmt"
	"net"
	nethttp "net/http"
	"net/http/pprof"
	"os"
	"runtime"
)

// startPprof serves net/http/pprof on FANGD_PPROF_LISTEN when it is set,
// for the bench (`go run ./bench -daemon-pprof ADDR`) to profile the real
// daemon under load. It is a developer switch, not config: loopback only,
// no auth, and it turns on block and mutex sampling, which cost a little
// on every contended lock, so nothing else should set it.
func startPprof() error {
	addr := os.Getenv("FANGD_PPROF_LISTEN")
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("FANGD_PPROF_LISTEN=%q: must be a loopback ip:port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("FANGD_PPROF_LISTEN: %w", err)
	}
	runtime.SetBlockProfileRate(10_000) // one sample per 10 µs blocked
	runtime.SetMutexProfileFraction(10)
	mux := nethttp.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = nethttp.Serve(ln, mux) }()
	return nil
}
