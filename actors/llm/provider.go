package llm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/neterr"
)

// The two wire APIs a provider can speak.
const (
	APIOpenAI    = "openai"
	APIAnthropic = "anthropic"
)

// ProviderConfig is one [providers.<name>] table of config.toml. These are
// its only keys; the API key itself is never in the config, only the name
// of the environment variable that holds it.
type ProviderConfig struct {
	API       string `toml:"api" json:"api"`
	BaseURL   string `toml:"base_url" json:"base_url"`
	APIKeyEnv string `toml:"api_key_env" json:"api_key_env"`
	// Trusted dials base_url directly instead of through the network
	// policy ([network_policy] allow_hosts): for a model server on
	// loopback or the LAN that the operator vouches for. The built-in
	// base URLs (Ollama's http://localhost:11434/v1 among them) are
	// trusted; a configured base_url is not unless this says so.
	Trusted bool `toml:"trusted" json:"trusted"`
}

// Guard is the outbound network policy (transport/ssrf.Guard) that
// untrusted base URLs go through.
type Guard interface {
	// CheckStatic refuses a URL the policy can judge without a lookup.
	CheckStatic(raw string) (*url.URL, error)
	// Client dials through the policy, pinning the checked address.
	Client(timeout time.Duration) *http.Client
}

// WellKnown are the providers that work with no [providers] entry. An entry
// with the same name overrides the fields it sets.
var WellKnown = map[string]ProviderConfig{
	"openai":     {API: APIOpenAI, BaseURL: "https://api.openai.com/v1", APIKeyEnv: "OPENAI_API_KEY"},
	"groq":       {API: APIOpenAI, BaseURL: "https://api.groq.com/openai/v1", APIKeyEnv: "GROQ_API_KEY"},
	"openrouter": {API: APIOpenAI, BaseURL: "https://openrouter.ai/api/v1", APIKeyEnv: "OPENROUTER_API_KEY"},
	"together":   {API: APIOpenAI, BaseURL: "https://api.together.xyz/v1", APIKeyEnv: "TOGETHER_API_KEY"},
	"mistral":    {API: APIOpenAI, BaseURL: "https://api.mistral.ai/v1", APIKeyEnv: "MISTRAL_API_KEY"},
	"deepseek":   {API: APIOpenAI, BaseURL: "https://api.deepseek.com/v1", APIKeyEnv: "DEEPSEEK_API_KEY"},
	// Ollama serves locally and needs no key.
	"ollama":    {API: APIOpenAI, BaseURL: "http://localhost:11434/v1"},
	"anthropic": {API: APIAnthropic, BaseURL: "https://api.anthropic.com", APIKeyEnv: "ANTHROPIC_API_KEY"},
}

// Options configure the registry.
type Options struct {
	Providers map[string]ProviderConfig
	Models    []ModelConfig
	// Timeout bounds one provider call, connection to last byte.
	Timeout time.Duration
	// DefaultInputPerM and DefaultOutputPerM price models the catalog does
	// not know (flagged pricing_known: false); nil means $1 in / $3 out.
	DefaultInputPerM  *float64
	DefaultOutputPerM *float64
	// Metrics, when set, receives the call counters and latency histogram.
	Metrics prometheus.Registerer
	// HTTPClient replaces the default client (tests).
	HTTPClient *http.Client
	// Guard, when set, is the network policy every untrusted provider's
	// calls go through (see ProviderConfig.Trusted).
	Guard Guard
	// Getenv replaces os.Getenv for reading API keys (tests).
	Getenv func(string) string
}

// DefaultTimeout is how long one provider call may take by default.
const DefaultTimeout = 120 * time.Second

// Default prices for unknown models, per million tokens (LibreFang's).
const (
	DefaultInputPerM  = 1.0
	DefaultOutputPerM = 3.0
)

// maxResponseBytes caps a provider's response body.
const maxResponseBytes = 16 << 20

