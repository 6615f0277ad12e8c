package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/a2a/a2atest"
)

// a2aConfig allowlists loopback for outbound A2A calls: every peer in these
// tests runs on 127.0.0.1.
const a2aConfig = `
[network_policy]
allow_hosts = ["127.0.0.1/32"]
`

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return m
}

func (p *proc) waitOutbound(t *testing.T, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := p.request(t, "GET", "/api/a2a/tasks/"+id+"/status", "")
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		st := decodeMap(t, body)
		switch st["status"] {
		case "completed", "failed", "cancelled", "rejected":
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbound task %s did not finish: %s", id, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The real binary as an A2A client of an external agent built with the
// official JavaScript SDK; the outbound task and the discovered agent
// survive a restart.
func TestA2AFangdCallsAJavaScriptAgent(t *testing.T) {
	home := t.TempDir()
	p := startFangd(t, home, a2aConfig, "FANGD_API_KEY="+e2eKey)
	peer := a2atest.StartServer(t, "")

	// The card is public, cacheable and names the A2A 1.0 interface.
	res, err := http.Get(p.url + "/.well-known/agent-card.json")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("ETag") == "" || !strings.Contains(res.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("card: %d %v", res.StatusCode, res.Header)
	}

	code, body := p.request(t, "POST", "/api/a2a/discover", `{"url":"`+peer+`"}`)
	if code != 201 {
		t.Fatalf("discover: %d %s", code, body)
	}
	id := decodeMap(t, body)["id"].(string)
	// Private addresses stay refused even with loopback allowlisted.
	if code, body := p.request(t, "POST", "/api/a2a/discover", `{"url":"http://10.1.2.3:8080"}`); code != 400 || !strings.Contains(string(body), "a2a_ssrf_blocked") {
		t.Fatalf("private address: %d %s", code, body)
	}
	code, body = p.request(t, "POST", "/api/a2a/send", `{"agent_id":"`+id+`","message":"hello from the binary"}`)
	if code != 202 {
		t.Fatalf("send: %d %s", code, body)
	}
	task := decodeMap(t, body)["task_id"].(string)
	st := p.waitOutbound(t, task)
	raw, _ := json.Marshal(st)
	if st["status"] != "completed" || !strings.Contains(string(raw), "js says: hello from the binary") {
		t.Fatalf("outbound: %s", raw)
	}

	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.stderr)
	}
	p = startFangd(t, home, "", "FANGD_API_KEY="+e2eKey)
	code, body = p.request(t, "GET", "/api/a2a/tasks/"+task+"/status", "")
	if code != 200 || decodeMap(t, body)["status"] != "completed" {
		t.Fatalf("after restart: %d %s", code, body)
	}
	code, body = p.request(t, "GET", "/api/a2a/agents/"+id, "")
	if code != 200 || decodeMap(t, body)["name"] != "JS Echo Agent" {
		t.Fatalf("agent after restart: %d %s", code, body)
	}
}

// A bad [a2a] section stops the daemon with a message that names the field.
func TestA2ABadConfigNamesTheField(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{"[a2a]\ntask_retention = \"soon\"\n", "a2a.task_retention"},
		{"[a2a]\nmax_attempts = 0\n", "a2a.max_attempts"},
		{"[[a2a.peers]]\nname = \"b\"\ntoken_env = \"FANGD_TEST_NO_SUCH_VAR\"\n", "a2a.peers[0]"},
		{"[[a2a.external_agents]]\nname = \"x\"\nurl = \"ftp://x\"\n", "a2a.external_agents[0].url"},
		{"[network_policy]\nallow_hosts = [\"not a cidr/\"]\n", "network_policy"},
		{"[a2a]\nlisten_path = \"/x\"\n", "a2a.listen_path"},
	} {
		p := launch(t, t.TempDir(), c.config)
		select {
		case err := <-p.done:
			p.done <- err
			if err == nil || !strings.Contains(p.stderr.String(), c.want) {
				t.Errorf("config %q: exit %v, stderr %s", c.config, err, p.stderr)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("config %q: fangd did not refuse to start", c.config)
		}
	}
}
