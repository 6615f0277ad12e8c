package approval

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The default policy gates every tool not known to be read-only; the
// overrides work both ways, per tool glob and per server.
func TestDefaultGateAndOverrides(t *testing.T) {
	ro := func(server string) ToolHints { return ToolHints{Server: server, ReadOnly: true} }
	rw := func(server string) ToolHints { return ToolHints{Server: server} }
	for _, c := range []struct {
		name   string
		mod    func(*Policy)
		tool   string
		hints  ToolHints
		gated  bool
		reason string
	}{
		{"unannotated MCP tool", nil, "mcp_fs_write_file", rw("fs"), true, ReasonNotReadOnly},
		{"read-only MCP tool", nil, "mcp_fs_read_file", ro("fs"), false, ReasonReadOnly},
		{"a2a_send", nil, "a2a_send", rw(""), true, ReasonNotReadOnly},
		{"fangd's read-only built-in", nil, "file_list", ro(""), false, ReasonReadOnly},
		{"unknown tool", nil, "shell_exec", ToolHints{}, true, ReasonNotReadOnly},
		{"require_approval beats the hint", func(p *Policy) { p.RequireApproval = []string{"mcp_fs_read_*"} },
			"mcp_fs_read_file", ro("fs"), true, ReasonRequireApproval},
		{"require_approval beats auto_approve", func(p *Policy) {
			p.RequireApproval = []string{"mcp_fs_*"}
			p.AutoApprove = AutoApprove{Globs: []string{"mcp_fs_write_file"}}
		}, "mcp_fs_write_file", rw("fs"), true, ReasonRequireApproval},
		{"auto_approve glob", func(p *Policy) { p.AutoApprove = AutoApprove{Globs: []string{"mcp_everything_echo"}} },
			"mcp_everything_echo", rw("everything"), false, ReasonAutoApprove},
		{"auto_approve = true", func(p *Policy) { p.AutoApprove = AutoApprove{All: true} },
			"mcp_fs_write_file", rw("fs"), false, ReasonAutoApprove},
		{"server not trusted", func(p *Policy) { p.TrustReadOnlyHints = []string{"time"} },
			"mcp_fs_read_file", ro("fs"), true, ReasonHintNotTrusted},
		{"server trusted by name", func(p *Policy) { p.TrustReadOnlyHints = []string{"fs"} },
			"mcp_fs_read_file", ro("fs"), false, ReasonReadOnly},
		{"no server trusted: fangd's own still are", func(p *Policy) { p.TrustReadOnlyHints = []string{} },
			"comms_events", ro(""), false, ReasonReadOnly},
	} {
		p := policy(c.mod)
		if err := p.Validate(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		gated, reason := p.Gate(c.tool, c.hints)
		if gated != c.gated || reason != c.reason || p.Gated(c.tool, c.hints) != c.gated {
			t.Errorf("%s: gated=%t (%s), want %t (%s)", c.name, gated, reason, c.gated, c.reason)
		}
	}
}

// auto_approve takes LibreFang's boolean and fangd's list; anything else
// is refused naming the key. LibreFang's require_approval names stay
// valid.
func TestAutoApproveFromTOML(t *testing.T) {
	decode := func(src string) (Policy, error) {
		var cfg struct {
			Approval Policy `toml:"approval"`
		}
		cfg.Approval = DefaultPolicy()
		md, err := toml.Decode(src, &cfg)
		if err == nil && len(md.Undecoded()) > 0 {
			t.Fatalf("undecoded %v", md.Undecoded())
		}
		if err == nil {
			err = cfg.Approval.Validate()
		}
		return cfg.Approval, err
	}
	p, err := decode("[approval]\nauto_approve = true\nrequire_approval = [\"shell_exec\", \"file_write\", \"skill_evolve_*\"]\n")
	if err != nil || !p.AutoApprove.All || p.Gated("mcp_fs_write", ToolHints{}) || !p.Gated("shell_exec", ToolHints{}) {
		t.Fatalf("bool: %v %+v", err, p.AutoApprove)
	}
	p, err = decode("[approval]\nauto_approve = [\"mcp_everything_echo\", \"mcp_fs_read_*\"]\ntrust_read_only_hints = []\n")
	if err != nil || p.AutoApprove.All || len(p.AutoApprove.Globs) != 2 || p.Gated("mcp_fs_read_x", ToolHints{}) ||
		!p.Gated("mcp_fs_list", ToolHints{Server: "fs", ReadOnly: true}) {
		t.Fatalf("list: %v %+v", err, p)
	}
	if raw, _ := json.Marshal(p.AutoApprove); string(raw) != `["mcp_everything_echo","mcp_fs_read_*"]` {
		t.Fatalf("json %s", raw)
	}
	for src, want := range map[string]string{
		"[approval]\nauto_approve = 3\n":                "approval.auto_approve",
		"[approval]\nauto_approve = [1]\n":              "approval.auto_approve[0]",
		"[approval]\nauto_approve = [\"a b\"]\n":        "approval.auto_approve[0]",
		"[approval]\ntrust_read_only_hints = [\"[\"]\n": "approval.trust_read_only_hints[0]",
	} {
		if _, err := decode(src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want an error naming %s, got %v", src, want, err)
		}
	}
}

type fakeCatalog map[string]ToolHints

func (f fakeCatalog) ToolHints(name string) (ToolHints, bool) { h, ok := f[name]; return h, ok }
func (f fakeCatalog) ToolNames() []string {
	var out []string
	for n := range f {
		out = append(out, n)
	}
	return out
}
func (f fakeCatalog) ServerNames() []string { return []string{"fs"} }

// The report shows each offered tool's gate and the patterns that match
// nothing; CheckPatterns returns (and logs) the same.
func TestReportListsUnmatchedPatterns(t *testing.T) {
	h := newHarness(t, policy(func(p *Policy) {
		p.RequireApproval = []string{"shell_exec", "mcp_fs_*"}
		p.AutoApprove = AutoApprove{Globs: []string{"mcp_fs_read_file", "mcp_github_*"}}
		p.TrustReadOnlyHints = []string{"*", "fss"}
		p.RiskLevels = map[string]string{"mcp_fs_read_*": RiskLow, "file_*": RiskLow}
	}), nil)
	// Before the catalog is wired every tool is unknown, so it waits.
	if !h.a.Gated("mcp_fs_list") {
		t.Fatal("an unknown tool ran without approval")
	}
	h.a.SetTools(fakeCatalog{"mcp_fs_read_file": {Server: "fs", ReadOnly: true}, "mcp_fs_list": {Server: "fs", ReadOnly: true}})
	r := h.a.Report()
	got := map[string]bool{}
	for _, u := range r.UnmatchedPatterns {
		got[u.Key+"="+u.Pattern] = true
	}
	want := []string{"approval.require_approval=shell_exec", "approval.auto_approve=mcp_github_*",
		"approval.risk_levels=file_*", "approval.trust_read_only_hints=fss"}
	if len(got) != len(want) {
		t.Fatalf("unmatched %+v", r.UnmatchedPatterns)
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("%s not reported: %+v", w, r.UnmatchedPatterns)
		}
	}
	if len(r.Tools) != 2 {
		t.Fatalf("tools %+v", r.Tools)
	}
	for _, tg := range r.Tools {
		if !tg.Gated || tg.Reason != ReasonRequireApproval || tg.Server != "fs" {
			t.Fatalf("tool %+v", tg)
		}
	}
	if n := len(h.a.CheckPatterns()); n != 4 {
		t.Fatalf("CheckPatterns: %d", n)
	}
}
