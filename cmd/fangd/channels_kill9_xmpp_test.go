package main

// The XMPP peer of the kill -9 test: a real prosody on loopback (installed
// by `make test-deps`, as for actors/channel/xmpp) with two accounts, the
// bot and alice, who uses go-xmpp as her client.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	goxmpp "github.com/xmppo/go-xmpp"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

type killXMPP struct {
	t    *testing.T
	conf string
	port int

	killProc // under mu: alice, got
	alice    *goxmpp.Client
	got      []string // what bot@localhost said to alice, over all her sessions
}

func startKillXMPP(t *testing.T) *killXMPP {
	t.Helper()
	if _, err := exec.LookPath("prosody"); err != nil {
		t.Fatal("prosody is not installed: run `make test-deps` (apt-get install prosody)")
	}
	dir := t.TempDir()
	p := &killXMPP{t: t, conf: filepath.Join(dir, "prosody.cfg.lua"), port: channeltest.FreePort(t)}
	conf := fmt.Sprintf(`run_as_root = true
daemonize = false
pidfile = %q
data_path = %q
certificates = %q
log = { { levels = { min = "error" }, to = "console" } }
interfaces = { "127.0.0.1" }
c2s_ports = { %d }
s2s_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
modules_enabled = { "roster", "saslauth", "disco", "ping", "posix", "offline" }
modules_disabled = { "s2s" }
VirtualHost "localhost"
`, filepath.Join(dir, "prosody.pid"), filepath.Join(dir, "data"), dir, p.port)
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"bot": "botpw", "alice": "alicepw"} {
		if out, err := exec.Command("prosodyctl", "--config", p.conf, "register", user, "localhost", pw).CombinedOutput(); err != nil {
			t.Fatalf("prosodyctl register %s: %v\n%s", user, err, out)
		}
	}
	p.up()
	t.Cleanup(p.down)
	return p
}

// up starts prosody and logs alice in.
func (p *killXMPP) up() {
	t := p.t
	p.start(t, "prosody", "--config", p.conf)
	channeltest.WaitListening(t, "prosody", p.port)
	c, err := goxmpp.Options{Host: "127.0.0.1:" + strconv.Itoa(p.port), User: "alice@localhost", Password: "alicepw",
		NoTLS: true, InsecureAllowUnencryptedAuth: true, Mechanism: "PLAIN", Session: true, Resource: "phone"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			st, err := c.Recv()
			if err != nil {
				return
			}
			if m, ok := st.(goxmpp.Chat); ok && m.Text != "" && strings.HasPrefix(m.Remote, "bot@localhost") {
				p.mu.Lock()
				p.got = append(p.got, m.Text)
				p.mu.Unlock()
			}
		}
	}()
	p.mu.Lock()
	p.alice = c
	p.mu.Unlock()
}

// down stops prosody, every session with it (setDown(false) starts it
// again with alice online before anything is sent to her).
func (p *killXMPP) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kill()
}

func (p *killXMPP) say(t *testing.T, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, _, err := p.alice.Send(goxmpp.Chat{Remote: "bot@localhost", Type: "chat", Text: text}); err != nil {
		t.Fatal(err)
	}
}

func (p *killXMPP) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}
