package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// Transport kinds a server spec may name.
const (
	TransportStdio = "stdio"
	TransportHTTP  = "http" // streamable HTTP
	TransportSSE   = "sse"  // the legacy HTTP+SSE transport
)

// DefaultTimeout is a server's per-call timeout when its spec sets none
// (LibreFang's timeout_secs default).
const DefaultTimeout = 30 * time.Second

// MaxTimeoutSecs caps timeout_secs: a call that may hang for longer than an
// hour is a misconfiguration, not a tool.
const MaxTimeoutSecs = 3600

// Transport is the tagged transport object of LibreFang's config entry:
// {"type":"stdio","command","args"} / {"type":"http","url"} / {"type":"sse","url"}.
type Transport struct {
	Type    string   `json:"type" toml:"type"`
	Command string   `json:"command,omitempty" toml:"command"`
	Args    []string `json:"args,omitempty" toml:"args"`
	URL     string   `json:"url,omitempty" toml:"url"`
}

// Spec is one configured MCP server, in LibreFang's `[[mcp_servers]]`
// shape. Env entries are names to pass through or NAME=value; header
// entries are "Name: value". Values given inline are secrets: they are moved
// to the vault before a spec is stored, and a stored spec keeps names only.
type Spec struct {
	Name        string    `json:"name" toml:"name"`
	TemplateID  string    `json:"template_id,omitempty" toml:"template_id"`
	Transport   Transport `json:"transport" toml:"transport"`
	TimeoutSecs int       `json:"timeout_secs,omitempty" toml:"timeout_secs"`
	Env         []string  `json:"env,omitempty" toml:"env"`
	Headers     []string  `json:"headers,omitempty" toml:"headers"`
	// Disabled keeps the definition without connecting.
	Disabled bool `json:"disabled,omitempty" toml:"disabled"`
}

// Timeout is the per-call timeout.
func (s *Spec) Timeout() time.Duration {
	if s.TimeoutSecs <= 0 {
		return DefaultTimeout
	}
	return time.Duration(s.TimeoutSecs) * time.Second
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")

// ValidName reports whether name may name a server (it becomes part of
// tool names and of store and vault keys).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks a spec before anything is stored or started, naming the
// field at fault. It does not touch the network or the file system:
// reachability is the connection's business.
func (s *Spec) Validate() error {
	if s.Name == "" {
		return kernel.Invalid("name is required")
	}
	if !ValidName(s.Name) {
		return kernel.Invalid("name %q: use 1-64 letters, digits, '-' or '_', starting with a letter or digit", s.Name)
	}
	if s.TimeoutSecs < 0 || s.TimeoutSecs > MaxTimeoutSecs {
		return kernel.Invalid("timeout_secs must be between 1 and %d", MaxTimeoutSecs)
	}
	t := &s.Transport
	switch t.Type {
	case TransportStdio:
		if strings.TrimSpace(t.Command) == "" {
			return kernel.Invalid("transport.command is required for a stdio server")
		}
		if strings.ContainsRune(t.Command, 0) || slices.ContainsFunc(t.Args, func(a string) bool { return strings.ContainsRune(a, 0) }) {
			return kernel.Invalid("transport.command and transport.args must not contain NUL bytes")
		}
		if t.URL != "" {
			return kernel.Invalid("transport.url is not used by a stdio server")
		}
		if len(s.Headers) > 0 {
			return kernel.Invalid("headers are only used by http and sse servers")
		}
	case TransportHTTP, TransportSSE:
		if t.URL == "" {
			return kernel.Invalid("transport.url is required for a %s server", t.Type)
		}
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return kernel.Invalid("transport.url %q must be an absolute http or https URL", t.URL)
		}
		if u.User != nil {
			return kernel.Invalid("transport.url must not carry credentials; use headers")
		}
		if t.Command != "" || len(t.Args) > 0 {
			return kernel.Invalid("transport.command and transport.args are only used by stdio servers")
		}
	case "":
		return kernel.Invalid("transport.type is required: stdio, http or sse")
	default:
		return kernel.Invalid("transport.type %q is not supported: use stdio, http or sse", t.Type)
	}
	seen := map[string]bool{}
	for _, e := range s.Env {
		name, _, _ := strings.Cut(e, "=")
		if !envNameRE.MatchString(name) {
			return kernel.Invalid("env entry %q: want NAME or NAME=value with NAME made of letters, digits and '_'", redactEnv(e))
		}
		if seen[name] {
			return kernel.Invalid("env names %s twice", name)
		}
		seen[name] = true
	}
	seen = map[string]bool{}
	for _, h := range s.Headers {
		name, _, _ := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !headerNameRE.MatchString(name) || strings.ContainsAny(h, "\r\n") {
			return kernel.Invalid("header entry %q: want \"Name: value\"", redactHeader(h))
		}
		key := strings.ToLower(name)
		if seen[key] {
			return kernel.Invalid("header %s is given twice", name)
		}
		seen[key] = true
	}
	// ${NAME} in args and headers may only name the server's own env: a
	// spec must never pull an arbitrary daemon variable (the API key, the
	// vault key) into a subprocess or a request.
	declared := map[string]bool{}
	for _, e := range s.Env {
		declared[envName(e)] = true
	}
	for _, text := range append(slices.Clone(s.Transport.Args), s.Headers...) {
		for _, m := range placeholderRE.FindAllStringSubmatch(text, -1) {
			if !declared[m[1]] {
				return kernel.Invalid("${%s} is used but %s is not declared in env", m[1], m[1])
			}
		}
	}
	return nil
}

