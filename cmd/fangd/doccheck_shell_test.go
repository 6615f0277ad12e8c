package main

// TestDocShellExamplesRun runs every ```sh block of the README and docs/*.md
// against a fresh daemon, one daemon per doc file and that file's blocks in
// order in one bash, so the docs' examples cannot rot: `make test` runs it.
//
// What the blocks run with (the docs say so where it matters):
//   - a fresh home and the config a new user has after the README's "No paid
//     key?" step (the echo provider), plus every ```toml snippet of the same
//     doc marked `<!-- doccheck: config -->` (the allowlist step of a doc
//     that dials a loopback receiver, the [webhook_triggers] table, ...);
//   - no api_key, as after `make run`: loopback callers get in;
//   - `localhost:4545` and `127.0.0.1:4545` in curl arguments mapped to the
//     test daemon, `127.0.0.1:8099` to a loopback receiver the test serves
//     (the docs' webhook receiver); FANGD_URL and FANGD_API_KEY exported for
//     the `fangd` CLI examples, which run this build's binary;
//   - curl wrapped: an HTTP status >= 400 fails the block unless the doc
//     shows that status as the expected output (`# 409 {...}`, or a trailing
//     `# 204` on the command); an expected-output comment that is JSON has
//     its top-level keys checked against the real answer; a stream
//     (`curl -N`, `fangd ... tail` without --count) is followed for 3 s,
//     long enough for its headers under load;
//   - `npx -y @modelcontextprotocol/server-filesystem` (docs/mcp.md) run
//     from the test's pinned copy (npxShim), so nothing is fetched;
//   - a doc that points fangd at the receiver must show something reach it.
//
// A block that cannot run in a test (make targets, go test/bench commands,
// docker, systemd, real third-party platforms) carries
// `<!-- doccheck: skip REASON -->` on the line before its fence.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/mcp/mcptest"
)

const (
	docShellSkipMarker  = "<!-- doccheck: skip"
	docConfigMarker     = "<!-- doccheck: config"
	docWebhookToken     = "doccheck-token-0123456789abcdef-0123456789"
	docReceiverDocsAddr = "127.0.0.1:8099"
)

// docBaseConfig is what the README's "No paid key?" paragraph tells a new
// user to add to ~/.fangd/config.toml: the echo test provider.
const docBaseConfig = "[providers.echo]\napi = \"echo\"\n"

type docLine struct {
	n    int // line number in the doc
	text string
}

type shellBlock struct {
	line   int // the fence's line
	indent int // the fence's indentation (a block in a list item)
	lines  []docLine
	skip   string // the skip marker's reason, "" when it runs
}

type docFile struct {
	name   string
	blocks []shellBlock
	config []string // toml snippets marked doccheck: config
}

// docFiles reads the README and docs/*.md: their sh blocks and config snippets.
func docFiles(t *testing.T) []docFile {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	files = append([]string{"../../README.md"}, files...)
	var out []docFile
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		df := docFile{name: filepath.Base(f)}
		if strings.HasPrefix(f, "../../docs/") {
			df.name = "docs/" + df.name
		}
		var (
			sh   *shellBlock
			toml *strings.Builder
			prev string
		)
		for i, line := range strings.Split(string(b), "\n") {
			n := i + 1
			trimmed := strings.TrimSpace(line)
			marker := strings.TrimSpace(prev)
			switch {
			case sh == nil && toml == nil && (trimmed == "```sh" || trimmed == "```bash"):
				sh = &shellBlock{line: n, indent: len(line) - len(strings.TrimLeft(line, " "))}
				if strings.HasPrefix(marker, docShellSkipMarker) {
					sh.skip = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(marker, docShellSkipMarker), "-->"))
					if sh.skip == "" {
						t.Errorf("%s:%d: a doccheck skip marker without a reason", df.name, n-1)
					}
				}
			case sh == nil && toml == nil && trimmed == "```toml" && strings.HasPrefix(marker, docConfigMarker):
				toml = &strings.Builder{}
			case sh != nil && trimmed == "```":
				df.blocks = append(df.blocks, *sh)
				sh = nil
			case toml != nil && trimmed == "```":
				df.config = append(df.config, toml.String())
				toml = nil
			case sh != nil:
				// A block inside a list item is indented like its fence.
				indent := len(line) - len(strings.TrimLeft(line, " "))
				sh.lines = append(sh.lines, docLine{n, line[min(indent, sh.indent):]})
			case toml != nil:
				toml.WriteString(line + "\n")
			}
			prev = line
		}
		if len(df.blocks) > 0 {
			out = append(out, df)
		}
	}
	return out
}

