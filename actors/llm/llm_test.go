package llm

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

const testKey = "sk-test-0123456789abcdef"

func newTestRegistry(t *testing.T, provs map[string]ProviderConfig, models []ModelConfig, timeout time.Duration) *Registry {
	t.Helper()
	r, err := NewRegistry(Options{Providers: provs, Models: models, Timeout: timeout,
		Metrics: prometheus.NewRegistry(),
		Getenv: func(k string) string {
			if k == "FAKE_KEY" {
				return testKey
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func f64(v float64) *float64 { return &v }

func TestOpenAICompatibleCallReadsUsageAndCachedTokens(t *testing.T) {
	fake := llmtest.NewOpenAI(testKey)
	defer fake.Close()
	fake.SetCachedTokens(5)
	fake.SetOutputTokens(7)
	r := newTestRegistry(t, map[string]ProviderConfig{"fake": {BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}},
		[]ModelConfig{{Provider: "fake", ID: "m1", InputPerM: f64(2), OutputPerM: f64(10), CachedInputPerM: f64(0.5)}}, time.Minute)
	route, err := r.Resolve("fake/m1")
	if err != nil {
		t.Fatal(err)
	}
	req := Request{System: "be brief", Messages: []Message{{Role: RoleUser, Content: "hello there"}}, MaxTokens: 64}
	resp, err := r.Chat(context.Background(), route, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "echo: hello there" {
		t.Fatalf("text %q", resp.Text)
	}
	got := fake.Requests()[0]
	if got.System != "be brief" || got.MaxTokens != 64 || got.MaxTokensField != "max_tokens" || got.Model != "m1" {
		t.Fatalf("provider received %+v", got)
	}
	wantIn := llmtest.InputTokens(got)
	if resp.Usage.InputTokens != wantIn || resp.Usage.CachedInputTokens != 5 || resp.Usage.OutputTokens != 7 || resp.UsageEstimated {
		t.Fatalf("usage %+v, want in=%d cached=5 out=7", resp.Usage, wantIn)
	}
	// (in-5)*2 + 5*0.5 + 7*10 per million, in nano-USD.
	want := int64(math.Round((float64(wantIn-5)*2 + 5*0.5 + 7*10) * 1e3))
	if c := route.Pricing.CostNanos(resp.Usage); c != want {
		t.Fatalf("cost %d nano-USD, want %d", c, want)
	}
	if n := testutil.ToFloat64(r.calls.WithLabelValues("fake", OutcomeOK)); n != 1 {
		t.Fatalf("ok calls counted %v", n)
	}
	if resp.Usage.InputTokens > PromptTokensUpperBound(req.System, req.Messages) {
		t.Fatal("the reservation bound is below what the provider counted")
	}
}

func TestOpenAIItselfGetsMaxCompletionTokens(t *testing.T) {
	fake := llmtest.NewOpenAI(testKey)
	defer fake.Close()
	r := newTestRegistry(t, map[string]ProviderConfig{"openai": {BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}}, nil, time.Minute)
	route, _ := r.Resolve("openai/gpt-4o-mini")
	if _, err := r.Chat(context.Background(), route, Request{Messages: []Message{{Role: RoleUser, Content: "x"}}, MaxTokens: 9}); err != nil {
		t.Fatal(err)
	}
	if got := fake.Requests()[0]; got.MaxTokensField != "max_completion_tokens" || got.MaxTokens != 9 {
		t.Fatalf("openai got %+v", got)
	}
	if !route.Pricing.PricingKnown || route.Pricing.InputPerM != 0.15 {
		t.Fatalf("gpt-4o-mini pricing %+v", route.Pricing)
	}
}

func TestAnthropicCallNormalisesUsage(t *testing.T) {
	fake := llmtest.NewAnthropic(testKey)
	defer fake.Close()
	fake.SetCachedTokens(4)
	r := newTestRegistry(t, map[string]ProviderConfig{"anthropic": {BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}}, nil, time.Minute)
	route, err := r.Resolve("anthropic/claude-sonnet-4-5-20250929")
	if err != nil {
		t.Fatal(err)
	}
	if !route.Pricing.PricingKnown || route.Pricing.InputPerM != 3 || route.Pricing.ID != "claude-sonnet-4-5-20250929" {
		t.Fatalf("dated id should price as claude-sonnet-4-5: %+v", route.Pricing)
	}
	msgs := []Message{{Role: RoleUser, Content: "one"}, {Role: RoleAssistant, Content: "two"}, {Role: RoleUser, Content: "three"}}
	resp, err := r.Chat(context.Background(), route, Request{System: "sys", Messages: msgs, MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := fake.Requests()[0]
	if got.System != "sys" || len(got.Messages) != 3 {
		t.Fatalf("received %+v", got)
	}
	if resp.Text != "echo: three" || resp.Usage.InputTokens != llmtest.InputTokens(got) || resp.Usage.CachedInputTokens != 4 {
		t.Fatalf("response %+v (input must include cache reads)", resp)
	}
}

func TestProviderFailuresMapToClearErrors(t *testing.T) {
	fake := llmtest.NewOpenAI(testKey)
	defer fake.Close()
	r := newTestRegistry(t, map[string]ProviderConfig{"fake": {BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"}}, nil, time.Minute)
	route, _ := r.Resolve("fake/m")
	req := Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 10}
	cases := []struct {
		fail    llmtest.Failure
		kind    kernel.Kind
		code    string
		outcome string
		retry   time.Duration
	}{
		{llmtest.Failure{Status: 429, RetryAfter: 7, Message: "Rate limit reached for requests"}, kernel.KindUnavailable, "provider_rate_limited", OutcomeRateLimited, 7 * time.Second},
		{llmtest.Failure{Status: 500, Message: "The server had an error"}, kernel.KindUpstream, "provider_error", OutcomeServerError, 0},
		{llmtest.Failure{Status: 503, Message: "overloaded"}, kernel.KindUnavailable, "provider_overloaded", OutcomeServerError, 0},
		{llmtest.Failure{Status: 400, Message: "bad things"}, kernel.KindUpstream, "provider_rejected", OutcomeRejected, 0},
		{llmtest.Failure{Status: 401, Message: "Incorrect API key provided: " + testKey}, kernel.KindUpstream, "provider_auth_failed", OutcomeRejected, 0},
	}
	for _, c := range cases {
		fake.FailNext(c.fail)
		_, err := r.Chat(context.Background(), route, req)
		var pe *ProviderError
		if !errors.As(err, &pe) {
			t.Fatalf("%d: error %v is not a ProviderError", c.fail.Status, err)
		}
		de := kernel.AsError(err)
		if de == nil || de.Kind != c.kind || de.Code != c.code || pe.Outcome != c.outcome || pe.RetryAfter() != c.retry {
			t.Fatalf("%d: got %+v / %+v", c.fail.Status, de, pe)
		}
		if !strings.Contains(de.Msg, "fake") || strings.Contains(de.Msg, testKey) {
			t.Fatalf("%d: message %q must name the provider and never hold the key", c.fail.Status, de.Msg)
		}
		if c.fail.Status != 401 && !strings.Contains(de.Msg, c.fail.Message) {
			t.Fatalf("%d: message %q lost the provider's reason", c.fail.Status, de.Msg)
		}
		if n := testutil.ToFloat64(r.calls.WithLabelValues("fake", c.outcome)); n < 1 {
			t.Fatalf("%d: outcome %s not counted", c.fail.Status, c.outcome)
		}
	}
}

func TestTimeoutAndMissingKey(t *testing.T) {
	fake := llmtest.NewAnthropic(testKey)
	defer fake.Close()
	fake.SetLatency(5 * time.Second)
	r := newTestRegistry(t, map[string]ProviderConfig{
		"slow":  {API: APIAnthropic, BaseURL: fake.BaseURL, APIKeyEnv: "FAKE_KEY"},
		"nokey": {BaseURL: fake.BaseURL, APIKeyEnv: "UNSET_KEY"},
	}, nil, 50*time.Millisecond)
	route, _ := r.Resolve("slow/claude-x")
	_, err := r.Chat(context.Background(), route, Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 10})
	if de := kernel.AsError(err); de == nil || de.Code != "provider_timeout" || de.Kind != kernel.KindUnavailable {
		t.Fatalf("timeout gave %v", err)
	}
	route, _ = r.Resolve("nokey/m")
	_, err = r.Chat(context.Background(), route, Request{Messages: []Message{{Role: RoleUser, Content: "hi"}}, MaxTokens: 10})
	if de := kernel.AsError(err); de == nil || de.Code != "provider_not_configured" || !strings.Contains(de.Msg, "UNSET_KEY") {
		t.Fatalf("missing key gave %v", err)
	}
	if len(fake.Requests()) != 1 {
		t.Fatal("a call without a key must not reach the provider")
	}
}

func TestMissingUsageIsEstimated(t *testing.T) {
	fake := llmtest.NewOpenAI("")
	defer fake.Close()
	fake.OmitUsage(true)
	r := newTestRegistry(t, map[string]ProviderConfig{"local": {BaseURL: fake.BaseURL}}, nil, time.Minute)
	route, _ := r.Resolve("local/llama")
	resp, err := r.Chat(context.Background(), route, Request{Messages: []Message{{Role: RoleUser, Content: "hello hello"}}, MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.UsageEstimated || resp.Usage.InputTokens == 0 || resp.Usage.OutputTokens != 3 {
		t.Fatalf("estimated usage %+v", resp)
	}
	if route.Pricing.PricingKnown || route.Pricing.InputPerM != DefaultInputPerM || route.Pricing.Source != "default" {
		t.Fatalf("unknown model must be priced by the default and flagged: %+v", route.Pricing)
	}
}

func TestResolveRejectsBadModelNames(t *testing.T) {
	r := newTestRegistry(t, nil, nil, time.Minute)
	for _, m := range []string{"", "gpt-4o", "/gpt-4o", "openai/", "nosuch/model", "openai/has space"} {
		if _, err := r.Resolve(m); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindInvalid {
			t.Fatalf("Resolve(%q) = %v, want an invalid-input error", m, err)
		}
	}
	rt, err := r.Resolve("openrouter/openai/gpt-4o-mini")
	if err != nil || rt.Provider != "openrouter" || rt.Model != "openai/gpt-4o-mini" || !rt.Pricing.PricingKnown {
		t.Fatalf("openrouter nested id: %+v %v", rt, err)
	}
	rt, _ = r.Resolve("ollama/llama3.2")
	if !rt.Pricing.PricingKnown || rt.Pricing.InputPerM != 0 {
		t.Fatalf("ollama models are free: %+v", rt.Pricing)
	}
}

func TestProviderConfigValidation(t *testing.T) {
	bad := []map[string]ProviderConfig{
		{"x": {API: "grpc", BaseURL: "http://127.0.0.1:1"}},
		{"x": {BaseURL: ""}},
		{"x": {BaseURL: "ftp://host"}},
		{"x": {BaseURL: "http://user:pw@host"}},
		{"x": {BaseURL: "http://host", APIKeyEnv: "sk-abc def"}},
		{"Bad Name": {BaseURL: "http://host"}},
	}
	for _, c := range bad {
		if _, err := ValidateProviders(c); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	got, err := ValidateProviders(map[string]ProviderConfig{
		"groq":  {BaseURL: "http://127.0.0.1:9/openai/v1/"},
		"vllm":  {BaseURL: "http://127.0.0.1:8000/v1"},
		"claud": {API: "anthropic", BaseURL: "http://127.0.0.1:9", APIKeyEnv: "CLAUD_KEY"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if g := got["groq"]; g.BaseURL != "http://127.0.0.1:9/openai/v1" || g.APIKeyEnv != "GROQ_API_KEY" || g.API != APIOpenAI {
		t.Fatalf("override of a well-known provider: %+v", g)
	}
	if v := got["vllm"]; v.API != APIOpenAI || v.APIKeyEnv != "" {
		t.Fatalf("new provider defaults: %+v", v)
	}
	if _, ok := got["anthropic"]; !ok {
		t.Fatal("well-known providers must stay available")
	}
}

func TestCatalogOverridesAndValidation(t *testing.T) {
	provs, _ := ValidateProviders(nil)
	c, err := NewCatalog([]ModelConfig{
		{Provider: "groq", ID: "llama-3.3-70b-versatile", OutputPerM: f64(1.5)},
		{Provider: "groq", ID: "new-model", InputPerM: f64(0.1), OutputPerM: f64(0.2), ContextWindow: 8192},
	}, provs, f64(2), f64(4))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Price("groq", "llama-3.3-70b-versatile"); p.InputPerM != 0.59 || p.OutputPerM != 1.5 || p.Source != "config" {
		t.Fatalf("partial override: %+v", p)
	}
	if p := c.Price("groq", "new-model"); p.CachedInputPerM != 0.1 || p.ContextWindow != 8192 || !p.PricingKnown {
		t.Fatalf("new model: %+v", p)
	}
	if p := c.Price("groq", "unknown"); p.PricingKnown || p.InputPerM != 2 || p.OutputPerM != 4 {
		t.Fatalf("configured default: %+v", p)
	}
	for _, bad := range [][]ModelConfig{
		{{Provider: "groq", ID: "x", InputPerM: f64(1)}},
		{{Provider: "nosuch", ID: "x", InputPerM: f64(1), OutputPerM: f64(1)}},
		{{Provider: "groq", ID: "x", InputPerM: f64(-1), OutputPerM: f64(1)}},
		{{Provider: "groq", ID: "x", InputPerM: f64(math.NaN()), OutputPerM: f64(1)}},
		{{Provider: "groq", ID: "", InputPerM: f64(1), OutputPerM: f64(1)}},
	} {
		if _, err := NewCatalog(bad, provs, nil, nil); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	if len(c.Models("anthropic")) == 0 || c.AsOf == "" {
		t.Fatal("the shipped catalog has no anthropic models or no date")
	}
}

func TestWorstCaseCoversActualCost(t *testing.T) {
	p := Pricing{InputPerM: 3, OutputPerM: 15, CachedInputPerM: 0.3}
	worst := p.WorstCaseNanos(1000, 100)
	if actual := p.CostNanos(Usage{InputTokens: 1000, CachedInputTokens: 200, OutputTokens: 100}); actual > worst {
		t.Fatalf("actual %d > worst case %d", actual, worst)
	}
	if worst != 4_500_000 { // (1000*3 + 100*15) / 1e6 USD = 0.0045 USD
		t.Fatalf("worst case %d nano-USD", worst)
	}
}
