package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects the daemon's console log from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testDaemon is a real fangd (startDaemon, as `fangd serve` runs it) on a
// free loopback port with its own home, spoken to over HTTP.
type testDaemon struct {
	t       *testing.T
	home    string
	config  string
	d       *daemon
	base    string
	console *syncBuffer
}

// startFangd writes config (TOML) to home/config.toml and starts a daemon.
func startFangd(t *testing.T, home, config string) *testDaemon {
	t.Helper()
	td := &testDaemon{t: t, home: home, config: config}
	td.start()
	t.Cleanup(td.stop)
	return td
}

func (td *testDaemon) start() {
	t := td.t
	t.Helper()
	path := filepath.Join(td.home, "config.toml")
	if err := os.WriteFile(path, []byte(td.config), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg.APIListen = "127.0.0.1:0"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if td.console == nil {
		td.console = &syncBuffer{}
	}
	td.d, err = startDaemon(td.home, cfg, td.console)
	if err != nil {
		t.Fatal(err)
	}
	td.base = "http://" + td.d.ln.Addr().String()
}

func (td *testDaemon) stop() {
	if td.d == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // already done: wait shuts down at once
	if err := td.d.wait(ctx); err != nil {
		td.t.Errorf("shutdown: %v", err)
	}
	td.d = nil
}

func (td *testDaemon) restart() { td.stop(); td.start() }

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	raw    []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.raw, v); err != nil {
		t.Fatalf("decode %s: %v", r.raw, err)
	}
}

// code is the error envelope's code.
func (r response) code() string {
	var e struct{ Code string }
	json.Unmarshal(r.raw, &e)
	return e.Code
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func (td *testDaemon) do(method, path string, body any) response {
	td.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			td.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, td.base+path, rd)
	if err != nil {
		td.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		td.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, raw: raw}
}

// must fails the test unless the answer has status want, and decodes it into v.
func (td *testDaemon) must(want int, method, path string, body, v any) response {
	td.t.Helper()
	r := td.do(method, path, body)
	if r.status != want {
		td.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.raw, want)
	}
	if v != nil {
		r.json(td.t, v)
	}
	return r
}
