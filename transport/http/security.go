package http

import (
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
)

// registerSecurityProbes reports the systems the HTTP layer implements.
func (s *Server) registerSecurityProbes() {
	sec := s.deps.Kernel.Security
	onOff := func(on bool) func() kernel.State {
		return func() kernel.State {
			if on {
				return kernel.StateActive
			}
			return kernel.StateInactive
		}
	}
	sec.Register("security_headers", onOff(s.cfg.SecurityHeaders))
	sec.Register("gcra_rate_limiter", func() kernel.State {
		if s.limits.Load().g != nil {
			return kernel.StateActive
		}
		return kernel.StateInactive
	})
	// GET /api/health answers status and version only; details need auth.
	sec.Register("health_redaction", onOff(true))
}

type securityStatus struct {
	Systems     map[string]kernel.State `json:"security_systems"`
	Total       int                     `json:"total_systems"`
	AllActive   bool                    `json:"all_active"`
	ActiveCount int                     `json:"active_count"`
}

func (s *Server) security(ctx *fasthttp.RequestCtx) error {
	st := securityStatus{Systems: s.deps.Kernel.Security.Status(), Total: len(kernel.SecuritySystems)}
	for _, v := range st.Systems {
		if v == kernel.StateActive {
			st.ActiveCount++
		}
	}
	st.AllActive = st.ActiveCount == st.Total
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}