// shellStatement is one command of a block, as bash will read it: its
// lines (continuations, multi-line quotes) and what the doc says it answers.
type shellStatement struct {
	first, last int // indexes into the block's lines
	// wantStatus is the HTTP status the doc shows (`# 201 {...}` after it,
	// or a trailing `# 204`), 0 when it shows none.
	wantStatus int
	// wantKeys are the top-level keys of the JSON the doc shows after it.
	wantKeys []string
	wantLine int // the doc line of that expected output
}

var (
	trailingStatus = regexp.MustCompile(`^#\s*([1-5][0-9][0-9])(\s|$)`)
	expectedJSON   = regexp.MustCompile(`^#\s*(?:([1-5][0-9][0-9])\s+)?([{\[].*)$`)
)

// lexLine scans one line of shell from a quoting state and says the state
// after it, where a comment starts (-1: none) and whether the statement
// goes on to the next line (open quote, trailing backslash, | && ||).
func lexLine(line string, inSingle, inDouble bool) (single, double bool, comment int, cont bool) {
	comment = -1
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inSingle:
			if c == '\'' {
				inSingle = false
			}
		case inDouble:
			if c == '\\' {
				i++
			} else if c == '"' {
				inDouble = false
			}
		case c == '\\':
			i++
		case c == '\'':
			inSingle = true
		case c == '"':
			inDouble = true
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			comment = i
			i = len(line)
		}
	}
	if inSingle || inDouble {
		return inSingle, inDouble, comment, true
	}
	code := line
	if comment >= 0 {
		code = line[:comment]
	}
	code = strings.TrimRight(code, " \t")
	cont = strings.HasSuffix(code, "\\") || strings.HasSuffix(code, "|") || strings.HasSuffix(code, "&&")
	return false, false, comment, cont
}

// statements splits a block into statements and attaches the expected
// output the doc shows after each.
func statements(b shellBlock) ([]shellStatement, error) {
	var out []shellStatement
	var single, double bool
	cur := -1
	for i := 0; i < len(b.lines); i++ {
		text := b.lines[i].text
		if cur < 0 {
			trimmed := strings.TrimSpace(text)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				// A comment right after a statement may be its output.
				if len(out) > 0 && out[len(out)-1].last == i-1 && strings.HasPrefix(trimmed, "#") {
					m := expectedJSON.FindStringSubmatch(trimmed)
					if m != nil {
						st := &out[len(out)-1]
						js := m[2]
						// It may go on over comment lines indented further.
						for depth(js) > 0 && i+1 < len(b.lines) {
							next := strings.TrimSpace(b.lines[i+1].text)
							if !strings.HasPrefix(next, "#") {
								break
							}
							i++
							js += strings.TrimPrefix(next, "#")
						}
						if m[1] != "" {
							fmt.Sscan(m[1], &st.wantStatus)
						}
						st.wantKeys = topLevelKeys(js)
						st.wantLine = b.lines[i].n
					}
				}
				continue
			}
			cur = i
		}
		var comment int
		var cont bool
		single, double, comment, cont = lexLine(text, single, double)
		if cont {
			continue
		}
		st := shellStatement{first: cur, last: i}
		if comment >= 0 {
			if m := trailingStatus.FindStringSubmatch(text[comment:]); m != nil {
				fmt.Sscan(m[1], &st.wantStatus)
			}
		}
		out = append(out, st)
		cur = -1
	}
	if cur >= 0 {
		return nil, fmt.Errorf("line %d: the statement does not end (an open quote or a trailing \\)", b.lines[cur].n)
	}
	return out, nil
}

