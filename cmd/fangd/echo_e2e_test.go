package main

import (
	"encoding/json"
	"testing"
)

// The offline path of docs/agents.md ("Trying fangd with no paid key"),
// on the real binary: configure the echo test provider, create an agent,
// message it, and see the reply, the estimated usage and a zero cost.
func TestEchoProviderOnTheBinary(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), `[providers.echo]
api = "echo"

[default_model]
provider = "echo"
model = "echo"
`)
	if st, b := p.request(t, "POST", "/api/agents", `{"name":"my-agent","model":"echo/echo"}`); st != 201 {
		t.Fatalf("create: %d %s", st, b)
	}
	st, b := p.request(t, "POST", "/api/agents/my-agent/message", `{"message":"hello from the docs"}`)
	var reply struct {
		Response     string  `json:"response"`
		InputTokens  int64   `json:"input_tokens"`
		OutputTokens int64   `json:"output_tokens"`
		CostUSD      float64 `json:"cost_usd"`
	}
	if err := json.Unmarshal(b, &reply); err != nil || st != 200 {
		t.Fatalf("message: %d %s", st, b)
	}
	// "hello from the docs" is 19 bytes: (19+3)/4 = 5 estimated tokens.
	if reply.Response != "hello from the docs" || reply.OutputTokens != 5 || reply.InputTokens <= 0 || reply.CostUSD != 0 {
		t.Fatalf("reply: %s", b)
	}
	st, b = p.request(t, "GET", "/api/providers", "")
	var provs struct {
		Providers []struct{ Name, API string }
	}
	if err := json.Unmarshal(b, &provs); err != nil || st != 200 {
		t.Fatalf("providers: %d %s", st, b)
	}
	found := false
	for _, pr := range provs.Providers {
		found = found || (pr.Name == "echo" && pr.API == "echo")
	}
	if !found {
		t.Fatalf("the echo provider is not listed as api echo: %s", b)
	}
}
