package channel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/adapters"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/whatsapp"
)

// This test package links every built-in adapter (through adapters), as
// the daemon does, so the registry holds all 44 rows: runtime_test.go's
// fake runs as "telegram" with that adapter's schema.

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// golden compares got with testdata/<name>.golden (or rewrites it with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from %s (run with -update only if the change is meant):\n%s", name, path, firstDiff(got, want))
	}
}

func firstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	from := max(i-200, 0)
	return "got:  …" + string(got[from:min(i+200, len(got))]) + "\nwant: …" + string(want[from:min(i+200, len(want))])
}

// The schema of every adapter, built or not, as the runtime reads it:
// what GET /api/channels shows plus what it does not (which URLs are
// dialled, the allow-list fields, the account fields, webhook-taking).
// Where a Spec is declared may change; what it says may not.
func TestRegistrySchemaIsPinned(t *testing.T) {
	type pinField struct {
		channel.Field
		Dialed bool `json:"dialed"`
	}
	type pinSpec struct {
		Name, DisplayName, Category, Description, SetupType string
		Webhook                                             bool
		Filters                                             channel.Filters
		Account, AccountFields                              []string
		PrimarySecret                                       string
		Fields                                              []pinField
	}
	var out []pinSpec
	for _, s := range channel.Specs() {
		p := pinSpec{Name: s.Name, DisplayName: s.DisplayName, Category: s.Category, Description: s.Description,
			SetupType: s.SetupType, Webhook: s.Webhook, Filters: s.Filters, Account: s.Account,
			AccountFields: s.AccountFields(), PrimarySecret: s.PrimarySecret()}
		for _, f := range s.Fields {
			p.Fields = append(p.Fields, pinField{Field: f, Dialed: f.Dialed})
		}
		if l, ok := channel.Lookup(s.Name); !ok || l != s {
			t.Errorf("Lookup(%q) is not the Specs() entry", s.Name)
		}
		out = append(out, p)
	}
	got, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "registry_schema", got)
}

// GET /api/channels and /api/channels/registry are built from
// Service.List: with every built-in adapter and nothing configured, its
// answer is pinned byte for byte.
func TestRegistryListingIsPinned(t *testing.T) {
	t.Setenv(whatsapp.GatewayEnv, "")
	h := channeltest.New(t, adapters.Builders())
	list, err := h.Service.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 44 {
		t.Fatalf("%d channels listed, want LibreFang's 44", len(list))
	}
	got, err := json.MarshalIndent(list, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "registry_list", got)
}

// Config validation ([channels.<name>] tables, the same checks as the
// configure API) answers the same for every adapter: an unknown key
// (whose message lists the schema's keys in order), an empty table (the
// first required field, or "not built"), a value of the wrong type for
// each field, and every required field set (the adapter's own checks).
func TestRegistryValidationIsPinned(t *testing.T) {
	t.Setenv(whatsapp.GatewayEnv, "")
	noEnv := func(string) string { return "" }
	builders := adapters.Builders()
	var lines []string
	check := func(name string, table map[string]any) {
		problems := channel.CheckTables(builders, map[string]map[string]any{name: table}, noEnv)
		if len(problems) == 0 {
			problems = []string{"ok"}
		}
		b, _ := json.Marshal(table)
		for _, p := range problems {
			lines = append(lines, string(b)+" -> "+p)
		}
	}
	for _, s := range channel.Specs() {
		check(s.Name, map[string]any{"no_such_field": "x"})
		check(s.Name, map[string]any{})
		required := map[string]any{}
		for _, f := range s.Fields {
			check(s.Name, map[string]any{f.Key: []any{map[string]any{}}})
			if f.Required {
				switch f.Type {
				case channel.TypeList:
					required[f.Key] = []any{"x"}
				case channel.TypeNumber:
					required[f.Key] = "1"
				default:
					required[f.Key] = "x"
				}
			}
		}
		check(s.Name, required)
	}
	got, err := json.MarshalIndent(lines, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "registry_validation", got)
}
