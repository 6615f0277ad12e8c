package agent

import (
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
)

type fakeDirectory struct{}

func (fakeDirectory) Offered(name string) bool { return name == "mcp_fs_read" || name == "file_read" }
func (fakeDirectory) WaitingServer(name string) string {
	if strings.HasPrefix(name, "mcp_github_") {
		return "github"
	}
	return ""
}

// The manifest rule, as a table: globs pass, offered names pass, names
// of a server not connected pass with a warning, the rest is a 400
// naming the tool; malformed names are left to the manifest's own check.
func TestCheckToolsRule(t *testing.T) {
	for _, c := range []struct {
		tools    []string
		warnings int
		bad      string
	}{
		{[]string{"mcp_*", "mcp_fs_read", "file_read"}, 0, ""},
		{[]string{"mcp_github_create_issue"}, 1, ""},
		{[]string{"mcp_fs_read", "shell_exec"}, 0, "shell_exec"},
		{[]string{"mcp_fs_write"}, 0, "mcp_fs_write"},
		{[]string{"not a name"}, 0, ""},
	} {
		warnings, err := checkTools(fakeDirectory{}, c.tools)
		if c.bad != "" {
			de := kernel.AsError(err)
			if de == nil || de.Code != "unknown_tool" || !strings.Contains(de.Msg, `"`+c.bad+`"`) {
				t.Errorf("%v: want unknown_tool naming %s, got %v", c.tools, c.bad, err)
			}
			continue
		}
		if err != nil || len(warnings) != c.warnings {
			t.Errorf("%v: %v %v", c.tools, warnings, err)
		}
	}
	if w, err := checkTools(nil, []string{"anything"}); err != nil || w != nil {
		t.Fatal("no directory: every name passes")
	}
}
