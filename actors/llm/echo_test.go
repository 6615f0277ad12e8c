package llm

import (
	"context"
	"strings"
	"testing"
)

func TestEchoProviderIsOffUnlessConfigured(t *testing.T) {
	r, err := NewRegistry(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve("echo/echo"); err == nil {
		t.Fatal("echo resolves without being configured")
	}
	for _, p := range r.Providers() {
		if p.API == APIEcho {
			t.Fatalf("a provider speaks echo without configuration: %+v", p)
		}
	}
}

func TestEchoProviderAnswersWithTheUsersTextAndEstimatesUsage(t *testing.T) {
	r, err := NewRegistry(Options{Providers: map[string]ProviderConfig{"echo": {API: APIEcho}}})
	if err != nil {
		t.Fatal(err)
	}
	route, err := r.Resolve("echo/any-model")
	if err != nil {
		t.Fatal(err)
	}
	if route.Pricing.InputPerM != 0 || route.Pricing.OutputPerM != 0 || route.Pricing.Source != echoSource || !route.Pricing.PricingKnown {
		t.Fatalf("echo pricing: %+v", route.Pricing)
	}
	msg := "hello from a user with no paid key"
	req := Request{System: "be brief", Messages: []Message{{Role: RoleUser, Content: "earlier"}, {Role: RoleAssistant, Content: "earlier"}, {Role: RoleUser, Content: msg}}}
	resp, err := r.Chat(context.Background(), route, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != msg || resp.StopReason != "stop" || resp.Model != "any-model" || !resp.UsageEstimated {
		t.Fatalf("answer: %+v", resp)
	}
	if want := estimateUsage(req, msg); resp.Usage != want || resp.Usage.OutputTokens != TypicalTokens(msg) || resp.Usage.InputTokens <= TypicalTokens(msg) {
		t.Fatalf("usage %+v, want %+v", resp.Usage, want)
	}
	// max_tokens caps the answer as a model would.
	resp, err = r.Chat(context.Background(), route, Request{MaxTokens: 2, Messages: []Message{{Role: RoleUser, Content: strings.Repeat("x", 100)}}})
	if err != nil || resp.Text != "xxxxxxxx" || resp.StopReason != "length" || resp.Usage.OutputTokens != 2 {
		t.Fatalf("capped: %+v %v", resp, err)
	}
	var info *ProviderInfo
	for _, p := range r.Providers() {
		if p.Name == "echo" {
			info = &p
		}
	}
	if info == nil || info.API != APIEcho || info.NeedsKey || info.BaseURL != "" {
		t.Fatalf("provider info: %+v", info)
	}
}

func TestEchoProviderRefusesURLAndKey(t *testing.T) {
	for _, p := range []ProviderConfig{{API: APIEcho, BaseURL: "http://127.0.0.1:1"}, {API: APIEcho, APIKeyEnv: "X"}} {
		if _, err := ValidateProviders(map[string]ProviderConfig{"echo": p}); err == nil || !strings.Contains(err.Error(), "test provider") {
			t.Fatalf("%+v: %v", p, err)
		}
	}
	// [[models]] may price it, to try budgets.
	in, out := 1.0, 2.0
	r, err := NewRegistry(Options{Providers: map[string]ProviderConfig{"try": {API: APIEcho}},
		Models: []ModelConfig{{Provider: "try", ID: "*", InputPerM: &in, OutputPerM: &out}}})
	if err != nil {
		t.Fatal(err)
	}
	if p := r.Catalog().Price("try", "m"); p.InputPerM != 1 || p.Source != "config" {
		t.Fatalf("priced echo: %+v", p)
	}
}

func TestEchoProviderStreamsWordByWord(t *testing.T) {
	r, err := NewRegistry(Options{Providers: map[string]ProviderConfig{"echo": {API: APIEcho}}})
	if err != nil {
		t.Fatal(err)
	}
	route, _ := r.Resolve("echo/echo")
	var pieces []string
	req := Request{Messages: []Message{{Role: RoleUser, Content: "one two three"}}}
	resp, err := r.ChatStream(context.Background(), route, req, func(d Delta) error {
		pieces = append(pieces, d.Text)
		return nil
	})
	if err != nil || resp.Text != "one two three" || strings.Join(pieces, "|") != "one |two |three" || !resp.UsageEstimated {
		t.Fatalf("stream: %q %+v %v", pieces, resp, err)
	}
}
