package http

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/a2a/a2atest"
)

// The official A2A JavaScript SDK (@a2a-js/sdk, from npm) as a client of
// fangd: card, SendMessage, GetTask, streaming, CancelTask.
func TestA2AJavaScriptClientAgainstFangd(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	// The JS SDK resolves the card path relative to the base URL, so a
	// per-agent base needs its trailing slash.
	out := a2atest.RunClient(t, ts.url+"/a2a/agents/"+agentA.ID+"/", testKey)
	raw, _ := json.Marshal(out)
	get := func(path ...string) any {
		var v any = out
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: no %s in %s", path, p, raw)
			}
			v = m[p]
		}
		return v
	}
	if get("card", "name") != "alpha" || get("card", "streaming") != true {
		t.Fatalf("card: %s", raw)
	}
	if get("send", "state") != "TASK_STATE_COMPLETED" || get("send", "artifact") != "echo: hello from js" || get("send", "history") != float64(2) {
		t.Fatalf("SendMessage: %s", raw)
	}
	if get("get", "state") != "TASK_STATE_COMPLETED" || get("get", "id") != get("send", "id") {
		t.Fatalf("GetTask: %s", raw)
	}
	stream := get("stream").([]any)
	var kinds []string
	for _, s := range stream {
		kinds = append(kinds, s.(string))
	}
	if strings.Join(kinds, "|") != "task:TASK_STATE_WORKING|artifact:echo: stream from js|status:TASK_STATE_COMPLETED" {
		t.Fatalf("stream: %v", kinds)
	}
	// The SDK maps the spec's error codes to its own error classes.
	if get("cancelFinished", "name") != "JsonRpcTaskNotCancelableError" {
		t.Fatalf("cancel of a finished task should fail with TaskNotCancelable: %s", raw)
	}
	if get("running", "state") != "TASK_STATE_WORKING" || get("cancel", "state") != "TASK_STATE_CANCELED" {
		t.Fatalf("cancel of a running task: %s", raw)
	}
	select {
	case <-ts.agents.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled turn kept running")
	}
	if get("getUnknown", "name") != "JsonRpcTaskNotFoundError" {
		t.Fatalf("GetTask of an unknown task: %s", raw)
	}
}

// The official A2A JavaScript SDK's express server as an external agent:
// discover, send (streaming), status.
func TestA2AJavaScriptServerAsExternalAgent(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t)
	base := a2atest.StartServer(t, "js-peer-token-123456")
	r := ts.authed(t, "POST", "/api/a2a/discover", `{"url":"`+base+`","token":"js-peer-token-123456"}`)
	if r.status != 201 {
		t.Fatalf("discover: %d %s", r.status, r.body)
	}
	agent := jsonOf(t, r.body)
	if agent["name"] != "JS Echo Agent" || agent["capabilities"].(map[string]any)["streaming"] != true {
		t.Fatalf("agent %s", r.body)
	}
	r = ts.authed(t, "POST", "/api/a2a/send", `{"agent_id":"`+agent["id"].(string)+`","message":"hi from fangd"}`)
	if r.status != 202 {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	id := jsonOf(t, r.body)["task_id"].(string)
	var st map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		st = jsonOf(t, ts.authed(t, "GET", "/api/a2a/tasks/"+id+"/status", "").body)
		if st["status"] == "completed" || st["status"] == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw, _ := json.Marshal(st)
	if st["status"] != "completed" || st["streaming"] != true || st["remote_task_id"] == "" ||
		!strings.Contains(string(raw), `"text":"js says: hi from fangd"`) {
		t.Fatalf("status: %s", raw)
	}
}
