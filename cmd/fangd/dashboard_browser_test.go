package main

// The WebChat dashboard in a real browser: Debian's chromium, headless,
// driven over the DevTools protocol (chromedp) against the real fangd
// binary on loopback with the echo test provider. Screenshots of every
// panel go to $FANGD_ARTIFACTS/dashboard (default: a fresh temp folder,
// named in the log).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/auth/authtest"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// chromiumPath finds the browser. Without one the test skips, unless
// FANGD_REQUIRE_BROWSER is set (make test sets it and installs chromium),
// where a missing browser is a failure, not a silent skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FANGD_REQUIRE_BROWSER") != "" {
		t.Fatal("FANGD_REQUIRE_BROWSER is set but no chromium is installed (make test-deps installs Debian's chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); make test requires it")
	return ""
}

// artifactsDir is where the screenshots go.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FANGD_ARTIFACTS")
	if dir == "" {
		d, err := os.MkdirTemp("", "fangd-artifacts-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshots: %s", dir)
	return dir
}

// browser starts headless chromium with a fresh profile and the flags
// that keep it off the network (no QUIC, no background fetches, no
// component updates, no sync).
func browser(t *testing.T) (context.Context, *browserLog) {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// A ceiling, not a wait: a walk takes about 20 s on an idle machine;
	// the margin is for make test's other packages running beside it.
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	// The first action starts the browser; the console is read from then
	// on (messages before the first Run are not kept).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	bl := &browserLog{}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A refused request (the wrong key's 401) is logged as an
			// error by the browser and expected; a CSP refusal, an
			// exception or a console.error is not.
			if m.IsException() || m.Type == chromedp.ConsoleError && !strings.Contains(m.Text, "Failed to load resource") {
				bl.add(m.String())
			}
		}
	}()
	return ctx, bl
}

type browserLog struct {
	mu     sync.Mutex
	errors []string
}

func (b *browserLog) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

