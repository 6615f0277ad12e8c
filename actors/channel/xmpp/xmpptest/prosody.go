// Package xmpptest runs a real XMPP server, prosody, on loopback for the
// xmpp adapter's tests and the daemon's end-to-end ones: one virtual host
// "localhost" with the accounts bot@localhost (password "botpw") and
// alice@localhost ("alicepw"), plain auth without TLS.
package xmpptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Prosody is one prosody server; Start and Stop it at will (an outage).
type Prosody struct {
	channeltest.Daemon
}

// NewProsody writes a prosody configuration (extra is appended to it, as
// a MUC component) and registers bot and alice; it fails t when prosody is
// not installed. Call Start to run it; it is stopped when t ends.
func NewProsody(t testing.TB, extra string) *Prosody {
	t.Helper()
	if _, err := exec.LookPath("prosody"); err != nil {
		t.Fatal("prosody is not installed: run `make test-deps` (apt-get install prosody)")
	}
	dir := t.TempDir()
	port := channeltest.FreePort(t)
	conf := filepath.Join(dir, "prosody.cfg.lua")
	text := fmt.Sprintf(`run_as_root = true
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
%s`, filepath.Join(dir, "prosody.pid"), filepath.Join(dir, "data"), dir, port, extra)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"bot": "botpw", "alice": "alicepw"} {
		if out, err := exec.Command("prosodyctl", "--config", conf, "register", user, "localhost", pw).CombinedOutput(); err != nil {
			t.Fatalf("prosodyctl register %s: %v\n%s", user, err, out)
		}
	}
	p := &Prosody{channeltest.Daemon{Name: "prosody", Args: []string{"prosody", "--config", conf}, Port: port}}
	t.Cleanup(p.Stop)
	return p
}
