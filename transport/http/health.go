package http

import (
	"runtime"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
)

// healthStatus is "ok" while the actors that every write depends on are
// running, "degraded" otherwise.
func (s *Server) healthStatus() string {
	if s.deps.Kernel.Security.Status()["merkle_audit_trail"] != kernel.StateActive {
		return "degraded"
	}
	return "ok"
}

// health is public and redacted: status and version, nothing an attacker
// could use.
func (s *Server) health(ctx *fasthttp.RequestCtx) error {
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}{s.healthStatus(), s.cfg.Version})
	return nil
}

type healthDetail struct {
	Status        string         `json:"status"`
	Version       string         `json:"version"`
	StartedAt     string         `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Actors        map[string]int `json:"actors"`
	StoreBytes    int64          `json:"store_size_bytes"`
	Goroutines    int            `json:"goroutines"`
	AuditLength   uint64         `json:"audit_chain_length"`
}

func (s *Server) healthDetail(ctx *fasthttp.RequestCtx) error {
	k := s.deps.Kernel
	d := healthDetail{
		Status:        s.healthStatus(),
		Version:       s.cfg.Version,
		StartedAt:     k.Started.UTC().Format(time.RFC3339),
		UptimeSeconds: time.Since(k.Started).Seconds(),
		Actors:        k.ActorCounts(),
		StoreBytes:    s.deps.Store.Size(),
		Goroutines:    runtime.NumGoroutine(),
	}
	if rec, err := s.deps.Audit.Recent(0); err == nil {
		d.AuditLength = rec.Total
	}
	writeJSON(ctx, fasthttp.StatusOK, d)
	return nil
}
