package kernel

import "sync"

// State is the measured state of one security system.
type State string

const (
	// StateActive: the mechanism exists and is on.
	StateActive State = "active"
	// StateInactive: built, but switched off by configuration.
	StateInactive State = "inactive"
	// StateUnavailable: not built in this version of fangd.
	StateUnavailable State = "unavailable"
	// StateDegraded: on, but not to be trusted now (the audit trail after
	// an anchor mismatch that no operator has accepted yet).
	StateDegraded State = "degraded"
)

// SecuritySystems are the 16 systems GET /api/security reports, in the
// order LibreFang's README lists them.
var SecuritySystems = []string{
	"merkle_audit_trail", "taint_tracking", "wasm_dual_metering", "security_headers",
	"health_redaction", "subprocess_sandbox", "manifest_signing", "gcra_rate_limiter",
	"secret_zeroization", "path_traversal_prevention", "ssrf_protection",
	"capability_inheritance_validation", "ofp_hmac_auth", "prompt_injection_scanning",
	"loop_guard", "session_repair",
}

// Security is where each subsystem registers a probe for the security
// system it implements. A system with no probe is StateUnavailable.
type Security struct {
	mu     sync.RWMutex
	probes map[string]func() State
}

// NewSecurity returns an empty registry.
func NewSecurity() *Security { return &Security{probes: map[string]func() State{}} }

// Register sets the probe for system; the probe runs on every status read,
// so it must be cheap and report what is true now.
func (s *Security) Register(system string, probe func() State) {
	s.mu.Lock()
	s.probes[system] = probe
	s.mu.Unlock()
}

// State measures one system. GET /api/health asks for one system on every
// request, so this avoids building the whole map.
func (s *Security) State(system string) State {
	s.mu.RLock()
	p, ok := s.probes[system]
	s.mu.RUnlock()
	if !ok {
		return StateUnavailable
	}
	return p()
}

// Status measures every system.
func (s *Security) Status() map[string]State {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]State, len(SecuritySystems))
	for _, name := range SecuritySystems {
		if p, ok := s.probes[name]; ok {
			out[name] = p()
		} else {
			out[name] = StateUnavailable
		}
	}
	return out
}
