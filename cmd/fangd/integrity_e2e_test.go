package main

// Operator scenarios of issue 13: a damaged anchor or store is refused with
// a clear message, never rewritten away or served as valid.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
)

// homeWithHistory runs a daemon on a new home, makes n audited changes and
// stops it gracefully (kill9: with SIGKILL, leaving the memtable's WAL).
func homeWithHistory(t *testing.T, n int, kill9 bool) string {
	t.Helper()
	home := t.TempDir()
	p := startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	levels := []string{"debug", "info"}
	for i := range n {
		if code, body := p.request(t, "PUT", "/api/logs/level", `{"level":"`+levels[i%2]+`"}`); code != 200 {
			t.Fatalf("PUT level: %d %s", code, body)
		}
	}
	if kill9 {
		time.Sleep(100 * time.Millisecond) // let the anchor catch up with the last commit
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		p.done <- nil
	} else if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return home
}

// degradedAudit starts fangd degraded, not refused, on an anchor mismatch.
const degradedAudit = "[audit]\non_anchor_mismatch = \"degraded\"\n"

// mismatchedHome is a home with 3 audit entries whose anchor claims 2
// more ("2 entries missing"), and the anchor that matched it.
func mismatchedHome(t *testing.T) (string, audit.Anchor) {
	home := homeWithHistory(t, 3, false)
	path := audit.AnchorPath(home)
	a, _ := audit.ReadAnchor(path)
	audit.WriteAnchor(path, audit.Anchor{Length: a.Length + 2, Tip: a.Tip})
	return home, a
}

// serveRefused runs `fangd serve` on home, which must exit non-zero by
// itself, with a message and no Go panic trace; it returns the output.
func serveRefused(t *testing.T, home string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fangdBin, "serve", "--home", home, "--listen", freeAddr(t))
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil || strings.Contains(string(out), "fangd is serving") {
		t.Fatalf("fangd started on a damaged home:\n%s", out)
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("serve exit: %v (want status 1)\n%s", err, out)
	}
	noPanic(t, string(out))
	return string(out)
}

func noPanic(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
		t.Fatalf("a Go panic trace instead of a message:\n%s", out)
	}
}

// verifyRefused runs the offline verifier, which must fail with a message.
func verifyRefused(t *testing.T, home string) string {
	t.Helper()
	out, err := exec.Command(fangdBin, "audit", "verify", "--home", home).CombinedOutput()
	if err == nil {
		t.Fatalf("audit verify passed on a damaged home:\n%s", out)
	}
	noPanic(t, string(out))
	return string(out)
}

func TestStartRefusesADamagedAnchor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		damage func(path string)
		says   string
	}{
		{"raised length", func(path string) {
			a, _ := audit.ReadAnchor(path)
			audit.WriteAnchor(path, audit.Anchor{Length: a.Length + 5, Tip: a.Tip})
		}, "5 entries missing"},
		{"changed hash", func(path string) {
			a, _ := audit.ReadAnchor(path)
			audit.WriteAnchor(path, audit.Anchor{Length: a.Length, Tip: strings.Repeat("0f", 32)})
		}, "with hash 0f0f"},
		{"deleted", func(path string) { os.Remove(path) }, "audit anchor missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := homeWithHistory(t, 3, false)
			path := audit.AnchorPath(home)
			c.damage(path)
			before, _ := os.ReadFile(path)
			for range 2 { // a second try is refused the same: nothing was rewritten
				out := serveRefused(t, home)
				for _, want := range []string{c.says, "refuses to start", "fangd audit accept", "on_anchor_mismatch"} {
					if !strings.Contains(out, want) {
						t.Fatalf("refusal does not say %q:\n%s", want, out)
					}
				}
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Fatalf("anchor rewritten: %q -> %q", before, after)
			}
			if rep, code := verifyOffline(t, home); code != 1 || rep.Valid() {
				t.Fatalf("offline verify: %d %+v", code, rep)
			}
		})
	}
}

