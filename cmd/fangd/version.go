package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is what this binary is: the version (-ldflags, `make build`),
// and from the Go toolchain's own stamp the commit, its time and whether
// the tree had uncommitted changes.
type buildInfo struct {
	Version, Commit, CommitTime, GoVersion string
	Modified                               bool
}

// commit and buildDate are set by `make build` (-ldflags -X); a plain
// `go build` falls back to the toolchain's VCS stamp when it has one.
var commit, buildDate string

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: "unknown", CommitTime: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.CommitTime = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if commit != "" {
		b.Commit = commit
	}
	if buildDate != "" {
		b.CommitTime = "built " + buildDate
	}
	return b
}

func (b buildInfo) String() string {
	dirty := ""
	if b.Modified {
		dirty = " (modified)"
	}
	return fmt.Sprintf("fangd %s\ncommit %s%s, %s\nbuilt with %s", b.Version, b.Commit, dirty, b.CommitTime, b.GoVersion)
}

// registerBuildInfo exports fangd_build_info{version,commit,go_version} 1.
func registerBuildInfo(reg *prometheus.Registry, b buildInfo) error {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fangd_build_info",
		Help: "Always 1; the labels say which build is running."}, []string{"version", "commit", "go_version"})
	g.WithLabelValues(b.Version, b.Commit, b.GoVersion).Set(1)
	return reg.Register(g)
}