// depth is how many { and [ the text leaves open, outside strings.
func depth(s string) int {
	d, inStr := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			d++
		case c == '}' || c == ']':
			d--
		}
	}
	return d
}

// topLevelKeys reads the keys of the outermost object of a JSON sketch as
// the docs write them ("...", elided values), tolerating what is not JSON.
func topLevelKeys(s string) []string {
	var keys []string
	d, start := 0, -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case start >= 0 && c == '\\':
			i++
		case start >= 0 && c == '"':
			str := s[start+1 : i]
			start = -1
			if d == 1 && strings.HasPrefix(strings.TrimLeft(s[i+1:], " "), ":") {
				keys = append(keys, str)
			}
		case start >= 0:
		case c == '"':
			start = i
		case c == '{' || c == '[':
			d++
		case c == '}' || c == ']':
			d--
			if d == 0 {
				return keys
			}
		}
	}
	return keys
}

// docShellPrelude is sourced before a doc's blocks: the curl and fangd
// wrappers described at the top of this file.
const docShellPrelude = `
set -euo pipefail
PS4='+ ${EPOCHREALTIME} '
__DC_AT=start
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "doccheck: FAILED at $__DC_AT (exit $rc)" >&2; fi' EXIT
__dc_at() { __DC_AT=$1; }
__dc_expect() { __DC_EXP=$1; __DC_EXP_STATUS=$2; __DC_EXP_KEYS=$3; __DC_EXP_AT=$4; }
__dc_after() {
  if [ ! -d "$__DC_DIR/exp.$1" ]; then
    echo "doccheck: $__DC_AT: the doc shows an answer here but the statement ran no curl" >&2
    return 1
  fi
  __DC_EXP= __DC_EXP_STATUS= __DC_EXP_KEYS=
}
__DC_EXP= __DC_EXP_STATUS= __DC_EXP_KEYS= __DC_EXP_AT=
curl() {
  local a args=() stream=0
  for a in "$@"; do
    a=${a//localhost:4545/$__DC_ADDR}
    a=${a//127.0.0.1:4545/$__DC_ADDR}
    a=${a//` + docReceiverDocsAddr + `/$__DC_RECV}
    if [[ $a == -[!-]* && $a != -[XHdo]* && $a == *N* ]] || [ "$a" = --no-buffer ]; then stream=1; fi
    args+=("$a")
  done
  local hdr body rc=0 max=20
  hdr=$(mktemp "$__DC_DIR/hdr.XXXXXX"); body=$(mktemp "$__DC_DIR/body.XXXXXX")
  [ $stream = 1 ] && max=3
  command curl -sS --max-time $max -D "$hdr" -o "$body" "${args[@]}" || rc=$?
  [ $stream = 1 ] && [ $rc = 28 ] && rc=0
  cat "$body" 2>/dev/null || true
  local status
  status=$(sed -n 's/^HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$hdr" | tail -n 1)
  if [ $rc -ne 0 ] || [ -z "$status" ]; then
    echo "doccheck: $__DC_AT: curl exit $rc, status '${status}': curl $*" >&2
    return 1
  fi
  local want=""
  if [ -n "$__DC_EXP" ] && mkdir "$__DC_DIR/exp.$__DC_EXP" 2>/dev/null; then
    want=$__DC_EXP_STATUS
    printf '%s\t%s\t%s\t%s\n' "$__DC_EXP_AT" "$status" "$body" "$__DC_EXP_KEYS" >> "$__DC_DIR/checks"
  fi
  if [ -n "$want" ] && [ "$want" != 0 ]; then
    if [ "$status" != "$want" ]; then
      echo "doccheck: $__DC_AT: the doc shows HTTP $want, the daemon answered $status: $(head -c 400 "$body")" >&2
      return 1
    fi
  elif [ "$status" -ge 400 ]; then
    echo "doccheck: $__DC_AT: HTTP $status (the doc does not show an error here): $(head -c 400 "$body")" >&2
    return 1
  fi
}
fangd() {
  local a tail=0 count=0 rc=0
  for a in "$@"; do
    [ "$a" = tail ] && tail=1
    [[ $a == --count* ]] && count=1
  done
  if [ $tail = 1 ] && [ $count = 0 ]; then
    timeout 3 fangd "$@" || rc=$?
    [ $rc = 124 ] && rc=0
    return $rc
  fi
  command fangd "$@"
}
`