func TestDegradedModeReportsBrokenUntilAccepted(t *testing.T) {
	t.Parallel()
	home, a := mismatchedHome(t)
	p := startFangd(t, home, degradedAudit, "FANGD_API_KEY="+e2eKey)
	var rep audit.Report
	_, body := p.request(t, "GET", "/api/audit/verify", "")
	json.Unmarshal(body, &rep)
	if rep.Valid() || !strings.Contains(rep.StartupMismatch, "2 entries missing") {
		t.Fatalf("verify while degraded: %s", body)
	}
	_, body = p.request(t, "GET", "/api/health", "")
	if !strings.Contains(string(body), `"status":"degraded"`) {
		t.Fatalf("health while degraded: %s", body)
	}
	var detail struct{ Status, AuditStatus, AuditError string }
	_, body = p.request(t, "GET", "/api/health/detail", "")
	json.Unmarshal(body, &struct {
		Status      *string `json:"status"`
		AuditStatus *string `json:"audit_status"`
		AuditError  *string `json:"audit_error"`
	}{&detail.Status, &detail.AuditStatus, &detail.AuditError})
	if detail.Status != "degraded" || detail.AuditStatus != "degraded" || !strings.Contains(detail.AuditError, "entries missing") {
		t.Fatalf("health detail while degraded: %s", body)
	}
	var sec struct {
		Systems map[string]string `json:"security_systems"`
	}
	_, body = p.request(t, "GET", "/api/security", "")
	json.Unmarshal(body, &sec)
	if sec.Systems["merkle_audit_trail"] == "active" {
		t.Fatalf("security while degraded: %s", body)
	}
	p.request(t, "PUT", "/api/logs/level", `{"level":"warn"}`) // writes go on
	p.stop(t, syscall.SIGTERM)
	if rep, code := verifyOffline(t, home); code != 1 || rep.Valid() {
		t.Fatalf("offline verify after a degraded run: %d %+v", code, rep)
	}

	if out, err := exec.Command(fangdBin, "audit", "accept", "--home", home).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "--reason") {
		t.Fatalf("accept without a reason: %v %s", err, out)
	}
	out, err := exec.Command(fangdBin, "audit", "accept", "--home", home, "--reason", "restored from backup, tail lost").Output()
	if err != nil {
		t.Fatalf("audit accept: %v %s", err, out)
	}
	var accepted audit.Entry
	json.Unmarshal(out, &accepted)
	if accepted.EventType != "audit_anchor_accepted" || !strings.Contains(accepted.Details, "restored from backup") ||
		!strings.Contains(accepted.Details, "expected entry 7 with hash "+a.Tip) || !strings.HasPrefix(accepted.Actor, "operator:") {
		t.Fatalf("accept entry: %s", out)
	}
	if rep, code := verifyOffline(t, home); code != 0 || !rep.Valid() || rep.ChainLength != accepted.ID {
		t.Fatalf("offline verify after accept: %d %+v", code, rep)
	}
	p2 := startFangd(t, home, degradedAudit, "FANGD_API_KEY="+e2eKey)
	_, body = p2.request(t, "GET", "/api/audit/verify", "")
	json.Unmarshal(body, &rep)
	if !rep.Valid() {
		t.Fatalf("online verify after accept: %s", body)
	}
	if _, body = p2.request(t, "GET", "/api/health", ""); !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("health after accept: %s", body)
	}
}

// largestFile is the biggest file of dir matching pattern.
func largestFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	sort.Slice(m, func(i, j int) bool {
		a, _ := os.Stat(m[i])
		b, _ := os.Stat(m[j])
		return a.Size() > b.Size()
	})
	return m[0]
}

func TestDamagedStoreIsRefusedWithAMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		kill9  bool
		damage func(t *testing.T, data string)
		says   string
	}{
		{"flipped byte in a table", false, func(t *testing.T, data string) {
			sst := largestFile(t, data, "*.sst")
			raw, _ := os.ReadFile(sst)
			raw[len(raw)/3] ^= 0x20
			os.WriteFile(sst, raw, 0o600)
		}, "is damaged"},
		{"truncated table", false, func(t *testing.T, data string) {
			sst := largestFile(t, data, "*.sst")
			fi, _ := os.Stat(sst)
			os.Truncate(sst, fi.Size()/2)
		}, "is damaged"},
		{"deleted MANIFEST", false, func(t *testing.T, data string) {
			os.Remove(filepath.Join(data, "MANIFEST"))
		}, "MANIFEST is missing"},
		{"flipped byte in the WAL", true, func(t *testing.T, data string) {
			wal := largestFile(t, data, "*.mem")
			raw, _ := os.ReadFile(wal)
			end := len(raw)
			for end > 0 && raw[end-1] == 0 {
				end--
			}
			raw[end/3] ^= 0x20
			os.WriteFile(wal, raw, 0o600)
		}, "but a valid entry follows"},
		{"deleted WAL", true, func(t *testing.T, data string) {
			m, _ := filepath.Glob(filepath.Join(data, "*.mem"))
			for _, f := range m {
				os.Remove(f)
			}
		}, "entries missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			home := homeWithHistory(t, 60, c.kill9)
			c.damage(t, store.DataDir(home))
			if out := serveRefused(t, home); !strings.Contains(out, c.says) {
				t.Fatalf("refusal does not say %q:\n%s", c.says, out)
			}
			if out := verifyRefused(t, home); c.name != "deleted WAL" && !strings.Contains(out, c.says) {
				t.Fatalf("audit verify does not say %q:\n%s", c.says, out)
			}
		})
	}
}

