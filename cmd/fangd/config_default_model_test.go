package main

import (
	"strings"
	"testing"
)

// [default_model] (LibreFang's key) needs both parts and a provider fangd
// knows; it is what agent manifests' "default" model stands for.
func TestDefaultModelValidated(t *testing.T) {
	for _, c := range []struct {
		provider, model, err string
	}{
		{"", "", ""},
		{"groq", "llama-3.3-70b-versatile", ""},
		{"groq", "", "default_model needs both"},
		{"", "m", "default_model needs both"},
		{"gr/oq", "m", "default_model needs both"},
		{"nobody", "m", `default_model.provider "nobody"`},
	} {
		cfg := defaultConfig()
		cfg.DefaultModel = DefaultModelConfig{Provider: c.provider, Model: c.model}
		err := cfg.validate()
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q/%q: %v, want %q", c.provider, c.model, err, c.err)
		}
	}
	if got := (DefaultModelConfig{Provider: "groq", Model: "m"}).route(); got != "groq/m" {
		t.Fatalf("route %q", got)
	}
}
