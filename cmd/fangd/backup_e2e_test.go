package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

// fangdCmd runs the binary and returns its exit code and output.
func fangdCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(fangdBin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		noPanic(t, string(out))
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func agentNames(t *testing.T, p *proc) []string {
	t.Helper()
	code, body := p.request(t, "GET", "/api/agents", "")
	var list struct{ Items []agentJSON }
	if code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/agents: %d %s", code, body)
	}
	var names []string
	for _, a := range list.Items {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	return names
}

func verifyOnline(t *testing.T, p *proc) audit.Report {
	t.Helper()
	var rep audit.Report
	_, body := p.request(t, "GET", "/api/audit/verify", "")
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("verify: %s", body)
	}
	return rep
}

// A backup taken from a running daemon restores into a new home that
// serves the same agents with a valid audit chain; a backup is restored
// into an empty home only, and a damaged one not at all.
func TestBackupFromARunningDaemonRestores(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	env := append([]string{"FANGD_API_KEY=" + e2eKey}, keyEnv...)
	home := t.TempDir()
	p := startFangd(t, home, cfg, env...)
	for _, name := range []string{"one", "two", "three"} {
		if code, body := p.request(t, "POST", "/api/agents", `{"name":"`+name+`","model":"fakeoai/gpt-test"}`); code != 201 {
			t.Fatalf("POST /api/agents: %d %s", code, body)
		}
	}
	want := agentNames(t, p)
	dir := t.TempDir()
	file := filepath.Join(dir, "fangd.backup")

	if code, out := fangdCmd(t, "backup", "--out", file, "--url", p.url, "--key", "wrong-key-0123456789"); code == 0 ||
		!strings.Contains(out, "401") {
		t.Fatalf("backup with a wrong key: %d %s", code, out)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a refused backup left a file")
	}
	code, out := fangdCmd(t, "backup", "--out", file, "--home", home, "--url", p.url, "--key", e2eKey)
	if code != 0 {
		t.Fatalf("backup: %d %s", code, out)
	}
	if code, out := fangdCmd(t, "backup", "--out", file, "--url", p.url, "--key", e2eKey); code == 0 || !strings.Contains(out, "exists") {
		t.Fatalf("backup over an existing file: %d %s", code, out)
	}
	p.stop(t, syscall.SIGTERM)

	restored := filepath.Join(dir, "restored")
	if code, out := fangdCmd(t, "restore", "--in", file, "--home", restored); code != 0 || !strings.Contains(out, `"status": "valid"`) {
		t.Fatalf("restore: %d %s", code, out)
	}
	p2 := startFangd(t, restored, cfg, env...)
	if got := agentNames(t, p2); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("agents after restore: %v, want %v", got, want)
	}
	if rep := verifyOnline(t, p2); !rep.Valid() || rep.ChainLength < 4 {
		t.Fatalf("verify after restore: %+v", rep)
	}
	_, body := p2.request(t, "GET", "/api/audit/recent?limit=5", "")
	if !strings.Contains(string(body), `"event_type":"backup_taken"`) {
		t.Fatalf("the backup is not in its own audit log: %s", body)
	}
	p2.stop(t, syscall.SIGTERM)

	// Only into an empty home: the restored one is not, and neither is
	// the original.
	for _, h := range []string{restored, home} {
		if code, out := fangdCmd(t, "restore", "--in", file, "--home", h); code == 0 || !strings.Contains(out, "not empty") {
			t.Fatalf("restore into %s: %d %s", h, code, out)
		}
	}

	raw, _ := os.ReadFile(file)
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)/2] ^= 0x40
	for name, bad := range map[string][]byte{"truncated": raw[:len(raw)*2/3], "corrupted": flipped, "not a backup": []byte("hello\n")} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(path, bad, 0o600)
		target := filepath.Join(dir, "into-"+strings.ReplaceAll(name, " ", "-"))
		code, out := fangdCmd(t, "restore", "--in", path, "--home", target)
		if code == 0 || !strings.Contains(out, "not a complete fangd backup") {
			t.Fatalf("restore of a %s backup: %d %s", name, code, out)
		}
		if entries, _ := os.ReadDir(target); len(entries) > 0 {
			t.Fatalf("a refused restore wrote into %s: %v", target, entries)
		}
	}

	// Stopped: the backup reads the home directly.
	file2 := filepath.Join(dir, "offline.backup")
	if code, out := fangdCmd(t, "backup", "--out", file2, "--home", home); code != 0 || !strings.Contains(out, `"records"`) {
		t.Fatalf("offline backup: %d %s", code, out)
	}
	if code, out := fangdCmd(t, "restore", "--in", file2, "--home", filepath.Join(dir, "restored2")); code != 0 {
		t.Fatalf("restore of the offline backup: %d %s", code, out)
	}
}

// A home whose audit anchor does not match is not backed up: the backup
// would carry the broken chain under a fresh, matching anchor.
func TestBackupRefusesAnUnacceptedAnchorMismatch(t *testing.T) {
	t.Parallel()
	home, _ := mismatchedHome(t)
	file := filepath.Join(t.TempDir(), "b")
	if code, out := fangdCmd(t, "backup", "--out", file, "--home", home); code == 0 || !strings.Contains(out, "fangd audit accept") {
		t.Fatalf("offline backup of a mismatched home: %d %s", code, out)
	}
	p := startFangd(t, home, degradedAudit, "FANGD_API_KEY="+e2eKey)
	if code, body := p.request(t, "GET", "/api/admin/backup", ""); code != 409 || !strings.Contains(string(body), "audit_anchor_mismatch") {
		t.Fatalf("online backup while degraded: %d %s", code, body)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a refused backup left a file")
	}
}

// A backup whose chain does not verify (an entry edited inside it, which
// the anchor at the tip does not show) is restored nowhere: restore exits
// 1 and leaves the new home empty.
func TestRestoreRefusesABrokenChain(t *testing.T) {
	t.Parallel()
	home := homeWithHistory(t, 4, false)
	db := storetest.Open(t, home)
	var e audit.Entry
	db.AuditLog().Scan(2, false, func(r store.AuditRecord) (bool, error) { return false, json.Unmarshal(r.Raw, &e) })
	e.Details = "edited"
	raw, _ := json.Marshal(e)
	db.AuditLog().Overwrite(store.AuditRecord{ID: e.ID, Raw: raw})
	db.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "b")
	if code, out := fangdCmd(t, "backup", "--out", file, "--home", home); code != 0 {
		t.Fatalf("backup: %d %s", code, out)
	}
	target := filepath.Join(dir, "restored")
	code, out := fangdCmd(t, "restore", "--in", file, "--home", target)
	if code != 1 || !strings.Contains(out, `"status": "broken"`) || !strings.Contains(out, "undone") {
		t.Fatalf("restore of a broken chain: %d %s", code, out)
	}
	if entries, _ := os.ReadDir(target); len(entries) > 0 {
		t.Fatalf("a refused restore left %v in the home", entries)
	}
}
