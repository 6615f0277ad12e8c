package llm

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// catalogTOML is the shipped catalog: public list prices of the common
// models of the well-known providers. [[models]] in config.toml extends or
// overrides it.
//
//go:embed catalog.toml
var catalogTOML string

// ModelConfig is one [[models]] table, in config.toml or the catalog file.
// Prices are USD per million tokens. Pointers tell "not set" from 0: an
// override may set only the fields that differ, and a model whose cached
// input price is not set pays the full input price for cached tokens.
type ModelConfig struct {
	Provider        string   `toml:"provider"`
	ID              string   `toml:"id"`
	InputPerM       *float64 `toml:"input_per_m"`
	OutputPerM      *float64 `toml:"output_per_m"`
	CachedInputPerM *float64 `toml:"cached_input_per_m"`
	ContextWindow   int      `toml:"context_window"`
}

// Pricing is what a model costs, as GET /api/models shows it.
type Pricing struct {
	Provider        string  `json:"provider"`
	ID              string  `json:"id"`
	ContextWindow   int     `json:"context_window"`
	InputPerM       float64 `json:"input_per_m"`
	OutputPerM      float64 `json:"output_per_m"`
	CachedInputPerM float64 `json:"cached_input_per_m"`
	// PricingKnown is false when the model is not in the catalog and is
	// priced by the configured default.
	PricingKnown bool `json:"pricing_known"`
	// Source is "catalog", "config", "default", or "echo_test_provider"
	// (the free models of an api = "echo" provider).
	Source string `json:"source"`
}

// CostNanos is the cost of usage in nano-USD (1e-9 USD), rounded to the
// nearest. Cache writes cost 1.25x the input price (Anthropic's 5-minute
// cache rate).
func (p Pricing) CostNanos(u Usage) int64 {
	regular := max(u.InputTokens-u.CachedInputTokens-u.CacheWriteTokens, 0)
	// price per million tokens * tokens / 1e6 USD = price * tokens * 1e3 nano-USD
	c := float64(regular)*p.InputPerM +
		float64(u.CachedInputTokens)*p.CachedInputPerM +
		float64(u.CacheWriteTokens)*p.InputPerM*1.25 +
		float64(u.OutputTokens)*p.OutputPerM
	return int64(math.Round(c * 1e3))
}

// WorstCaseNanos is the most a call can cost with at most promptTokens in
// and maxOutput out: no cache discount, rounded up.
func (p Pricing) WorstCaseNanos(promptTokens, maxOutput int64) int64 {
	c := float64(promptTokens)*p.InputPerM + float64(maxOutput)*p.OutputPerM
	return int64(math.Ceil(c * 1e3))
}

// Catalog is the immutable model catalog.
type Catalog struct {
	AsOf     string
	models   map[string]Pricing // key provider + "\x00" + id
	fallback Pricing            // the default price, PricingKnown false
}

type catalogFile struct {
	AsOf   string        `toml:"as_of"`
	Models []ModelConfig `toml:"models"`
}

var dateSuffixRe = regexp.MustCompile(`-(\d{8}|\d{4}-\d{2}-\d{2})$`)