// docReceiver is the loopback HTTP receiver the docs' webhook examples
// point at (127.0.0.1:8099 in the docs): it answers 200 to every request;
// got is closed at the first.
type docReceiver struct {
	once sync.Once
	got  chan struct{}
}

func newDocReceiver() *docReceiver { return &docReceiver{got: make(chan struct{})} }

func (r *docReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	io.Copy(io.Discard, req.Body)
	r.once.Do(func() { close(r.got) })
	w.WriteHeader(http.StatusOK)
}

func TestDocShellExamplesRun(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is needed to run the docs' shell examples")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the docs' shell examples")
	}
	docs := docFiles(t)
	ran, skipped := 0, 0
	var reasons []string
	for _, d := range docs {
		for _, b := range d.blocks {
			if b.skip != "" {
				skipped++
				reasons = append(reasons, fmt.Sprintf("%s:%d: %s", d.name, b.line, b.skip))
			} else {
				ran++
			}
		}
	}
	if ran < 20 {
		t.Fatalf("found only %d runnable shell blocks: is the docs folder where the test looks?", ran)
	}
	for _, d := range docs {
		t.Run(strings.ReplaceAll(d.name, "/", "_"), func(t *testing.T) {
			// Each doc has its own daemon, home and receiver.
			t.Parallel()
			runDocFile(t, d)
		})
	}
	sort.Strings(reasons)
	t.Logf("%d shell blocks ran, %d skipped:\n%s", ran, skipped, strings.Join(reasons, "\n"))
}

// docScript turns a doc's runnable blocks into one bash script: the
// prelude, then each statement preceded by where it is in the doc and, when
// the doc shows its answer, by what to check.
func docScript(d docFile) (script string, runs int, err error) {
	var b strings.Builder
	b.WriteString(docShellPrelude)
	exp := 0
	for _, blk := range d.blocks {
		if blk.skip != "" {
			continue
		}
		runs++
		sts, err := statements(blk)
		if err != nil {
			return "", 0, fmt.Errorf("%s:%d: %w", d.name, blk.line, err)
		}
		for _, st := range sts {
			fmt.Fprintf(&b, "__dc_at %s:%d\n", d.name, blk.lines[st.first].n)
			checked := st.wantStatus != 0 || len(st.wantKeys) > 0
			if checked {
				exp++
				fmt.Fprintf(&b, "__dc_expect %d %d '%s' %s:%d\n", exp, st.wantStatus,
					strings.ReplaceAll(strings.Join(st.wantKeys, " "), "'", ""), d.name, max(st.wantLine, blk.lines[st.last].n))
			}
			for _, l := range blk.lines[st.first : st.last+1] {
				b.WriteString(l.text + "\n")
			}
			if checked {
				fmt.Fprintf(&b, "__dc_after %d\n", exp)
			}
		}
	}
	return b.String(), runs, nil
}