// Namespace returns the name fangd exposes a server's tool under:
// mcp_<server>_<tool>, lowercased, '-' turned to '_' (LibreFang's rule).
func Namespace(server, tool string) string {
	return "mcp_" + normalize(server) + "_" + normalize(tool)
}

func normalize(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "-", "_")
}

// envName returns the NAME of a "NAME" or "NAME=value" entry.
func envName(e string) string {
	name, _, _ := strings.Cut(e, "=")
	return name
}

// headerName returns the name of a "Name: value" entry.
func headerName(h string) string {
	name, _, _ := strings.Cut(h, ":")
	return strings.TrimSpace(name)
}

func redactEnv(e string) string {
	if name, _, ok := strings.Cut(e, "="); ok {
		return name + "=***"
	}
	return e
}

func redactHeader(h string) string {
	if name, _, ok := strings.Cut(h, ":"); ok {
		return strings.TrimSpace(name) + ": ***"
	}
	return h
}

// rawSpec is what POST/PUT /api/mcp/servers accept as a raw spec: the
// tagged LibreFang form, or the seed's flat form where "transport" is a
// string and command/args/url sit beside it.
type rawSpec struct {
	Name        string            `json:"name"`
	TemplateID  string            `json:"template_id"`
	Transport   json.RawMessage   `json:"transport"`
	Command     string            `json:"command"`
	Args        []string          `json:"args"`
	URL         string            `json:"url"`
	TimeoutSecs int               `json:"timeout_secs"`
	Env         []string          `json:"env"`
	Headers     []string          `json:"headers"`
	Disabled    bool              `json:"disabled"`
	Credentials map[string]string `json:"credentials"`
}

// AddRequest is a decoded POST /api/mcp/servers body: a catalog install
// (Install true: TemplateID, Credentials, optional Name) or a raw Spec.
type AddRequest struct {
	Install     bool
	TemplateID  string
	Name        string
	Credentials map[string]string
	Spec        Spec
}

// ParseAdd decodes either body shape the seed shows for POST
// /api/mcp/servers. Unknown fields are errors.
func ParseAdd(body []byte) (AddRequest, error) {
	raw, err := decodeRaw(body)
	if err != nil {
		return AddRequest{}, err
	}
	if len(bytes.TrimSpace(raw.Transport)) == 0 && raw.TemplateID != "" {
		if raw.Command != "" || raw.Args != nil || raw.URL != "" || raw.Env != nil || raw.Headers != nil {
			return AddRequest{}, kernel.Invalid("a catalog install takes template_id, credentials and optionally name; give a transport for a raw spec")
		}
		return AddRequest{Install: true, TemplateID: raw.TemplateID, Name: raw.Name, Credentials: raw.Credentials}, nil
	}
	if raw.Credentials != nil {
		return AddRequest{}, kernel.Invalid("credentials are only taken with a catalog install (template_id without transport); put secrets in env as NAME=value")
	}
	s, err := raw.spec()
	return AddRequest{Spec: s}, err
}

// ParseSpec decodes a raw spec in either shape (PUT bodies). Unknown fields
// are errors.
func ParseSpec(body []byte) (Spec, error) {
	raw, err := decodeRaw(body)
	if err != nil {
		return Spec{}, err
	}
	if raw.Credentials != nil {
		return Spec{}, kernel.Invalid("credentials are only taken with a catalog install; put secrets in env as NAME=value")
	}
	return raw.spec()
}

func decodeRaw(body []byte) (*rawSpec, error) {
	var raw rawSpec
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, kernel.Invalid("server spec: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return &raw, nil
}

func (raw *rawSpec) spec() (Spec, error) {
	s := Spec{Name: raw.Name, TemplateID: raw.TemplateID, TimeoutSecs: raw.TimeoutSecs,
		Env: raw.Env, Headers: raw.Headers, Disabled: raw.Disabled}
	tr := bytes.TrimSpace(raw.Transport)
	switch {
	case len(tr) == 0 || string(tr) == "null":
		return s, kernel.Invalid("transport is required: {\"type\": \"stdio\", \"command\": ...} or \"stdio\" with command beside it")
	case tr[0] == '"':
		// The seed's flat form.
		if err := json.Unmarshal(tr, &s.Transport.Type); err != nil {
			return s, kernel.Invalid("transport: %v", err)
		}
		s.Transport.Command, s.Transport.Args, s.Transport.URL = raw.Command, raw.Args, raw.URL
	case tr[0] == '{':
		if raw.Command != "" || raw.Args != nil || raw.URL != "" {
			return s, kernel.Invalid("command, args and url belong inside the transport object")
		}
		dec := json.NewDecoder(bytes.NewReader(tr))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s.Transport); err != nil {
			return s, kernel.Invalid("transport: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
	default:
		return s, kernel.Invalid("transport must be an object like {\"type\": \"stdio\", \"command\": ...} or a string")
	}
	return s, nil
}

// equalDefinition reports whether two specs describe the same connection
// (so a reload need not reconnect).
func equalDefinition(a, b Spec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// String shows a spec without secret values (for logs and errors).
func (s Spec) String() string {
	switch s.Transport.Type {
	case TransportStdio:
		return fmt.Sprintf("%s (stdio: %s)", s.Name, s.Transport.Command)
	default:
		return fmt.Sprintf("%s (%s: %s)", s.Name, s.Transport.Type, s.Transport.URL)
	}
}
