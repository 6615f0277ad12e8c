package mcptest

import (
	"fmt"
	"strconv"
	"strings"
)

// EverythingConfig is the config.toml [[mcp_servers]] entry that runs
// server-everything over stdio as "everything", calls timing out after
// 20 s.
func (p Peers) EverythingConfig() string {
	node, args := p.Everything("stdio")
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`
[[mcp_servers]]
name = "everything"
transport = "stdio"
command = %q
args = [%s]
timeout_secs = 20
`, node, strings.Join(quoted, ", "))
}
