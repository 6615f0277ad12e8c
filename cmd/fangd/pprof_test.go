package main

import "testing"

// The profiling endpoint has no auth: it must never listen beyond loopback.
func TestPprofListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6061", ":6061", "192.168.1.2:6061", "localhost:6061", "127.0.0.1"} {
		t.Setenv("FANGD_PPROF_LISTEN", addr)
		if err := startPprof(); err == nil {
			t.Errorf("FANGD_PPROF_LISTEN=%q was accepted", addr)
		}
	}
	t.Setenv("FANGD_PPROF_LISTEN", "")
	if err := startPprof(); err != nil {
		t.Errorf("unset: %v", err)
	}
}