var (
	providerNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	envNameRe      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// chatClient is one wire API.
type chatClient interface {
	chat(ctx context.Context, hc *http.Client, prov, baseURL, key string, req Request) (*Response, error)
	streamClient
}

type provider struct {
	name   string
	cfg    ProviderConfig
	client chatClient
	hc     *http.Client // the registry's, or the guard's for an untrusted base_url
}

// Registry resolves "provider/model" names to a provider and a price, and
// runs calls with timing, error mapping and metrics.
type Registry struct {
	providers map[string]*provider
	catalog   *Catalog
	timeout   time.Duration
	hc        *http.Client
	getenv    func(string) string
	calls     *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	tokens    *prometheus.CounterVec
}

// ValidateProviders checks [providers] tables and returns the effective
// provider set: the well-known ones overlaid with the configured ones.
func ValidateProviders(cfg map[string]ProviderConfig) (map[string]ProviderConfig, error) {
	out := make(map[string]ProviderConfig, len(WellKnown)+len(cfg))
	for name, p := range WellKnown {
		p.Trusted = true
		out[name] = p
	}
	names := slices.Sorted(maps.Keys(cfg))
	for _, name := range names {
		p := cfg[name]
		field := "providers." + name
		if !providerNameRe.MatchString(name) {
			return nil, fmt.Errorf("%s: provider names are 1-32 lowercase letters, digits, '-' or '_'", field)
		}
		base, known := WellKnown[name]
		if p.API == "" {
			p.API = base.API
			if p.API == "" {
				p.API = APIOpenAI
			}
		}
		if p.API == APIEcho {
			// The test provider calls nothing: no URL, no key.
			if p.BaseURL != "" || p.APIKeyEnv != "" {
				return nil, fmt.Errorf("%s: api = \"echo\" is the built-in offline test provider; it takes no base_url or api_key_env", field)
			}
			p.Trusted = true
			out[name] = p
			continue
		}
		if p.API != APIOpenAI && p.API != APIAnthropic {
			return nil, fmt.Errorf("%s.api %q: want \"openai\" (OpenAI-compatible chat completions), \"anthropic\", or \"echo\" (the offline test provider)", field, p.API)
		}
		if p.BaseURL == "" {
			if !known {
				return nil, fmt.Errorf("%s.base_url is required for a provider fangd does not know", field)
			}
			// fangd's own default, not a URL anyone supplied.
			p.BaseURL, p.Trusted = base.BaseURL, true
		}
		u, err := url.Parse(p.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("%s.base_url %q: want an http(s) URL with a host and no query, fragment or credentials", field, p.BaseURL)
		}
		p.BaseURL = strings.TrimRight(p.BaseURL, "/")
		if p.APIKeyEnv == "" && known {
			p.APIKeyEnv = base.APIKeyEnv
		}
		if p.APIKeyEnv != "" && !envNameRe.MatchString(p.APIKeyEnv) {
			return nil, fmt.Errorf("%s.api_key_env %q: want the name of an environment variable (the key itself never goes in the config)", field, p.APIKeyEnv)
		}
		out[name] = p
	}
	return out, nil
}

// ValidateConfig checks providers, model overrides and default prices
// without building anything (config loading calls it).
func ValidateConfig(opts Options) error {
	provs, err := ValidateProviders(opts.Providers)
	if err != nil {
		return err
	}
	if err := checkPolicy(provs, opts.Guard); err != nil {
		return err
	}
	_, err = NewCatalog(opts.Models, provs, opts.DefaultInputPerM, opts.DefaultOutputPerM)
	return err
}

// checkPolicy refuses an untrusted base_url the network policy refuses
// without a lookup (a literal loopback or private address, localhost), so
// the operator learns it at startup rather than at the first call; names
// are judged when dialled.
func checkPolicy(provs map[string]ProviderConfig, guard Guard) error {
	if guard == nil {
		return nil
	}
	names := slices.Sorted(maps.Keys(provs))
	for _, n := range names {
		p := provs[n]
		if p.Trusted {
			continue
		}
		if _, err := guard.CheckStatic(p.BaseURL); err != nil {
			return fmt.Errorf("providers.%s.base_url: %v (or set providers.%s.trusted = true for a server you vouch for)", n, err, n)
		}
	}
	return nil
}

// NewRegistry validates opts and builds the registry.
func NewRegistry(opts Options) (*Registry, error) {
	provs, err := ValidateProviders(opts.Providers)
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := checkPolicy(provs, opts.Guard); err != nil {
		return nil, err
	}
	cat, err := NewCatalog(opts.Models, provs, opts.DefaultInputPerM, opts.DefaultOutputPerM)
	if err != nil {
		return nil, err
	}
	r := &Registry{providers: map[string]*provider{}, catalog: cat, timeout: opts.Timeout, hc: opts.HTTPClient, getenv: opts.Getenv}
	if r.hc == nil {
		r.hc = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConns:        256,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     90 * time.Second,
				TLSHandshakeTimeout: 10 * time.Second,
				ForceAttemptHTTP2:   true,
			},
			// A redirect would carry the API key header to wherever it
			// points (Go strips Authorization across hosts, not x-api-key).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if r.getenv == nil {
		r.getenv = os.Getenv
	}
	for name, p := range provs {
		var c chatClient = openAIClient{maxCompletionTokens: name == "openai"}
		switch p.API {
		case APIAnthropic:
			c = anthropicClient{}
		case APIEcho:
			c = echoClient{}
		}
		hc := r.hc
		if !p.Trusted && opts.Guard != nil && opts.HTTPClient == nil {
			// No proxy, no redirects, the resolved address checked and
			// pinned: like every other user-supplied URL. The registry's
			// timeout bounds the call through its context.
			hc = opts.Guard.Client(0)
		}
		r.providers[name] = &provider{name: name, cfg: p, client: c, hc: hc}
	}
	r.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fangd_llm_calls_total", Help: "LLM provider calls by provider and outcome."}, []string{"provider", "outcome"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "fangd_llm_call_duration_seconds", Help: "LLM provider call latency.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120}}, []string{"provider"})
	r.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fangd_llm_tokens_total", Help: "Tokens reported by LLM providers, by kind (input, cached_input, output)."}, []string{"provider", "kind"})
	if opts.Metrics != nil {
		for _, c := range []prometheus.Collector{r.calls, r.latency, r.tokens} {
			if err := opts.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// MaxTemperature is the highest sampling temperature provider's API
// takes: 1 on Anthropic's Messages API, 2 on OpenAI-compatible ones (and
// for an unknown provider, which Resolve refuses anyway).
func (r *Registry) MaxTemperature(provider string) float64 {
	if p, ok := r.providers[provider]; ok && p.cfg.API == APIAnthropic {
		return 1
	}
	return 2
}

// Catalog is the model catalog the registry prices with.
func (r *Registry) Catalog() *Catalog { return r.catalog }

// Timeout is the bound on one provider call.
func (r *Registry) Timeout() time.Duration { return r.timeout }

// Route is a resolved "provider/model": where to send a call and what it costs.
type Route struct {
	Provider string
	Model    string // the provider's model id
	Pricing  Pricing
}

// Name is the route as agents spell it, "provider/model".
func (rt Route) Name() string { return rt.Provider + "/" + rt.Model }

// Resolve splits "provider/model" at the first slash (OpenRouter's model
// ids contain slashes themselves) and checks the provider exists.
func (r *Registry) Resolve(model string) (Route, error) {
	prov, id, ok := strings.Cut(model, "/")
	if !ok || prov == "" || id == "" {
		return Route{}, kernel.Errorf(kernel.KindInvalid, "invalid_model",
			"model %q must be <provider>/<model id>, e.g. groq/llama-3.3-70b-versatile", model)
	}
	if _, ok := r.providers[prov]; !ok {
		return Route{}, kernel.Errorf(kernel.KindInvalid, "unknown_provider",
			"unknown provider %q in model %q; known providers: %s", prov, model, strings.Join(r.providerNames(), ", "))
	}
	if len(id) > 200 || strings.ContainsAny(id, " \t\r\n\x00") {
		return Route{}, kernel.Errorf(kernel.KindInvalid, "invalid_model", "model id %q is not a valid model id", id)
	}
	return Route{Provider: prov, Model: id, Pricing: r.catalog.Price(prov, id)}, nil
}

func (r *Registry) providerNames() []string {
	names := make([]string, 0, len(r.providers))
	for n := range r.providers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ProviderInfo describes a provider for GET /api/providers. It says whether
// the key's variable is set, never the key.
type ProviderInfo struct {
	Name      string `json:"name"`
	API       string `json:"api"`
	BaseURL   string `json:"base_url"`
	APIKeyEnv string `json:"api_key_env"`
	HasKey    bool   `json:"has_key"`
	NeedsKey  bool   `json:"needs_key"`
	// Trusted: base_url is dialled directly, not through the network
	// policy (a built-in URL, or trusted = true in the config).
	Trusted bool `json:"trusted"`
}

// Providers lists the effective providers by name.
func (r *Registry) Providers() []ProviderInfo {
	out := make([]ProviderInfo, 0, len(r.providers))
	for _, n := range r.providerNames() {
		p := r.providers[n]
		out = append(out, ProviderInfo{Name: n, API: p.cfg.API, BaseURL: p.cfg.BaseURL, APIKeyEnv: p.cfg.APIKeyEnv,
			NeedsKey: p.cfg.APIKeyEnv != "", HasKey: p.cfg.APIKeyEnv != "" && r.getenv(p.cfg.APIKeyEnv) != "", Trusted: p.cfg.Trusted})
	}
	return out
}

// Chat runs one call on route, bounded by the registry's timeout and ctx.
// It times the call and counts its outcome. A failure is a *ProviderError
// whose domain error the HTTP layer maps to 502 or 503.
func (r *Registry) Chat(ctx context.Context, route Route, req Request) (*Response, error) {
	return r.call(ctx, route, req, nil)
}

// ChatStream is Chat with the answer streamed: on receives the deltas
// as they arrive (from this goroutine) and the whole Response is returned
// at the end, as Chat's. When the stream breaks after it began (the
// provider failed mid-stream, on or ctx stopped it, the timeout) the
// error comes with a Response too: what arrived, with the usage the
// provider reported or an estimate (UsageEstimated), so the caller can
// meter what the provider will bill.
func (r *Registry) ChatStream(ctx context.Context, route Route, req Request, on OnDelta) (*Response, error) {
	return r.call(ctx, route, req, on)
}

func (r *Registry) call(ctx context.Context, route Route, req Request, on OnDelta) (*Response, error) {
	p, ok := r.providers[route.Provider]
	if !ok {
		return nil, kernel.Errorf(kernel.KindInvalid, "unknown_provider", "unknown provider %q", route.Provider)
	}
	key := ""
	if p.cfg.APIKeyEnv != "" {
		if key = r.getenv(p.cfg.APIKeyEnv); key == "" {
			r.calls.WithLabelValues(p.name, OutcomeNoKey).Inc()
			return nil, newProviderError(p.name, OutcomeNoKey, 0, 0,
				fmt.Sprintf("provider %s is not usable: environment variable %s is not set", p.name, p.cfg.APIKeyEnv))
		}
	}
	req.Model = route.Model
	callCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	var resp *Response
	var err error
	if on != nil {
		resp, err = p.client.stream(callCtx, p.hc, p.name, p.cfg.BaseURL, key, req, on)
	} else {
		resp, err = p.client.chat(callCtx, p.hc, p.name, p.cfg.BaseURL, key, req)
	}
	elapsed := time.Since(start)
	r.latency.WithLabelValues(p.name).Observe(elapsed.Seconds())
	if resp != nil {
		resp.Latency = elapsed
		r.countTokens(p.name, resp.Usage)
	}
	if err != nil {
		err = r.classify(ctx, callCtx, p.name, key, err)
		var pe *ProviderError
		outcome := OutcomeServerError
		if errors.As(err, &pe) {
			outcome = pe.Outcome
		}
		r.calls.WithLabelValues(p.name, outcome).Inc()
		return resp, err
	}
	r.calls.WithLabelValues(p.name, OutcomeOK).Inc()
	return resp, nil
}

func (r *Registry) countTokens(prov string, u Usage) {
	r.tokens.WithLabelValues(prov, "input").Add(float64(u.InputTokens))
	r.tokens.WithLabelValues(prov, "cached_input").Add(float64(u.CachedInputTokens))
	r.tokens.WithLabelValues(prov, "output").Add(float64(u.OutputTokens))
}

// classify turns transport failures into ProviderErrors and scrubs the key
// from any message the provider sent back.
func (r *Registry) classify(parent, call context.Context, prov, key string, err error) error {
	var pe *ProviderError
	if errors.As(err, &pe) {
		if key != "" {
			pe.scrub(key)
		}
		return pe
	}
	switch {
	case parent.Err() != nil:
		return newProviderError(prov, OutcomeCanceled, 0, 0, fmt.Sprintf("call to provider %s was canceled", prov))
	case errors.Is(call.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return newProviderError(prov, OutcomeTimeout, 0, 0, fmt.Sprintf("provider %s did not answer within %s", prov, r.timeout))
	}
	// The cause (no such host, refused, TLS, refused by the policy) is
	// what the operator must fix; neterr says it without the URL.
	code, cause := neterr.Cause(err)
	pe = newProviderError(prov, OutcomeUnreachable, 0, 0, fmt.Sprintf("provider %s is unreachable: %s", prov, cause)).withCause(err)
	pe.domain.Code = code
	if code == neterr.Timeout {
		pe.Outcome, pe.domain.Kind = OutcomeTimeout, kernel.KindUnavailable
	}
	if key != "" {
		pe.scrub(key)
	}
	return pe
}