// runDocScript runs a doc script with bash in a fresh working folder
// (also $HOME), against the daemon at daemonURL and the receiver at recv.
func runDocScript(t *testing.T, script, daemonURL, recv string) (out []byte, work string, err error) {
	t.Helper()
	work = t.TempDir()
	scriptPath := filepath.Join(work, "doc.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{scriptPath}
	if os.Getenv("FANGD_DOCCHECK_TRACE") != "" {
		// Every command with a timestamp, to see where the time goes.
		args = []string{"-x", scriptPath}
	}
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		"HOME="+work,
		"PATH="+filepath.Dir(fangdBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FANGD_URL="+daemonURL,
		"FANGD_API_KEY=",
		"FANGD_WEBHOOK_TOKEN="+docWebhookToken,
		"__DC_ADDR="+strings.TrimPrefix(daemonURL, "http://"),
		"__DC_RECV="+recv,
		"__DC_DIR="+work,
	)
	out, err = cmd.CombinedOutput()
	return out, work, err
}

func runDocFile(t *testing.T, d docFile) {
	script, runs, err := docScript(d)
	if err != nil {
		t.Fatal(err)
	}
	if runs == 0 {
		t.Skip("every shell block of this doc is marked skip")
	}
	config := docBaseConfig
	for _, c := range d.config {
		config += "\n" + c
	}
	recv := newDocReceiver()
	rs := httptest.NewServer(recv)
	defer rs.Close()
	env := []string{"FANGD_WEBHOOK_TOKEN=" + docWebhookToken}
	if strings.Contains(script, "npx ") {
		env = append(env, "PATH="+npxShim(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	p := startFangd(t, t.TempDir(), config, env...)

	out, work, err := runDocScript(t, script, p.url, strings.TrimPrefix(rs.URL, "http://"))
	if err != nil {
		p.log.mu.Lock()
		daemonLog := p.stderr.String()
		p.log.mu.Unlock()
		t.Errorf("%s: the shell examples failed: %v\n%s\ndaemon log tail:\n%s", d.name, err, lastBytes(string(out), 4000), lastBytes(daemonLog, 1500))
	} else {
		keep := 6000
		if os.Getenv("FANGD_DOCCHECK_TRACE") != "" {
			keep = len(out)
		}
		t.Logf("%s: output:\n%s", d.name, lastBytes(string(out), keep))
	}
	n, problems := checkDocAnswers(t, filepath.Join(work, "checks"))
	for _, p := range problems {
		t.Error(p)
	}
	// A doc that points fangd at the loopback receiver shows something
	// reaching it (a webhook delivery, a channel's ping), perhaps just
	// after its last command.
	if err == nil && strings.Contains(strings.TrimPrefix(script, docShellPrelude), docReceiverDocsAddr) {
		select {
		case <-recv.got:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the examples point fangd at %s, and nothing reached the receiver there", d.name, docReceiverDocsAddr)
		}
	}
	t.Logf("%s: %d blocks ran, %d answers the doc shows were checked", d.name, runs, n)
}

// npxShim writes an `npx` for the daemon that a doc tells to run an MCP
// server with `npx -y <package>`: it runs the test's pinned copy of that
// reference server (mcptest, installed once from testdata/npm), so that the
// example runs as written and the test fetches nothing at run time.
func npxShim(t *testing.T) string {
	t.Helper()
	peers := mcptest.NPM(t)
	node, fsArgs := peers.Filesystem()
	dir := t.TempDir()
	shim := fmt.Sprintf(`#!/bin/sh
[ "$1" = -y ] && shift
case "$1" in
@modelcontextprotocol/server-filesystem) shift; exec %q %q "$@";;
esac
echo "doccheck npx: $1 is not one of the test's MCP peers (mcptest)" >&2
exit 1
`, node, fsArgs[0])
	if err := os.WriteFile(filepath.Join(dir, "npx"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkDocAnswers compares the top-level keys the docs show with the real
// answers the curl wrapper recorded, and says what differs.
func checkDocAnswers(t *testing.T, path string) (checked int, problems []string) {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		checked++
		parts := strings.SplitN(sc.Text(), "\t", 4)
		if len(parts) < 4 || strings.TrimSpace(parts[3]) == "" {
			continue
		}
		at, bodyPath, keys := parts[0], parts[2], strings.Fields(parts[3])
		body, err := os.ReadFile(bodyPath)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(body, &got); err != nil {
			problems = append(problems, fmt.Sprintf("%s: the doc shows a JSON object, the daemon answered %q", at, lastBytes(string(body), 300)))
			continue
		}
		for _, k := range keys {
			if _, ok := got[k]; !ok {
				problems = append(problems, fmt.Sprintf("%s: the doc shows key %q, the answer has none: %s", at, k, lastBytes(string(body), 400)))
			}
		}
	}
	return checked, problems
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// The harness itself: statements are split as bash reads them, a doc's
// shown answers are parsed, and the curl wrapper fails a block on an
// error status the doc does not show, on a status other than the one it
// shows, and reports keys the answer lacks.
func TestDocShellHarness(t *testing.T) {
	lines := func(text ...string) shellBlock {
		b := shellBlock{line: 1}
		for i, l := range text {
			b.lines = append(b.lines, docLine{i + 2, l})
		}
		return b
	}
	sts, err := statements(lines(
		`curl -s localhost:4545/a -d '{`,
		`  "x": 1}'`,
		`# 201 {"id":"7c0e…","nested":{"no":1},`,
		`#      "status":"pending",…}`,
		`curl -s -X DELETE localhost:4545/a/b \`,
		`  -H 'X: y'    # 204`,
		`echo "a # not a comment" | cat`,
	))
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 3 || sts[0].last != 1 || sts[0].wantStatus != 201 ||
		strings.Join(sts[0].wantKeys, ",") != "id,nested,status" || sts[0].wantLine != 5 ||
		sts[1].first != 4 || sts[1].last != 5 || sts[1].wantStatus != 204 || sts[2].wantStatus != 0 {
		t.Fatalf("statements = %+v", sts)
	}
	if _, err := statements(lines(`curl -d '{"open":`)); err == nil {
		t.Fatal("an unterminated quote was accepted")
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"a":1}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"nope"}`))
		}
	}))
	defer srv.Close()
	run := func(block ...string) (string, []string, error) {
		script, _, err := docScript(docFile{name: "x.md", blocks: []shellBlock{lines(block...)}})
		if err != nil {
			t.Fatal(err)
		}
		out, work, err := runDocScript(t, script, srv.URL, "127.0.0.1:1")
		_, problems := checkDocAnswers(t, filepath.Join(work, "checks"))
		return string(out), problems, err
	}
	if out, problems, err := run(`curl -s localhost:4545/ok`, `# {"a":1}`, `X=$(curl -s localhost:4545/gone)`, `# 404 {"error":"..."}`); err != nil || len(problems) > 0 {
		t.Fatalf("a block whose answers match failed: %v %v\n%s", err, problems, out)
	}
	if out, _, err := run(`curl -s localhost:4545/gone`, `echo after`); err == nil || strings.Contains(out, "after") ||
		!strings.Contains(out, "x.md:2") {
		t.Fatalf("a 404 the doc does not show passed: %v\n%s", err, out)
	}
	if out, _, err := run(`curl -s localhost:4545/ok   # 201`); err == nil {
		t.Fatalf("a 200 where the doc shows 201 passed\n%s", out)
	}
	if _, problems, _ := run(`curl -s localhost:4545/ok`, `# {"a":1,"b":2}`); len(problems) != 1 || !strings.Contains(problems[0], `"b"`) {
		t.Fatalf("a key the answer lacks was not reported: %v", problems)
	}
	if out, _, err := run(`echo hi`, `# {"a":1}`); err == nil {
		t.Fatalf("an answer shown after a statement that ran no curl passed\n%s", out)
	}
}
