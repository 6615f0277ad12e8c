package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/mcp.md's first example, LibreFang's tagged transport table, loads;
// an unknown key inside it is still refused, by mcp.ParseSpec, with the key
// named. (It used to stop fangd at start: "unknown key(s):
// mcp_servers.transport.type, ...".)
func TestMCPServerTransportTableLoads(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(`[[mcp_servers]]
name = "filesystem"
transport = { type = "stdio", command = "npx", args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"] }
timeout_secs = 30
`)
	cfg, err := loadConfig(good, true)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := cfg.mcpSpecs()
	if err != nil || len(specs) != 1 || specs[0].Name != "filesystem" {
		t.Fatalf("specs %+v, err %v", specs, err)
	}

	bad := write(`[[mcp_servers]]
name = "filesystem"
transport = { type = "stdio", command = "npx", shell = true }
`)
	cfg, err = loadConfig(bad, true)
	if err == nil {
		_, err = cfg.mcpSpecs()
	}
	if err == nil || !strings.Contains(err.Error(), "shell") {
		t.Fatalf("an unknown key in the transport table: %v", err)
	}
	if _, err := loadConfig(write("[log]\nlevle = \"debug\"\n"), true); err == nil || !strings.Contains(err.Error(), "log.levle") {
		t.Fatalf("an unknown top-level key: %v", err)
	}
}