// One agent record that does not decode is moved aside and reported; the
// other agents are served.
func TestCorruptAgentRecordIsQuarantined(t *testing.T) {
	t.Parallel()
	_, _, cfg := fakes(t, "")
	home := t.TempDir()
	td := runFangd(t, home, cfg, keyEnv...)
	var ids []string
	for _, name := range []string{"one", "two", "three"} {
		var a agentJSON
		td.must(201, "POST", "/api/agents", map[string]any{"name": name, "model": "fakeoai/gpt-test"}, &a)
		ids = append(ids, a.ID)
	}
	td.stop()
	db := storetest.Open(t, home)
	bad := "agents/" + ids[1]
	db.Update(func(tx *store.Txn) error { return tx.Set([]byte(bad), []byte(`{"id":"`+ids[1]+`","name":`)) })
	db.Close()

	td.start()
	var list struct{ Items []agentJSON }
	td.must(200, "GET", "/api/agents", nil, &list)
	if len(list.Items) != 2 {
		t.Fatalf("agents after one was damaged: %+v", list)
	}
	var detail struct {
		Quarantined     int      `json:"quarantined"`
		QuarantinedKeys []string `json:"quarantined_keys"`
	}
	td.must(200, "GET", "/api/health/detail", nil, &detail)
	if detail.Quarantined != 1 || len(detail.QuarantinedKeys) != 1 || detail.QuarantinedKeys[0] != bad {
		t.Fatalf("health detail: %+v", detail)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := td.must(200, "GET", "/api/audit/recent?limit=20", nil, nil)
		if strings.Contains(string(r.raw), `"event_type":"record_quarantined"`) && strings.Contains(string(r.raw), bad) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit entry for the quarantined record: %s", r.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log := td.stop()
	if !strings.Contains(log, "quarantined") {
		t.Fatalf("the log does not report the quarantine:\n%s", log)
	}
	td.start() // the next start is clean, the record stays aside
	td.must(200, "GET", "/api/agents", nil, &list)
	td.must(200, "GET", "/api/health/detail", nil, &detail)
	if len(list.Items) != 2 || detail.Quarantined != 1 {
		t.Fatalf("after another restart: %d agents, %d quarantined", len(list.Items), detail.Quarantined)
	}
}

func TestAuditRetentionKeepsTheChainVerifiable(t *testing.T) {
	t.Parallel()
	home := homeWithHistory(t, 30, false) // 32 entries
	p := startFangd(t, home, "[audit]\nretain_entries = 10\n", "FANGD_API_KEY="+e2eKey)
	var rep audit.Report
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := p.request(t, "GET", "/api/audit/verify", "")
		json.Unmarshal(body, &rep)
		if rep.TrimmedLength > 0 {
			if !rep.Valid() {
				t.Fatalf("online verify after trimming: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing trimmed: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.request(t, "PUT", "/api/logs/level", `{"level":"warn"}`)
	p.stop(t, syscall.SIGTERM)
	off, code := verifyOffline(t, home)
	if code != 0 || !off.Valid() || off.TrimmedLength != rep.TrimmedLength {
		t.Fatalf("offline verify after trimming: %d %+v", code, off)
	}
	m, _ := filepath.Glob(filepath.Join(home, "audit-archive", "audit-1-*.jsonl"))
	if len(m) != 1 {
		t.Fatalf("no archive of the trimmed prefix: %v", m)
	}
	startFangd(t, home, "[audit]\nretain_entries = 10\n", "FANGD_API_KEY="+e2eKey) // the anchor still matches
}

// POST /api/audit/accept does for a running, degraded daemon what
// `fangd audit accept` does offline: the same entry, then a new anchor.
func TestAuditAcceptThroughTheAPI(t *testing.T) {
	t.Parallel()
	home, _ := mismatchedHome(t)
	p := startFangd(t, home, degradedAudit, "FANGD_API_KEY="+e2eKey)

	if code, body := p.request(t, "POST", "/api/audit/accept", `{"reason":"  "}`); code != 400 {
		t.Fatalf("accept without a reason: %d %s", code, body)
	}
	res, err := http.Post(p.url+"/api/audit/accept", "application/json", strings.NewReader(`{"reason":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("accept without the API key: %d", res.StatusCode)
	}
	if rep := verifyOnline(t, p); rep.Valid() {
		t.Fatalf("verify before accept: %+v", rep)
	}

	code, body := p.request(t, "POST", "/api/audit/accept", `{"reason":"restored from backup, tail lost"}`)
	var accepted audit.Entry
	json.Unmarshal(body, &accepted)
	if code != 200 || accepted.EventType != "audit_anchor_accepted" || accepted.Actor != "api_key" ||
		!strings.Contains(accepted.Details, "reason: restored from backup, tail lost") ||
		!strings.Contains(accepted.Details, "2 entries missing") {
		t.Fatalf("accept: %d %s", code, body)
	}
	if rep := verifyOnline(t, p); !rep.Valid() || rep.StartupMismatch != "" {
		t.Fatalf("verify after accept: %+v", rep)
	}
	if _, body := p.request(t, "GET", "/api/health", ""); !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("health after accept: %s", body)
	}
	var sec struct {
		Systems map[string]string `json:"security_systems"`
	}
	_, body = p.request(t, "GET", "/api/security", "")
	json.Unmarshal(body, &sec)
	if sec.Systems["merkle_audit_trail"] != "active" {
		t.Fatalf("security after accept: %s", body)
	}
	if code, body := p.request(t, "POST", "/api/audit/accept", `{"reason":"again"}`); code != 409 || !strings.Contains(string(body), "nothing_to_accept") {
		t.Fatalf("a second accept: %d %s", code, body)
	}
	if an, _ := audit.ReadAnchor(audit.AnchorPath(home)); an.Length < accepted.ID {
		t.Fatalf("anchor after accept: %+v, accepted entry %d", an, accepted.ID)
	}
	p.request(t, "PUT", "/api/logs/level", `{"level":"warn"}`) // the anchor follows again
	p.stop(t, syscall.SIGTERM)
	if rep, code := verifyOffline(t, home); code != 0 || !rep.Valid() || rep.ChainLength <= accepted.ID {
		t.Fatalf("offline verify after the API accept: %d %+v", code, rep)
	}
	startFangd(t, home, "", "FANGD_API_KEY="+e2eKey) // refuse mode: the anchor matches
}

// A daemon whose anchor matched has nothing to accept.
func TestAuditAcceptWithNothingToAccept(t *testing.T) {
	t.Parallel()
	p := startFangd(t, t.TempDir(), "", "FANGD_API_KEY="+e2eKey)
	if code, body := p.request(t, "POST", "/api/audit/accept", `{"reason":"why not"}`); code != 409 || !strings.Contains(string(body), "nothing_to_accept") {
		t.Fatalf("accept on a matching anchor: %d %s", code, body)
	}
}

// retain_days trims the entries older than it, behind a checkpoint entry
// that commits to the trimmed prefix; the rest of the chain still
// verifies, online and offline, and the next start finds the anchor whole.
func TestAuditRetentionByAgeKeepsTheChainVerifiable(t *testing.T) {
	t.Parallel()
	home := homeWithHistory(t, 12, false) // 14 entries
	// Backdate all but the newest four, re-chaining every entry.
	db := storetest.Open(t, home)
	var entries []audit.Entry
	db.AuditLog().Scan(0, false, func(r store.AuditRecord) (bool, error) {
		var e audit.Entry
		json.Unmarshal(r.Raw, &e)
		entries = append(entries, e)
		return true, nil
	})
	old := len(entries) - 4
	prev := audit.Genesis
	for i := range entries {
		e := &entries[i]
		if i < old {
			e.Timestamp = time.Now().Add(-10*24*time.Hour + time.Duration(i)*time.Second).UTC().Format(time.RFC3339Nano)
		}
		e.PrevHash = prev
		e.Hash = audit.Hash(e)
		prev = e.Hash
		raw, _ := json.Marshal(e)
		if err := db.AuditLog().Overwrite(store.AuditRecord{ID: e.ID, Raw: raw}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	audit.WriteAnchor(audit.AnchorPath(home), audit.Anchor{Length: uint64(len(entries)), Tip: prev})

	config := "[audit]\nretain_days = 3\n"
	p := startFangd(t, home, config, "FANGD_API_KEY="+e2eKey)
	var rep audit.Report
	deadline := time.Now().Add(15 * time.Second)
	for rep = verifyOnline(t, p); rep.TrimmedLength == 0; rep = verifyOnline(t, p) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing trimmed: %+v", rep)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !rep.Valid() || rep.TrimmedLength != uint64(old) {
		t.Fatalf("verify after trimming by age: %+v (want %d trimmed)", rep, old)
	}
	_, body := p.request(t, "GET", "/api/audit/recent?limit=10", "")
	if !strings.Contains(string(body), `"event_type":"audit_checkpoint"`) ||
		!strings.Contains(string(body), fmt.Sprintf("retention: entries 1..%d trimmed", old)) {
		t.Fatalf("no checkpoint entry for the trimmed prefix: %s", body)
	}
	p.request(t, "PUT", "/api/logs/level", `{"level":"warn"}`)
	p.stop(t, syscall.SIGTERM)
	off, code := verifyOffline(t, home)
	if code != 0 || !off.Valid() || off.TrimmedLength != uint64(old) {
		t.Fatalf("offline verify after trimming by age: %d %+v", code, off)
	}
	if m, _ := filepath.Glob(filepath.Join(home, "audit-archive", "audit-1-*.jsonl")); len(m) != 1 {
		t.Fatalf("no archive of the trimmed prefix: %v", m)
	}
	startFangd(t, home, config, "FANGD_API_KEY="+e2eKey) // the anchor still matches
}
