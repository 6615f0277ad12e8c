package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
)

// A manifest shaped like LibreFang's own examples (examples/custom-agent,
// the hello-world fixture): what maps, maps; the rest is listed as ignored.
const lfExample = `
name = "my-custom-agent"
version = "0.1.0"
description = "A friendly assistant that helps with daily tasks."
author = "your-name"
module = "builtin:chat"
tags = ["assistant", "example"]
mcp_servers = ["memory", "web-fetch"]
skills = []
skills_disabled = true

[metadata.routing]
aliases = ["hello world", "greeting"]

[model]
provider = "groq"
model = "llama-3.3-70b-versatile"
max_tokens = 2048
temperature = 0.6
system_prompt = """
You are a helpful assistant.
"""

[resources]
max_cost_per_day_usd = 2.5
max_llm_tokens_per_hour = 0

[capabilities]
tools = ["file_read", "file_list"]
network = ["*"]
memory_read = ["self.*"]
memory_write = ["self.*"]
agent_spawn = false

[i18n.de]
name = "Hallo"
`

func TestImportManifestMapsLibreFangFields(t *testing.T) {
	imp, err := ImportManifest(lfExample, "")
	if err != nil {
		t.Fatal(err)
	}
	s := imp.Spec
	if s.Name != "my-custom-agent" || s.Description != "A friendly assistant that helps with daily tasks." ||
		s.Model != "groq/llama-3.3-70b-versatile" || *s.MaxTokens != 2048 || s.Temperature == nil || *s.Temperature != 0.6 || s.SystemPrompt != "You are a helpful assistant." ||
		fmt.Sprint(s.Tags) != "[assistant example]" {
		t.Fatalf("spec: %+v", s)
	}
	if fmt.Sprint(s.Tools) != "[file_read file_list mcp_memory_* mcp_web_fetch_*]" {
		t.Fatalf("tools: %v", s.Tools)
	}
	// mcp_servers and channels are allow-lists on fangd's agents too.
	if fmt.Sprint(s.MCPServers) != "[memory web-fetch]" || len(s.Channels) != 0 {
		t.Fatalf("allow-lists: %v %v", s.MCPServers, s.Channels)
	}
	imp2, err := ImportManifest("name = \"x\"\nchannels = [\"telegram\"]\nmcp_servers = [\"*\"]\n[model]\nprovider = \"g\"\nmodel = \"m\"\n", "")
	if err != nil || fmt.Sprint(imp2.Spec.Channels) != "[telegram]" || len(imp2.Spec.MCPServers) != 0 || fmt.Sprint(imp2.Spec.Tools) != "[mcp_*]" {
		t.Fatalf("channels, all servers: %+v %v", imp2, err)
	}
	if imp.DailyUSD == nil || *imp.DailyUSD != 2.5 || imp.MonthlyUSD != nil {
		t.Fatalf("budget: %v %v", imp.DailyUSD, imp.MonthlyUSD)
	}
	got := strings.Join(imp.Ignored, ",")
	for _, k := range []string{"version", "author", "skills", "skills_disabled", "metadata",
		"capabilities.network", "capabilities.memory_read", "capabilities.agent_spawn", "i18n"} {
		if !strings.Contains(","+got+",", ","+k+",") {
			t.Errorf("ignored %q not listed: %s", k, got)
		}
	}
	// model.temperature is applied now (sent to the provider), not ignored.
	if w := imp.Warnings(); len(w) != 1 || strings.Contains(w[0], "model.temperature") || strings.Contains(got, "temperature") {
		t.Fatalf("warnings: %v", w)
	}
}

func TestImportManifestDefaults(t *testing.T) {
	// LibreFang's defaults: the daemon's default model, 4096 tokens, its
	// default system prompt.
	imp, err := ImportManifest("name = \"bare\"\n", "openai/gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	if imp.Spec.Model != "openai/gpt-4o-mini" || *imp.Spec.MaxTokens != DefaultManifestMaxTokens ||
		imp.Spec.SystemPrompt != DefaultManifestPrompt || len(imp.Spec.Tools) != 0 || len(imp.Ignored) != 0 {
		t.Fatalf("defaults: %+v", imp)
	}
	imp, err = ImportManifest("name = \"x\"\n[model]\nprovider = \"default\"\nmodel = \"other-model\"\n", "openai/gpt-4o-mini")
	if err != nil || imp.Spec.Model != "openai/other-model" {
		t.Fatalf("default provider, named model: %v %v", imp, err)
	}
	imp, err = ImportManifest("name = \"x\"\n[model]\nprovider = \"anthropic\"\nname = \"claude-x\"\n", "")
	if err != nil || imp.Spec.Model != "anthropic/claude-x" {
		t.Fatalf("model alias name: %v %v", imp, err)
	}
	_, err = ImportManifest("name = \"x\"\nschedule = \"reactive\"\nenabled = true\n[model]\nprovider = \"groq\"\nmodel = \"m\"\n", "")
	if err != nil {
		t.Fatalf("LibreFang's defaults written out: %v", err)
	}
}

func TestImportManifestTools(t *testing.T) {
	const model = "[model]\nprovider = \"groq\"\nmodel = \"m\"\n"
	for _, c := range []struct{ toml, want, errPart string }{
		{"tools_disabled = true\n[capabilities]\ntools = [\"file_read\"]\n", "[]", ""},
		{"mcp_servers = [\"*\"]\n", "[mcp_*]", ""},
		{"mcp_servers = [\"gh\"]\nmcp_disabled = true\n", "[]", ""},
		{"mcp_disabled = true\n[capabilities]\ntools = [\"file_read\", \"mcp_gh_x\"]\n", "[file_read]", ""},
		{"profile = \"minimal\"\n", "[file_read file_list]", ""},
		{"profile = \"full\"\n", "[*]", ""},
		{"profile = \"nope\"\n", "", "profile"},
		{"tool_blocklist = [\"file_list\"]\n[capabilities]\ntools = [\"file_read\", \"file_list\"]\n", "[file_read]", ""},
		{"tool_allowlist = [\"file_read\"]\n[capabilities]\ntools = [\"file_read\", \"file_list\"]\n", "[file_read]", ""},
		{"mcp_servers = [\"gh\"]\ntool_blocklist = [\"mcp_gh_delete\"]\n", "", "mcp_gh_delete"},
		{"mcp_servers = [\"gh\"]\ntool_allowlist = [\"mcp_gh_read\"]\n", "", "mcp_gh_*"},
	} {
		imp, err := ImportManifest("name = \"t\"\n"+c.toml+model, "")
		if c.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) {
				t.Errorf("%q: err %v, want one naming %s", c.toml, err, c.errPart)
			}
			continue
		}
		if err != nil || fmt.Sprint(imp.Spec.Tools) != c.want {
			t.Errorf("%q: tools %v (%v), want %s", c.toml, imp, err, c.want)
		}
	}
}

