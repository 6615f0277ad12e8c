package llm

import (
	"context"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// An agent's temperature reaches both provider APIs, plain and streamed,
// and a request without one sends no temperature field (the provider's
// default applies), so the fakes see nil.
func TestTemperatureReachesBothProviders(t *testing.T) {
	oai, anth := llmtest.NewOpenAI(testKey), llmtest.NewAnthropic(testKey)
	defer oai.Close()
	defer anth.Close()
	r := newTestRegistry(t, map[string]ProviderConfig{
		"fo": {BaseURL: oai.BaseURL, APIKeyEnv: "FAKE_KEY"},
		"fa": {API: APIAnthropic, BaseURL: anth.BaseURL, APIKeyEnv: "FAKE_KEY"},
	}, nil, time.Minute)
	if r.MaxTemperature("fo") != 2 || r.MaxTemperature("fa") != 1 {
		t.Fatalf("max temperature: openai-compatible %v, anthropic %v", r.MaxTemperature("fo"), r.MaxTemperature("fa"))
	}
	for _, c := range []struct {
		model string
		fake  *llmtest.Fake
	}{{"fo/m", oai}, {"fa/m", anth}} {
		route, err := r.Resolve(c.model)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []Message{{Role: RoleUser, Content: "hi"}}
		if _, err := r.Chat(context.Background(), route, Request{Messages: msgs, MaxTokens: 16, Temperature: f64(0.25)}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ChatStream(context.Background(), route, Request{Messages: msgs, MaxTokens: 16, Temperature: f64(0.75)}, func(Delta) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Chat(context.Background(), route, Request{Messages: msgs, MaxTokens: 16}); err != nil {
			t.Fatal(err)
		}
		got := c.fake.Requests()
		if len(got) != 3 || got[0].Temperature == nil || *got[0].Temperature != 0.25 || !got[1].Stream ||
			got[1].Temperature == nil || *got[1].Temperature != 0.75 || got[2].Temperature != nil {
			t.Fatalf("%s: the provider received %+v", c.model, got)
		}
	}
}
