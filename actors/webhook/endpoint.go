package webhook

import (
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
)

// Endpoint kinds: the two subscription APIs share one engine.
const (
	KindOutbound = "outbound" // /api/webhooks
	KindEvent    = "event"    // /api/webhooks/events
)

// Limits (LibreFang's, where it has them).
const (
	MaxEndpoints  = 100
	maxNameLen    = 128
	maxSecretLen  = 256
	minSecretLen  = 8
	maxHeaders    = 20
	maxHeaderLen  = 1024
	maxEventsEach = 64
)

// Endpoint is one subscription as stored. Its secret and header values
// live in the vault, never here.
type Endpoint struct {
	ID             string   `json:"id"`
	Kind           string   `json:"kind"`
	Name           string   `json:"name"`
	URL            string   `json:"url"`
	Events         []string `json:"events"`
	HasSecret      bool     `json:"has_secret"`
	HeaderNames    []string `json:"header_names"`
	Enabled        bool     `json:"enabled"`
	DisabledReason string   `json:"disabled_reason,omitempty"`
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
	// ResumeAt (cluster mode) is when the endpoint was created or last
	// re-enabled: each node's producer skips bus events from before it.
	ResumeAt string `json:"resume_at,omitempty"`
}

// View is an endpoint as the API shows it: secrets as "***".
type View struct {
	ID              string            `json:"id"`
	Kind            string            `json:"kind"`
	Name            string            `json:"name,omitempty"`
	EventType       string            `json:"event_type,omitempty"`
	URL             string            `json:"url"`
	Events          []string          `json:"events"`
	Secret          *string           `json:"secret"`
	HasSecret       bool              `json:"has_secret"`
	Headers         map[string]string `json:"headers,omitempty"`
	Enabled         bool              `json:"enabled"`
	DisabledReason  string            `json:"disabled_reason,omitempty"`
	Pending         int               `json:"pending"`
	DeadLetters     int               `json:"dead_letters"`
	ConsecutiveDead int               `json:"consecutive_dead_letters"`
	CreatedAt       string            `json:"created_at"`
	UpdatedAt       string            `json:"updated_at"`
}

func (e *Endpoint) view(st stats) View {
	v := View{ID: e.ID, Kind: e.Kind, Name: e.Name, URL: e.URL, Events: e.Events, HasSecret: e.HasSecret,
		Enabled: e.Enabled, DisabledReason: e.DisabledReason, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
		Pending: st.pending, DeadLetters: st.dead, ConsecutiveDead: st.consecutiveDead}
	if e.HasSecret {
		masked := "***"
		v.Secret = &masked
	}
	if e.Kind == KindEvent && len(e.Events) > 0 {
		v.EventType = e.Events[0]
	}
	if len(e.HeaderNames) > 0 {
		v.Headers = map[string]string{}
		for _, h := range e.HeaderNames {
			v.Headers[h] = "***"
		}
	}
	return v
}

// Patch is a create or update request, already decoded. Nil fields are
// left unchanged on update.
type Patch struct {
	Name    *string
	URL     *string
	Events  *[]string
	Enabled *bool
	Secret  *string
	Headers *map[string]string
}

// normalizeEvents validates and canonicalises event filters.
func normalizeEvents(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, kernel.Invalid(`"events" must name at least one event type (or "*")`)
	}
	if len(in) > maxEventsEach {
		return nil, kernel.Invalid(`"events" may hold at most %d entries`, maxEventsEach)
	}
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, f := range in {
		n, err := comms.NormalizeFilter(f)
		if err != nil {
			return nil, kernel.Errorf(kernel.KindInvalid, "unknown_event_type", "%s", err.Error())
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// reservedHeaders may not be overridden: they carry the signature, the
// content type or connection control.
var reservedHeaders = map[string]bool{"content-type": true, "content-length": true, "host": true,
	"webhook-id": true, "webhook-timestamp": true, "webhook-signature": true, "x-webhook-signature": true,
	"user-agent": true, "connection": true, "transfer-encoding": true, "te": true, "upgrade": true, "trailer": true}

// validatePatch checks every field present in p (the URL's reachability is
// checked separately, by the SSRF guard).
func validatePatch(p *Patch, creating bool, kind string) error {
	if p.Name != nil {
		n := strings.TrimSpace(*p.Name)
		if n == "" && kind == KindOutbound {
			return kernel.Invalid(`"name" must not be empty`)
		}
		if utf8.RuneCountInString(n) > maxNameLen {
			return kernel.Invalid(`"name" is longer than %d characters`, maxNameLen)
		}
		*p.Name = n
	} else if creating && kind == KindOutbound {
		return kernel.Invalid(`"name" is required`)
	}
	if p.URL == nil && creating {
		return kernel.Invalid(`"url" is required`)
	}
	switch {
	case kind == KindPush:
		// Fed by Push, not by the bus: no event filter.
		if p.Events != nil && len(*p.Events) > 0 {
			return kernel.Invalid("push endpoints subscribe to no events")
		}
		evs := []string{}
		p.Events = &evs
	case p.Events != nil:
		evs, err := normalizeEvents(*p.Events)
		if err != nil {
			return err
		}
		*p.Events = evs
	case creating:
		return kernel.Invalid(`"events" is required`)
	}
	if p.Secret != nil && *p.Secret != "" {
		if l := len(*p.Secret); l < minSecretLen || l > maxSecretLen {
			return kernel.Invalid(`"secret" must be %d to %d characters`, minSecretLen, maxSecretLen)
		}
		if _, err := signingKey(*p.Secret); err != nil {
			return kernel.Invalid(`"secret": %s`, err.Error())
		}
	}
	if p.Headers != nil {
		if len(*p.Headers) > maxHeaders {
			return kernel.Invalid(`"headers" may hold at most %d headers`, maxHeaders)
		}
		for k, v := range *p.Headers {
			canon := http.CanonicalHeaderKey(k)
			if !validHeaderName(k) {
				return kernel.Invalid("header name %q is not a valid HTTP header name", k)
			}
			if reservedHeaders[strings.ToLower(k)] {
				return kernel.Invalid("header %q is set by fangd and cannot be overridden", canon)
			}
			if len(v) > maxHeaderLen || strings.ContainsAny(v, "\r\n\x00") {
				return kernel.Invalid("header %q has an invalid value (control characters or longer than %d)", canon, maxHeaderLen)
			}
		}
	}
	return nil
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func headerNames(h map[string]string) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, http.CanonicalHeaderKey(k))
	}
	slices.Sort(out)
	return out
}