// What fangd cannot honour is a 400 naming the key (and why), never
// dropped: a limit it does not enforce, a model setting it does not send.
func TestImportManifestRefusesWhatItCannotHonour(t *testing.T) {
	const model = "\n[model]\nprovider = \"groq\"\nmodel = \"m\"\n"
	for _, c := range []struct{ toml, code, names string }{
		{"name = \"x\"\ncolour = \"blue\"" + model, "unknown_manifest_field", "colour"},
		{"name = \"x\"" + model + "base_url = \"http://x\"\n", "unsupported_manifest_field", "model.base_url"},
		{"name = \"x\"" + model + "[resources]\nmax_llm_tokens_per_hour = 50000\n", "unsupported_manifest_field", "resources.max_llm_tokens_per_hour"},
		{"name = \"x\"" + model + "[resources]\nmax_cost_per_hour_usd = 1.0\n", "unsupported_manifest_field", "resources.max_cost_per_hour_usd"},
		{"name = \"x\"" + model + "[resources]\nmax_tool_calls_per_minute = 60\n", "unsupported_manifest_field", "max_tool_calls_per_minute"},
		{"name = \"x\"\nmodule = \"wasm:agent.wasm\"" + model, "unsupported_manifest_field", "module"},
		{"name = \"x\"\nenabled = false" + model, "unsupported_manifest_field", "enabled"},
		{"name = \"x\"" + model + "[schedule]\nperiodic = { cron = \"every 5m\" }\n", "unsupported_manifest_field", "schedule"},
		{"name = \"x\"" + model + "[[fallback_models]]\nprovider = \"groq\"\nmodel = \"y\"\n", "unsupported_manifest_field", "fallback_models"},
		{"name = \"x\"\nresponse_format = \"json_object\"" + model, "unsupported_manifest_field", "response_format"},
		{"name = \"x\"" + model + "[resources]\nmax_cost_per_day_usd = -1.0\n", "invalid_manifest", "max_cost_per_day_usd"},
		{"name = \"x\"" + model + "max_tokens = 0\n", "invalid_manifest", "max_tokens"},
		{"name = \"x\"\n", "no_default_model", "default_model"},
		{"description = \"no name\"" + model, "invalid_manifest", "name"},
		{"name = [1, 2]" + model, "invalid_manifest", "name"},
		{"name = \"x\"\n[model\n", "invalid_manifest", "line"},
		{strings.Repeat("#", MaxManifestBytes+1), "manifest_too_large", "manifest_toml"},
	} {
		_, err := ImportManifest(c.toml, "")
		ke := kernel.AsError(err)
		if ke == nil || ke.Code != c.code || !strings.Contains(ke.Msg, c.names) {
			t.Errorf("%.60q: %v, want %s naming %s", c.toml, err, c.code, c.names)
		}
	}
}

// Every shipped template imports cleanly (nothing ignored, nothing
// refused) once a default model is known, and its name is its file's.
func TestTemplatesImport(t *testing.T) {
	list := Templates()
	if len(list) < 10 {
		t.Fatalf("%d templates", len(list))
	}
	for _, ti := range list {
		text, err := Template(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		imp, err := ImportManifest(text, "groq/llama-3.3-70b-versatile")
		if err != nil || imp.Spec.Name != ti.Name || len(imp.Ignored) != 0 || ti.Description == "" ||
			imp.Spec.SystemPrompt == "" || imp.Spec.SystemPrompt == DefaultManifestPrompt {
			t.Fatalf("template %s: %+v %v", ti.Name, imp, err)
		}
		if err := validName(imp.Spec.Name); err != nil {
			t.Fatal(err)
		}
	}
	for name, code := range map[string]string{"nope": "template_not_found", "../etc": "invalid_template_name", "": "invalid_template_name"} {
		if _, err := Template(name); kernel.AsError(err) == nil || kernel.AsError(err).Code != code {
			t.Errorf("template %q: %v, want %s", name, err, code)
		}
	}
}