func (b *browserLog) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// TestDashboardInBrowser walks the dashboard as an operator would: signs in
// with the key, creates an agent and chats with it (the reply streamed),
// approves two pending requests (one needing a TOTP code), watches an
// event arrive live, follows the log and verifies the audit chain — with
// no CSP violation or script error on the way.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx, blog := browser(t)
	shots := artifactsDir(t)
	// An MCP server and a Telegram channel, both local fakes, so the
	// MCP and Channels panels show live ones.
	notes := newNotesPeer(t)
	bot := telegramtest.New("333:web")
	defer bot.Close()
	p := startFangd(t, t.TempDir(), `api_key = "`+e2eKey+`"

[providers.echo]
api = "echo"

[approval]
second_factor = "totp"
totp_tools = ["shell_*"]
timeout_secs = 600

[[mcp_servers]]
name = "notes"
transport = "http"
url = "`+notes.url+`"

[channels.filebot]
adapter = "telegram"
bot_token_env = "FILEBOT_TOKEN"
api_url = "`+bot.URL()+`"
poll_interval_secs = 1
`+loopbackPolicy, "FILEBOT_TOKEN=333:web")
	waitChannels(t, p, "filebot connected", connected("filebot"))
	kerneltest.WaitFor(t, "the notes MCP server connected", func() bool {
		_, b := p.request(t, "GET", "/api/mcp/servers/notes", "")
		return strings.Contains(string(b), `"status":"connected"`)
	})
	n := 0
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(c context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(c, tg)
			if err != nil {
				return err
			}
			n++
			return os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s.png", n, name)), buf, 0o644)
		})
	}
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			var page string
			_ = chromedp.Do(ctx, keep(chromedp.Text(chromedp.CSS("main")), &page), shot("failed-"+strings.ReplaceAll(step, " ", "-")))
			t.Fatalf("%s: %v\nbrowser errors: %v\npage text: %.2000s\ndaemon log tail: %.2000s", step, err, blog.all(), page, lastBytes(p.stderr.String(), 2000))
		}
	}
	// waitJS polls a JavaScript condition (chromedp's own Poll, which
	// checks on every animation frame until ctx's deadline).
	waitJS := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second))
	}
	nav := func(panel string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Click(chromedp.CSS(`#nav a[href="#`+panel+`"]`)),
			waitJS(`document.body.dataset.panel === "`+panel+`"`),
		)
	}

	// Sign-in: a wrong key is refused and said so; the right one lets in.
	run("sign-in page",
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SendKeys(chromedp.CSS("#signin-key"), "not-the-key"),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)),
		waitJS(`document.querySelector("#signin-error").textContent.includes("refused")`),
		shot("signin"),
		chromedp.SetValue(chromedp.CSS("#signin-key"), e2eKey),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#nav")),
		waitJS(`document.querySelectorAll("#overview-health .kv").length > 5 && document.querySelectorAll("#overview-security tbody tr").length > 5`),
		shot("status"),
	)
	var who string
	run("identity", keep(chromedp.Text(chromedp.CSS("#who")), &who))
	if who != "API key" {
		t.Fatalf("signed in as %q", who)
	}

	// Chat: create an agent on the echo provider and see the streamed reply.
	const msg = "hello from chromium"
	var reply, status string
	var chunks chromedp.AttributeResult
	run("chat",
		nav("chat"),
		chromedp.SendKeys(chromedp.CSS("#chat-create-name"), "webchat"),
		chromedp.SendKeys(chromedp.CSS("#chat-create-model"), "echo/echo"),
		chromedp.Click(chromedp.CSS(`#chat-create button[type=submit]`)),
		waitJS(`(document.querySelector("#chat-agent").selectedOptions[0] || {}).textContent === "webchat — echo/echo"`),
		chromedp.SendKeys(chromedp.CSS("#chat-input"), msg),
		chromedp.Click(chromedp.CSS("#chat-send")),
		waitJS(`!!document.querySelector('.msg.agent[data-state="done"]')`),
		keep(chromedp.Text(chromedp.CSS(".msg.agent .text")), &reply),
		keep(chromedp.AttributeValue(chromedp.CSS(".msg.agent"), "data-chunks"), &chunks),
		keep(chromedp.Text(chromedp.CSS("#chat-status")), &status),
		shot("chat"),
	)
	if reply != msg || chunks.Value == "0" || chunks.Value == "" || !strings.HasPrefix(status, "done") {
		t.Fatalf("chat: reply %q in %s chunks, status %q", reply, chunks.Value, status)
	}

	// Approvals: one plain, one that needs a TOTP code.
	var enr struct{ Secret string }
	mustJSON(t, p, 200, "POST", "/api/approvals/totp/setup", `{}`, &enr)
	mustJSON(t, p, 200, "POST", "/api/approvals/totp/confirm", `{"code":"`+approvaltest.TOTP(t, enr.Secret, time.Now())+`"}`, nil)
	var plain, gated struct {
		ID                   string
		SecondFactorRequired bool `json:"second_factor_required"`
	}
	mustJSON(t, p, 201, "POST", "/api/approvals", `{"agent_id":"webchat","action":"delete_file","description":"Agent wants to delete /tmp/report.txt","payload":{"path":"/tmp/report.txt"},"risk_level":"high"}`, &plain)
	mustJSON(t, p, 201, "POST", "/api/approvals", `{"agent_id":"webchat","action":"shell_exec","description":"Agent wants to run uptime","payload":{"cmd":"uptime"}}`, &gated)
	if plain.SecondFactorRequired || !gated.SecondFactorRequired {
		t.Fatalf("second_factor_required: plain %v, gated %v", plain.SecondFactorRequired, gated.SecondFactorRequired)
	}
	card := func(id string) string { return `.approval[data-id="` + id + `"]` }
	run("approvals",
		nav("approvals"),
		chromedp.WaitVisible(chromedp.CSS(card(plain.ID))),
		chromedp.WaitVisible(chromedp.CSS(card(gated.ID)+" input.totp")),
		waitJS(`!document.querySelector('`+card(plain.ID)+` input.totp')`),
		shot("approvals"),
		chromedp.Click(chromedp.CSS(card(plain.ID)+" button.approve")),
		waitJS(`!document.querySelector('`+card(plain.ID)+`')`),
		// Without the code the server says totp_required and the card stays.
		chromedp.Click(chromedp.CSS(card(gated.ID)+" button.approve")),
		waitJS(`document.querySelector('`+card(gated.ID)+` .error').textContent.includes("totp_required")`),
		chromedp.SendKeys(chromedp.CSS(card(gated.ID)+" input.totp"), approvaltest.TOTP(t, enr.Secret, time.Now().Add(30*time.Second))),
		chromedp.Click(chromedp.CSS(card(gated.ID)+" button.approve")),
		waitJS(`!document.querySelector('`+card(gated.ID)+`')`),
		shot("approvals-decided"),
	)
	for _, c := range []struct{ id, factor string }{{plain.ID, "none"}, {gated.ID, "totp"}} {
		var a struct {
			Status       string
			DecidedBy    string `json:"decided_by"`
			SecondFactor string `json:"second_factor"`
		}
		mustJSON(t, p, 200, "GET", "/api/approvals/"+c.id, "", &a)
		if a.Status != "approved" || a.SecondFactor != c.factor || a.DecidedBy != "api_key" {
			t.Fatalf("approval %s after the click: %+v", c.id, a)
		}
	}

	// Live events: the stream is open, then an event happens.
	run("events open", nav("events"), waitJS(`document.querySelector("#events-state").dataset.state === "live"`))
	var sent struct {
		ID string
	}
	mustJSON(t, p, 201, "POST", "/api/approvals", `{"agent_id":"webchat","action":"delete_file","description":"a live one"}`, &sent)
	var evs struct {
		Items []struct {
			ID     int64
			Type   string
			Detail map[string]any
		}
	}
	mustJSON(t, p, 200, "GET", "/api/comms/events?limit=20&type=approval.requested", "", &evs)
	var evID int64
	for _, e := range evs.Items {
		if fmt.Sprint(e.Detail["id"], e.Detail["approval_id"]) != "" && strings.Contains(fmt.Sprint(e.Detail), sent.ID) {
			evID = e.ID
			break
		}
	}
	if evID == 0 {
		t.Fatalf("no approval.requested event names %s: %+v", sent.ID, evs.Items)
	}
	run("event arrives",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#events-table tr[data-id="%d"][data-type="approval.requested"]`, evID))),
		shot("events"),
	)

	// Logs, channels, MCP, topology: each renders from its API.
	run("logs", nav("logs"), waitJS(`document.querySelector("#logs-state").dataset.state === "live" && document.querySelectorAll("#logs-table tbody tr").length > 0`), shot("logs"))
	// A row's cells as text, for the panels' tables.
	rowHas := func(table, first, text string) string {
		return `[...document.querySelectorAll("` + table + ` tbody tr")].some(r => r.cells[0].textContent.startsWith("` + first + `") && r.textContent.includes("` + text + `"))`
	}
	run("channels", nav("channels"), waitJS(rowHas("#channels-table", "filebot", "connected")), shot("channels"))
	run("channels all", chromedp.Click(chromedp.CSS("#channels-all")), waitJS(`document.querySelectorAll("#channels-table tbody tr").length > 40`), shot("channels-all"))
	run("mcp",
		nav("mcp"),
		waitJS(rowHas("#mcp-table", "notes", "connected")+` && document.querySelector("#mcp-overall").textContent.includes("1 servers")`),
		shot("mcp"),
		chromedp.Click(chromedp.CSS("#mcp-table tbody tr button")),
		waitJS(`document.querySelector("#toast").textContent === "notes: connected, 2 tools"`),
	)
	// A routed message makes the topology's one edge: system → the agent.
	mustJSON(t, p, 200, "POST", "/api/comms/send", `{"to":"agent:webchat","content":"status?","from":"system"}`, nil)
	run("topology",
		nav("topology"),
		waitJS(`(l => l.includes("webchat") && l.includes("filebot") && l.includes("system"))([...document.querySelectorAll("#topology-svg .node-label")].map(n => n.textContent))`),
		waitJS(rowHas("#topology-edges", "system", "agent_message")+` && document.querySelectorAll("#topology-svg line.edge").length === 1`),
		shot("topology"),
	)

	// Audit: the chain verifies as valid.
	var chain string
	run("audit",
		nav("audit"),
		waitJS(`document.querySelector("#audit-result").dataset.state === "valid" && document.querySelectorAll("#audit-recent tbody tr").length > 0`),
		chromedp.Click(chromedp.CSS("#audit-verify")),
		waitJS(`document.querySelector("#audit-result").dataset.state === "valid"`),
		keep(chromedp.Text(chromedp.CSS("#audit-result .kv:first-child .v")), &chain),
		shot("audit"),
	)
	if chain != "valid" {
		t.Fatalf("audit shows %q", chain)
	}

	// Signing out forgets the key: a reload lands on the sign-in form.
	run("sign out",
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS("#signin-form")),
	)
	if errs := blog.all(); len(errs) > 0 {
		t.Fatalf("the browser reported errors (CSP violations, script errors): %v", errs)
	}
}

