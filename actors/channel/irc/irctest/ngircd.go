// Package irctest runs a real IRC server, ngircd, on loopback for the irc
// adapter's tests and the daemon's end-to-end ones.
package irctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Password is the server password every connection gives.
const Password = "letmein"

// Ngircd is one ngircd server; Start and Stop it at will (an outage).
type Ngircd struct {
	channeltest.Daemon
}

// NewNgircd writes an ngircd configuration (extra is appended to it, such
// as a [Channel] section); it fails t when ngircd is not installed. Call
// Start to run it; it is stopped when t ends.
func NewNgircd(t testing.TB, extra string) *Ngircd {
	t.Helper()
	bin := path(t)
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o755) // ngircd drops root for "nobody", who must read the file
	port := channeltest.FreePort(t)
	conf := filepath.Join(dir, "ngircd.conf")
	text := fmt.Sprintf(`[Global]
Name = irc.fangd.test
Info = fangd test server
Listen = 127.0.0.1
Ports = %d
Password = %s
MotdPhrase = "fangd test"
AdminInfo1 = fangd tests
AdminEMail = tests@fangd.invalid
[Limits]
MaxConnectionsIP = 0
PingTimeout = 120
[Options]
PAM = no
Ident = no
DNS = no
%s`, port, Password, extra)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &Ngircd{channeltest.Daemon{Name: "ngircd", Args: []string{bin, "-n", "-f", conf}, Port: port}}
	t.Cleanup(n.Stop)
	return n
}

// path finds ngircd, which Debian installs in /usr/sbin (often not on a
// test's PATH).
func path(t testing.TB) string {
	for _, p := range []string{"/usr/sbin/ngircd", "/usr/bin/ngircd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("ngircd"); err == nil {
		return p
	}
	t.Fatal("ngircd is not installed: run `make test-deps` (apt-get install ngircd)")
	return ""
}
