package agent

import (
	"embed"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fangd/fangd/actors/kernel"
)

// The agent templates fangd ships: its own versions of the LibreFang
// templates whose work is conversation (no LibreFang built-in tools),
// each an agent.toml that ImportManifest reads. They are in the binary.
//
//go:embed templates/*.toml
var templateFS embed.FS

// TemplateInfo is one template as GET /api/templates lists it.
type TemplateInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// templateName is LibreFang's rule for a template name.
var templateName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Templates lists the shipped templates by name.
func Templates() []TemplateInfo {
	ents, _ := templateFS.ReadDir("templates")
	out := make([]TemplateInfo, 0, len(ents))
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".toml")
		text, _ := Template(name)
		var m struct {
			Description string `toml:"description"`
		}
		_, _ = toml.Decode(text, &m) // shipped files; TestTemplatesImport checks each
		out = append(out, TemplateInfo{Name: name, Description: m.Description})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Template returns a shipped template's agent.toml: 400 for a name that
// cannot be one, 404 for one that is not shipped.
func Template(name string) (string, error) {
	if !templateName.MatchString(name) {
		return "", kernel.Errorf(kernel.KindInvalid, "invalid_template_name", "template name %q must be 1-64 letters, digits, '-' or '_'", truncate(name, 80))
	}
	raw, err := templateFS.ReadFile("templates/" + name + ".toml")
	if err != nil {
		return "", kernel.Errorf(kernel.KindNotFound, "template_not_found", "template %q is not one fangd ships (GET /api/templates lists them)", name)
	}
	return string(raw), nil
}

// TemplateManifest is the part of a template GET /api/templates/{name}
// shows (LibreFang's fields: name, description, module, tags,
// model{provider, model}, capabilities{tools, network}).
type TemplateManifest struct {
	Name        string   `json:"name" toml:"name"`
	Description string   `json:"description" toml:"description"`
	Module      string   `json:"module" toml:"module"`
	Tags        []string `json:"tags" toml:"tags"`
	Model       struct {
		Provider string `json:"provider" toml:"provider"`
		Model    string `json:"model" toml:"model"`
	} `json:"model" toml:"model"`
	Capabilities struct {
		Tools   []string `json:"tools" toml:"tools"`
		Network []string `json:"network" toml:"network"`
	} `json:"capabilities" toml:"capabilities"`
}

// TemplateDetail returns a shipped template's manifest summary and text.
func TemplateDetail(name string) (TemplateManifest, string, error) {
	var m TemplateManifest
	text, err := Template(name)
	if err != nil {
		return m, "", err
	}
	if _, err := toml.Decode(text, &m); err != nil {
		return m, "", err
	}
	if m.Tags == nil {
		m.Tags = []string{}
	}
	if m.Capabilities.Tools == nil {
		m.Capabilities.Tools = []string{}
	}
	if m.Capabilities.Network == nil {
		m.Capabilities.Network = []string{}
	}
	return m, text, nil
}
