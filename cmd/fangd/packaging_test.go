package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// dockerInstructions reads a Dockerfile into its instructions (continued
// lines joined, comments dropped), without Docker.
func dockerInstructions(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur += cont + " "
			continue
		}
		out = append(out, cur+line)
		cur = ""
	}
	return out
}

// The Dockerfile keeps what docs/deploy.md promises: two stages, a static
// (cgo-off) binary, a non-root user, the home as a volume, a health check
// on the public readiness route, and a listen address that makes fangd
// demand an API key. Docker itself is not needed to check this.
func TestDockerfileKeepsItsPromises(t *testing.T) {
	ins := dockerInstructions(t, "../../Dockerfile")
	has := func(prefix, sub string) bool {
		for _, i := range ins {
			if strings.HasPrefix(strings.ToUpper(i), prefix) && strings.Contains(i, sub) {
				return true
			}
		}
		return false
	}
	froms := 0
	user := ""
	for _, i := range ins {
		if strings.HasPrefix(i, "FROM ") {
			froms++
		}
		if u, ok := strings.CutPrefix(i, "USER "); ok {
			user = u
		}
	}
	if froms < 2 {
		t.Errorf("want a multi-stage build, got %d FROM", froms)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("the final USER is %q, want a non-root user", user)
	}
	for _, c := range []struct{ prefix, sub, why string }{
		{"RUN ", "CGO_ENABLED=0", "a static binary"},
		{"COPY ", "--from=build", "the binary from the build stage"},
		{"VOLUME ", "/var/lib/fangd", "the home as a volume"},
		{"ENV ", "FANGD_HOME=/var/lib/fangd", "the home where the volume is"},
		{"HEALTHCHECK ", "/api/ready", "a health check on the readiness route"},
		{"ENTRYPOINT ", "fangd", "fangd as the entrypoint"},
	} {
		if !has(c.prefix, c.sub) {
			t.Errorf("Dockerfile: no %s%s (%s)", c.prefix, c.sub, c.why)
		}
	}
}

// The systemd unit keeps its hardening, and systemd-analyze (when the
// machine has it) finds it valid.
func TestSystemdUnitIsHardened(t *testing.T) {
	b, err := os.ReadFile("../../packaging/fangd.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "StateDirectory": "fangd", "Environment": "FANGD_HOME=/var/lib/fangd",
		"CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes", "DynamicUser": "yes", "UMask": "0077",
	} {
		if v, ok := keys[k]; !ok || v != want {
			t.Errorf("%s=%q, want %q", k, v, want)
		}
	}
	if !strings.HasPrefix(keys["ExecStart"], "/usr/local/bin/fangd serve") {
		t.Errorf("ExecStart=%q", keys["ExecStart"])
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: syntax not verified")
		return
	}
	// verify wants ExecStart's binary to exist; everything else is as shipped.
	unit := filepath.Join(t.TempDir(), "fangd.service")
	if err := os.WriteFile(unit, []byte(strings.Replace(string(b), "ExecStart=/usr/local/bin/fangd", "ExecStart=/bin/true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", unit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
