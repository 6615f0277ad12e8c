package mcp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
)

func TestParseAddBothShapes(t *testing.T) {
	flat, err := ParseAdd([]byte(`{"name":"filesystem","transport":"stdio","command":"npx","args":["-y","@modelcontextprotocol/server-filesystem"]}`))
	if err != nil {
		t.Fatal(err)
	}
	tagged, err := ParseAdd([]byte(`{"name":"filesystem","transport":{"type":"stdio","command":"npx","args":["-y","@modelcontextprotocol/server-filesystem"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !equalDefinition(flat.Spec, tagged.Spec) || flat.Install {
		t.Fatalf("flat %+v != tagged %+v", flat.Spec, tagged.Spec)
	}
	inst, err := ParseAdd([]byte(`{"template_id":"github","credentials":{"GITHUB_PERSONAL_ACCESS_TOKEN":"ghp_x"}}`))
	if err != nil || !inst.Install || inst.TemplateID != "github" || inst.Credentials["GITHUB_PERSONAL_ACCESS_TOKEN"] != "ghp_x" {
		t.Fatalf("install: %+v %v", inst, err)
	}
	bad := []string{
		`{"name":"x"}`,
		`{"name":"x","transport":{"type":"stdio","command":"a","bogus":1}}`,
		`{"name":"x","transport":{"type":"stdio"},"command":"a"}`,
		`{"name":"x","transport":7}`,
		`{"name":"x","transport":"stdio","command":"a","extra":true}`,
		`{"name":"x","transport":"stdio","command":"a","credentials":{"A":"b"}}`,
	}
	for _, b := range bad {
		if _, err := ParseAdd([]byte(b)); kindOf(err) != kernel.KindInvalid {
			t.Errorf("%s: %v", b, err)
		}
	}
}

func TestNamespace(t *testing.T) {
	for _, c := range [][3]string{
		{"filesystem", "read_file", "mcp_filesystem_read_file"},
		{"My-Server", "get-Sum", "mcp_my_server_get_sum"},
	} {
		if got := Namespace(c[0], c[1]); got != c[2] {
			t.Errorf("Namespace(%q,%q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

func TestSplitSecretsKeepsNamesOnly(t *testing.T) {
	s := Spec{Name: "x", Env: []string{"PLAIN", "TOKEN=abc"}, Headers: []string{"Authorization: Bearer zzz", "X-T: ${TOKEN}"}}
	stored, secrets := splitSecrets(s)
	if strings.Join(stored.Env, ",") != "PLAIN,TOKEN" || strings.Join(stored.Headers, ",") != "Authorization,X-T: ${TOKEN}" {
		t.Fatalf("stored %+v", stored)
	}
	if secrets[envKey("x", "TOKEN")] != "abc" || secrets[headerKey("x", "Authorization")] != "Bearer zzz" || len(secrets) != 2 {
		t.Fatalf("secrets %v", secrets)
	}
}

func TestShippedCatalog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	if err := SeedCatalog(dir); err != nil {
		t.Fatal(err)
	}
	cat, err := LoadCatalog(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cat.Len() < 15 {
		t.Fatalf("catalog has %d entries", cat.Len())
	}
	for _, id := range []string{"filesystem", "fetch", "git", "github", "gitlab", "slack", "postgres", "sqlite", "memory", "everything", "brave-search", "google-drive", "notion", "atlassian", "sentry"} {
		e, ok := cat.Get(id)
		if !ok {
			t.Errorf("catalog lacks %s", id)
			continue
		}
		if e.Name == "" || e.Description == "" || e.Category == "" || e.Transport.Type == "" {
			t.Errorf("%s is incomplete: %+v", id, e)
		}
	}
	gh, _ := cat.Get("github")
	if len(gh.RequiredEnv) != 1 || !gh.RequiredEnv[0].IsSecret {
		t.Fatalf("github entry: %+v", gh)
	}

	// The directory is the operator's after the first start: an edit stays.
	if err := os.Remove(filepath.Join(dir, "time.toml")); err != nil {
		t.Fatal(err)
	}
	if err := SeedCatalog(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "time.toml")); !os.IsNotExist(err) {
		t.Fatal("seeding again restored a removed entry")
	}

	// One bad file fails the load and names the file.
	if err := os.WriteFile(filepath.Join(dir, "broken.toml"), []byte("id = \"b\"\nname = \"B\"\n[transport]\ntype = \"telnet\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCatalog(dir); err == nil || !strings.Contains(err.Error(), "broken.toml") {
		t.Fatalf("bad entry: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.toml"), []byte("id = \"b\"\nname = \"B\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\nargs = [\"${SECRET}\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCatalog(dir); err == nil || !strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("undeclared placeholder: %v", err)
	}
}
