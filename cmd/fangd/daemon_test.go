package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testDaemon is the real fangd binary (built by TestMain) serving on a free
// loopback port with its own home and config, spoken to over HTTP.
type testDaemon struct {
	t      *testing.T
	home   string
	config string
	env    []string
	p      *proc
	base   string
}

// runFangd writes config (TOML) to home/config.toml and starts the binary
// with env added to the test's environment.
func runFangd(t *testing.T, home, config string, env ...string) *testDaemon {
	t.Helper()
	td := &testDaemon{t: t, home: home, config: config, env: env}
	td.start()
	return td
}

func (td *testDaemon) start() {
	td.t.Helper()
	td.p = startFangd(td.t, td.home, td.config, td.env...)
	td.base = td.p.url
}

// stop ends the daemon gracefully (SIGTERM) and returns its log.
func (td *testDaemon) stop() string {
	td.t.Helper()
	if err := td.p.stop(td.t, syscall.SIGTERM); err != nil {
		td.t.Fatalf("fangd exit: %v\n%s", err, td.p.stderr)
	}
	return td.p.stderr.String()
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

// onePending waits until exactly one approval is pending and returns it.
func (td *testDaemon) onePending() approvalJSON {
	td.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var page struct {
			Approvals []approvalJSON `json:"approvals"`
			Total     int            `json:"total"`
		}
		td.must(200, "GET", "/api/approvals?status=pending", nil, &page)
		if page.Total == 1 {
			return page.Approvals[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	td.t.Fatal("no pending approval")
	return approvalJSON{}
}
