package http

import (
	"runtime"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// healthStatus is "ok" while the actors that every write depends on are
// running and the store takes writes, "degraded" otherwise, with a reason
// when the store is below its free-space reserve.
func (s *Server) healthStatus() (status, reason string) {
	if s.deps.Kernel.Security.State("merkle_audit_trail") != kernel.StateActive {
		return "degraded", ""
	}
	if s.deps.Store != nil && s.deps.Store.Space().Low {
		return "degraded", reasonStorage
	}
	return "ok", ""
}

// reasonStorage: the disk is below min_free_disk_bytes, writes answer 507.
const reasonStorage = "insufficient_storage"

type healthBody struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	// Reason says why the daemon is degraded, when it is a condition the
	// operator can act on (a machine code, nothing internal).
	Reason string `json:"reason,omitempty"`
}

// health is public and redacted: status and version, nothing an attacker
// could use. It is the most polled route, and its two possible bodies
// never change, so they are encoded once (by writeJSON's own encoder, so
// the bytes are the same) and copied out.
func (s *Server) health(ctx *fasthttp.RequestCtx) error {
	body := s.healthOK
	switch status, reason := s.healthStatus(); {
	case reason == reasonStorage:
		body = s.healthNoSpace
	case status != "ok":
		body = s.healthDegraded
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
	return nil
}

// encodeHealthBodies prepares the bodies health serves.
func (s *Server) encodeHealthBodies() {
	encode := func(status, reason string) []byte {
		var ctx fasthttp.RequestCtx
		writeJSON(&ctx, fasthttp.StatusOK, healthBody{status, s.cfg.Version, reason})
		return append([]byte(nil), ctx.Response.Body()...)
	}
	s.healthOK, s.healthDegraded = encode("ok", ""), encode("degraded", "")
	s.healthNoSpace = encode("degraded", reasonStorage)
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
	// AuditStatus is "ok", or "degraded" with AuditError saying why: an
	// anchor mismatch found at start-up that no operator has accepted.
	AuditStatus string `json:"audit_status"`
	AuditError  string `json:"audit_error,omitempty"`
	// Quarantined counts the records moved aside at start-up because they
	// do not decode (store.EachOrQuarantine); QuarantinedKeys lists the
	// first of them by their original key.
	Quarantined     int      `json:"quarantined"`
	QuarantinedKeys []string `json:"quarantined_keys"`
	Reason          string   `json:"reason,omitempty"`
	// Storage is the data directory's free space against the reserve.
	Storage store.SpaceState `json:"storage"`
}

func (s *Server) healthDetail(ctx *fasthttp.RequestCtx) error {
	k := s.deps.Kernel
	status, reason := s.healthStatus()
	d := healthDetail{
		Status:        status,
		Reason:        reason,
		Storage:       s.deps.Store.Space(),
		Version:       s.cfg.Version,
		StartedAt:     k.Started.UTC().Format(time.RFC3339),
		UptimeSeconds: time.Since(k.Started).Seconds(),
		Actors:        k.ActorCounts(),
		StoreBytes:    s.deps.Store.Size(),
		Goroutines:    runtime.NumGoroutine(),
	}
	if rec, err := s.deps.Audit.Recent(s.reqCtx(ctx), 0); err == nil {
		d.AuditLength = rec.Total
	}
	if keys, total, err := s.deps.Store.QuarantinedKeys(100); err == nil {
		d.Quarantined, d.QuarantinedKeys = total, keys
	}
	if d.QuarantinedKeys == nil {
		d.QuarantinedKeys = []string{}
	}
	d.AuditStatus = "ok"
	if st := k.Security.State("merkle_audit_trail"); st != kernel.StateActive {
		d.AuditStatus = "degraded"
		if m := s.deps.Audit.Broken(); m != nil {
			d.AuditError = m.Error()
		} else {
			d.AuditError = "the audit writer is " + string(st)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, d)
	return nil
}
