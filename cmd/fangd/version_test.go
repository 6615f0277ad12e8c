package main

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fangd version and fangd_build_info name the build: ldflags' commit
// wins over the toolchain stamp.
func TestBuildInfo(t *testing.T) {
	old := commit
	commit, buildDate = "abc123def456", "2026-12-07T00:00:00Z"
	defer func() { commit, buildDate = old, "" }()
	b := readBuildInfo()
	if !strings.Contains(b.String(), "commit abc123def456") || !strings.Contains(b.String(), "built 2026-12-07") {
		t.Fatalf("version text: %s", b)
	}
	reg := prometheus.NewRegistry()
	if err := registerBuildInfo(reg, b); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP fangd_build_info Always 1; the labels say which build is running.
# TYPE fangd_build_info gauge
fangd_build_info{commit="abc123def456",go_version="` + b.GoVersion + `",version="` + b.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fangd_build_info"); err != nil {
		t.Fatal(err)
	}
}
