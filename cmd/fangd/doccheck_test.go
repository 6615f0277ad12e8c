package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docSkipMarker, on the line before a ```toml fence, marks a snippet that
// is a fragment on purpose (a table shown alone, a sketch with
// placeholders); say why after it.
const docSkipMarker = "<!-- doccheck: partial"

type docSnippet struct {
	file string
	line int
	text string
}

// tomlSnippets extracts every ```toml block of the README and docs/*.md.
func tomlSnippets(t *testing.T) (out []docSnippet, skipped int) {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		var cur *docSnippet
		prev, n := "", 0
		for sc.Scan() {
			n++
			line := sc.Text()
			trimmed := strings.TrimSpace(line)
			switch {
			case cur == nil && trimmed == "```toml":
				if strings.HasPrefix(strings.TrimSpace(prev), docSkipMarker) {
					skipped++
					cur = &docSnippet{file: "skip"}
				} else {
					cur = &docSnippet{file: filepath.Base(f), line: n}
				}
			case cur != nil && trimmed == "```":
				if cur.file != "skip" {
					out = append(out, *cur)
				}
				cur = nil
			case cur != nil:
				cur.text += line + "\n"
			}
			prev = line
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out, skipped
}

// Every config snippet in the docs loads with fangd's real loader and
// passes the checks the daemon runs at start (validate, [[mcp_servers]]),
// so a doc example cannot rot unnoticed: `make test` runs this.
func TestDocConfigSnippetsLoad(t *testing.T) {
	// Snippets name these variables for secrets; they are checked as the
	// docs say to run them, with the variables set.
	t.Setenv("FANGD_WEBHOOK_TOKEN", "doccheck-token-0123456789abcdef-0123456789")
	t.Setenv("OLGA_API_KEY", "olga-key-0123456789abcdef")
	snips, skipped := tomlSnippets(t)
	if len(snips) < 10 {
		t.Fatalf("found only %d toml snippets: is the docs folder where the test looks?", len(snips))
	}
	for _, s := range snips {
		p := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(p, []byte(s.text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(p, true)
		if err == nil {
			err = cfg.validate()
		}
		if err == nil {
			_, err = cfg.mcpSpecs()
		}
		if err != nil {
			t.Errorf("%s:%d: the config snippet does not load: %v", s.file, s.line, err)
		}
	}
	t.Logf("%d snippets checked, %d marked partial", len(snips), skipped)
}