// NewCatalog loads the shipped catalog and applies overrides, checking
// each against the known providers. defaultIn/defaultOut price unknown
// models; nil means LibreFang's $1 in / $3 out per million tokens.
func NewCatalog(overrides []ModelConfig, providers map[string]ProviderConfig, defaultInP, defaultOutP *float64) (*Catalog, error) {
	var file catalogFile
	md, err := toml.Decode(catalogTOML, &file)
	if err != nil {
		return nil, fmt.Errorf("shipped model catalog: %w", err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return nil, fmt.Errorf("shipped model catalog: unknown key %s", u[0])
	}
	defaultIn, defaultOut := DefaultInputPerM, DefaultOutputPerM
	if defaultInP != nil {
		defaultIn = *defaultInP
	}
	if defaultOutP != nil {
		defaultOut = *defaultOutP
	}
	if err := checkPrice("llm.default_input_per_m", defaultIn); err != nil {
		return nil, err
	}
	if err := checkPrice("llm.default_output_per_m", defaultOut); err != nil {
		return nil, err
	}
	c := &Catalog{AsOf: file.AsOf, models: map[string]Pricing{},
		fallback: Pricing{InputPerM: defaultIn, OutputPerM: defaultOut, CachedInputPerM: defaultIn, Source: "default"}}
	for i, m := range file.Models {
		if err := c.apply(fmt.Sprintf("shipped catalog entry %d", i+1), m, "catalog", providers); err != nil {
			return nil, err
		}
	}
	for i, m := range overrides {
		if err := c.apply(fmt.Sprintf("models[%d]", i), m, "config", providers); err != nil {
			return nil, err
		}
	}
	for name, p := range providers {
		// Every model of the echo test provider is free, unless [[models]]
		// prices it (to try budgets with it).
		if _, ok := c.models[name+"\x00*"]; p.API == APIEcho && !ok {
			c.models[name+"\x00*"] = Pricing{Provider: name, ID: "*", PricingKnown: true, Source: echoSource}
		}
	}
	return c, nil
}

func checkPrice(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 100_000 {
		return fmt.Errorf("%s: %v is not a price (want a number from 0 to 100000 USD per million tokens)", field, v)
	}
	return nil
}

func (c *Catalog) apply(field string, m ModelConfig, source string, providers map[string]ProviderConfig) error {
	if m.Provider == "" || m.ID == "" {
		return fmt.Errorf("%s: provider and id are required", field)
	}
	if _, ok := providers[m.Provider]; !ok {
		return fmt.Errorf("%s.provider %q: no such provider (add a [providers.%s] table)", field, m.Provider, m.Provider)
	}
	if len(m.ID) > 200 || strings.ContainsAny(m.ID, " \t\r\n\x00") {
		return fmt.Errorf("%s.id %q: not a model id", field, m.ID)
	}
	if m.ContextWindow < 0 || m.ContextWindow > 100_000_000 {
		return fmt.Errorf("%s.context_window %d: want 0 (unknown) to 100000000", field, m.ContextWindow)
	}
	key := m.Provider + "\x00" + m.ID
	p, exists := c.models[key]
	if !exists {
		if m.InputPerM == nil || m.OutputPerM == nil {
			return fmt.Errorf("%s (%s/%s): input_per_m and output_per_m are required for a model the catalog does not have", field, m.Provider, m.ID)
		}
		p = Pricing{Provider: m.Provider, ID: m.ID, CachedInputPerM: -1}
	}
	for _, f := range []struct {
		name string
		v    *float64
		dst  *float64
	}{{"input_per_m", m.InputPerM, &p.InputPerM}, {"output_per_m", m.OutputPerM, &p.OutputPerM}, {"cached_input_per_m", m.CachedInputPerM, &p.CachedInputPerM}} {
		if f.v == nil {
			continue
		}
		if err := checkPrice(field+"."+f.name, *f.v); err != nil {
			return err
		}
		*f.dst = *f.v
	}
	if p.CachedInputPerM < 0 {
		p.CachedInputPerM = p.InputPerM
	}
	if m.ContextWindow > 0 {
		p.ContextWindow = m.ContextWindow
	}
	p.PricingKnown, p.Source = true, source
	c.models[key] = p
	return nil
}

// Price returns the pricing of provider/id: an exact entry, else the entry
// without a date suffix (claude-sonnet-4-5-20250929 -> claude-sonnet-4-5,
// gpt-4o-2024-08-06 -> gpt-4o), else the provider's "*" entry, else the
// default price with PricingKnown false.
func (c *Catalog) Price(provider, id string) Pricing {
	if p, ok := c.models[provider+"\x00"+id]; ok {
		return p
	}
	if base := dateSuffixRe.ReplaceAllString(id, ""); base != id {
		if p, ok := c.models[provider+"\x00"+base]; ok {
			p.ID = id
			return p
		}
	}
	if p, ok := c.models[provider+"\x00*"]; ok {
		p.ID = id
		return p
	}
	p := c.fallback
	p.Provider, p.ID = provider, id
	return p
}

// Default is the price of unknown models.
func (c *Catalog) Default() Pricing { return c.fallback }

// Models lists the catalog sorted by provider and id; provider filters
// when not empty.
func (c *Catalog) Models(provider string) []Pricing {
	out := make([]Pricing, 0, len(c.models))
	for _, p := range c.models {
		if provider == "" || p.Provider == provider {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Provider != out[j].Provider {
			return out[i].Provider < out[j].Provider
		}
		return out[i].ID < out[j].ID
	})
	return out
}
