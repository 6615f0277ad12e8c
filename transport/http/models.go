package http

import (
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/llm"
)

// listModels serves GET /api/models[?provider=]: the model catalog (the
// shipped file plus [[models]] from config) with prices per million tokens.
func (s *Server) listModels(ctx *fasthttp.RequestCtx) error {
	provider := string(ctx.QueryArgs().Peek("provider"))
	if provider != "" {
		if _, err := s.deps.LLM.Resolve(provider + "/x"); err != nil {
			return err
		}
	}
	cat := s.deps.LLM.Catalog()
	models := cat.Models(provider)
	def := cat.Default()
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Models         []llm.Pricing `json:"models"`
		Total          int           `json:"total"`
		AsOf           string        `json:"as_of"`
		DefaultPricing struct {
			InputPerM  float64 `json:"input_per_m"`
			OutputPerM float64 `json:"output_per_m"`
		} `json:"default_pricing"`
	}{Models: models, Total: len(models), AsOf: cat.AsOf, DefaultPricing: struct {
		InputPerM  float64 `json:"input_per_m"`
		OutputPerM float64 `json:"output_per_m"`
	}{def.InputPerM, def.OutputPerM}})
	return nil
}

// listProviders serves GET /api/providers: the configured and well-known
// providers, whether each has its API key (never the key).
func (s *Server) listProviders(ctx *fasthttp.RequestCtx) error {
	ps := s.deps.LLM.Providers()
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Providers []llm.ProviderInfo `json:"providers"`
		Total     int                `json:"total"`
	}{ps, len(ps)})
	return nil
}