// TestDashboardOIDCSignIn signs in through a local OIDC provider (it signs
// the user in at once): the dashboard offers the provider's button, the
// session cookie lets it in with the user's role, and a write from the
// dashboard (an approval) passes the session's CSRF check.
func TestDashboardOIDCSignIn(t *testing.T) {
	t.Parallel()
	ctx, blog := browser(t)
	shots := artifactsDir(t)
	idp := authtest.New("fangd", "s3cret-0123456789")
	defer idp.Close()
	idp.SetUser(authtest.User{Subject: "u-9", Email: "olga@example.com", EmailVerified: true, Name: "Olga", Groups: []string{"ops"}})
	p := startFangd(t, t.TempDir(), fmt.Sprintf(`api_key = %q

[providers.echo]
api = "echo"

[external_auth]
enabled = true
issuer_url = %q
client_id = "fangd"
client_secret_env = "FANGD_TEST_OIDC_SECRET"
allowed_domains = ["example.com"]
role_map = { ops = "operator" }
`, e2eKey, idp.URL)+loopbackPolicy, "FANGD_TEST_OIDC_SECRET=s3cret-0123456789")
	mustJSON(t, p, 201, "POST", "/api/agents", `{"name":"ops-agent","model":"echo/echo"}`, nil)
	var pending struct{ ID string }
	mustJSON(t, p, 201, "POST", "/api/approvals", `{"agent_id":"ops-agent","action":"delete_file","description":"clean up"}`, &pending)

	var who string
	var shot []byte
	err := chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-providers a")),
		// The provider redirects straight back; the callback sets the
		// session cookie and returns to /.
		chromedp.Click(chromedp.CSS("#signin-providers a")),
		chromedp.WaitVisible(chromedp.CSS("#nav")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#who").textContent !== ""`, chromedp.WithPollingTimeout(20*time.Second)),
		keep(chromedp.Text(chromedp.CSS("#who")), &who),
		chromedp.Click(chromedp.CSS(`#nav a[href="#approvals"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.approval[data-id="`+pending.ID+`"] button.approve`)),
		chromedp.Click(chromedp.CSS(`.approval[data-id="`+pending.ID+`"] button.approve`)),
		chromedp.Poll[chromedp.Void](`!document.querySelector('.approval[data-id="`+pending.ID+`"]')`, chromedp.WithPollingTimeout(20*time.Second)),
		keep(chromedp.FullScreenshot(100), &shot),
	)
	if err != nil {
		t.Fatalf("%v\nbrowser errors: %v\ndaemon log tail: %s", err, blog.all(), lastBytes(p.stderr.String(), 2000))
	}
	os.WriteFile(filepath.Join(shots, "oidc-approvals.png"), shot, 0o644)
	if who != "olga@example.com (operator)" {
		t.Fatalf("signed in as %q", who)
	}
	var a struct {
		Status    string
		DecidedBy string `json:"decided_by"`
	}
	mustJSON(t, p, 200, "GET", "/api/approvals/"+pending.ID, "", &a)
	if a.Status != "approved" || !strings.HasPrefix(a.DecidedBy, "oidc:") {
		t.Fatalf("approval after the session's click: %+v", a)
	}
	if errs := blog.all(); len(errs) > 0 {
		t.Fatalf("the browser reported errors: %v", errs)
	}
}

func mustJSON(t *testing.T, p *proc, want int, method, path, body string, out any) {
	t.Helper()
	st, b := p.request(t, method, path, body)
	if st != want {
		t.Fatalf("%s %s: %d %s", method, path, st, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// keep runs a and keeps its value in dst.
func keep[T any](a chromedp.Action[T], dst *T) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		v, err := a(ctx, t)
		*dst = v
		return err
	})
}
