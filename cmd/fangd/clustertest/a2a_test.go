//go:build cluster

package clustertest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/llm/llmtest"
)

// rpcTask is the part of a JSON-RPC answer carrying a task.
type rpcTask struct {
	Result struct {
		ID     string `json:"id"`
		Status struct {
			State   string `json:"state"`
			Message *struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"message"`
		} `json:"status"`
		Artifacts []struct {
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"artifacts"`
		Task *struct {
			ID     string `json:"id"`
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		} `json:"task"`
	} `json:"result"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r rpcTask) id() string {
	if r.Result.Task != nil {
		return r.Result.Task.ID
	}
	return r.Result.ID
}

func (r rpcTask) state() string {
	if r.Result.Task != nil {
		return r.Result.Task.Status.State
	}
	return r.Result.Status.State
}

// rpc posts one JSON-RPC call to url.
func rpc(t *testing.T, url, method, params string) (int, rpcTask, string) {
	t.Helper()
	code, body := post(t, url, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, params))
	var r rpcTask
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s %s: %d %s", method, url, code, body)
	}
	return code, r, string(body)
}

func sendParams(text, extra string) string {
	return fmt.Sprintf(`{"message":{"messageId":"m-%d","role":"ROLE_USER","parts":[{"text":%q}]%s}}`, time.Now().UnixNano(), text, extra)
}

// Issue 18, "exactly one activation cluster-wide" for A2A tasks: three
// real nodes and a real etcd. A task sent through n1 runs there (one LLM
// call) and GetTask through n2 and n3 answers it, in JSON-RPC and REST;
// a message through n2 for an agent only n1 has runs on n1; a running
// task is cancelled through n3; ListTasks through n3 lists n1's and n2's
// tasks; then n1 is killed with -9 with a task in
// flight, and n2 answers GetTask for it with failed (naming n1), and n3
// still answers the finished one.
func TestA2ATasksAnsweredByAnyNodeAndFailedAfterHostKill9(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	oai.SetReply(func(r llmtest.Request) string { return "answer from n1" })
	nodes := channelNodes(t, etcd, oai, "n1", "n2", "n3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	if code, body := post(t, n1.url+"/api/agents", `{"name":"solo","model":"fakeoai/gpt-test"}`); code != 201 {
		t.Fatalf("create solo: %d %s", code, body)
	}

	// Sent through n1 to its helper; answered by n2 and n3.
	before := len(oai.Requests())
	code, r, body := rpc(t, n1.url+"/a2a/agents/helper", "SendMessage", sendParams("hello", ""))
	if code != 200 || r.state() != "TASK_STATE_COMPLETED" {
		t.Fatalf("SendMessage through n1: %d %s", code, body)
	}
	done := r.id()
	if n := len(oai.Requests()) - before; n != 1 {
		t.Fatalf("the LLM saw %d requests for one task", n)
	}
	for _, n := range []*node{n2, n3} {
		code, r, body := rpc(t, n.url+"/a2a", "GetTask", fmt.Sprintf(`{"id":%q}`, done))
		if code != 200 || r.state() != "TASK_STATE_COMPLETED" || len(r.Result.Artifacts) != 1 || r.Result.Artifacts[0].Parts[0].Text != "answer from n1" {
			t.Fatalf("GetTask through %s: %d %s", n.name, code, body)
		}
		// 0.3 and REST too.
		if code, body := post(t, n.url+"/a2a", fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"id":%q}}`, done)); code != 200 || !strings.Contains(string(body), `"completed"`) {
			t.Fatalf("tasks/get through %s: %d %s", n.name, code, body)
		}
		if code, body := do(t, "GET", n.url+"/a2a/tasks/"+done, ""); code != 200 || !strings.Contains(string(body), `"completed"`) {
			t.Fatalf("GET /a2a/tasks through %s: %d %s", n.name, code, body)
		}
	}
	// Unknown everywhere: the JSON-RPC task-not-found error.
	if _, r, body := rpc(t, n3.url+"/a2a", "GetTask", `{"id":"0198a000-0000-7000-8000-000000000000"}`); r.Error == nil {
		t.Fatalf("unknown task: %s", body)
	}

	// A message through n2 for the agent only n1 has runs on n1.
	code, r, body = rpc(t, n2.url+"/a2a", "SendMessage", sendParams("routed", `,"metadata":{"agent_id":"solo"}`))
	if code != 200 || r.state() != "TASK_STATE_COMPLETED" {
		t.Fatalf("SendMessage through n2 for n1's agent: %d %s", code, body)
	}
	if code, _, body := rpc(t, n1.url+"/a2a", "GetTask", fmt.Sprintf(`{"id":%q}`, r.id())); code != 200 || !strings.Contains(body, "TASK_STATE_COMPLETED") {
		t.Fatalf("the routed task is not n1's: %s", body)
	}

	// ListTasks through n3, which runs no task, lists n1's two and n2's one.
	routed := r.id()
	code, r, body = rpc(t, n2.url+"/a2a/agents/helper", "SendMessage", sendParams("on n2", ""))
	if code != 200 || r.state() != "TASK_STATE_COMPLETED" {
		t.Fatalf("SendMessage through n2: %d %s", code, body)
	}
	onN2 := r.id()
	code, lb := post(t, n3.url+"/a2a", `{"jsonrpc":"2.0","id":4,"method":"ListTasks","params":{}}`)
	var list struct {
		Result struct {
			Tasks []struct {
				ID string `json:"id"`
			} `json:"tasks"`
			TotalSize int `json:"totalSize"`
		} `json:"result"`
	}
	if err := json.Unmarshal(lb, &list); err != nil || code != 200 || list.Result.TotalSize != 3 || len(list.Result.Tasks) != 3 {
		t.Fatalf("ListTasks through n3: %d %s", code, lb)
	}
	for i, want := range []string{onN2, routed, done} {
		if list.Result.Tasks[i].ID != want {
			t.Fatalf("ListTasks through n3: task %d is %s, want %s (newest first): %s", i, list.Result.Tasks[i].ID, want, lb)
		}
	}

	// A running task cancelled through n3.
	oai.SetLatency(time.Minute)
	code, r, body = rpc(t, n1.url+"/a2a/agents/helper", "SendMessage", sendParams("slow", "")[:len(sendParams("slow", ""))-1]+`,"configuration":{"returnImmediately":true}}`)
	if code != 200 || r.id() == "" {
		t.Fatalf("SendMessage returnImmediately: %d %s", code, body)
	}
	running := r.id()
	// Followed live through n2: the first event arrives while the task
	// still runs on n1 (the relay is incremental), the cancel's last.
	relayed := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 10 * time.Second}}
	res, err := relayed.Post(n2.url+"/a2a", "application/json", strings.NewReader(
		fmt.Sprintf(`{"jsonrpc":"2.0","id":3,"method":"SubscribeToTask","params":{"id":%q}}`, running)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("SubscribeToTask through n2: %d %s %s", res.StatusCode, ct, b)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data:") {
				lines <- l
			}
		}
	}()
	select {
	case l := <-lines:
		if !strings.Contains(l, running) {
			t.Fatalf("first event through n2: %s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event through n2 while the task runs on n1: the stream is not relayed as it happens")
	}
	code, r, body = rpc(t, n3.url+"/a2a", "CancelTask", fmt.Sprintf(`{"id":%q}`, running))
	if code != 200 || r.state() != "TASK_STATE_CANCELED" {
		t.Fatalf("CancelTask through n3: %d %s", code, body)
	}
	if _, r, body := rpc(t, n2.url+"/a2a", "GetTask", fmt.Sprintf(`{"id":%q}`, running)); r.state() != "TASK_STATE_CANCELED" {
		t.Fatalf("GetTask through n2 after the cancel: %s", body)
	}
	sawCancel, end := false, time.After(10*time.Second)
	for open := true; open; {
		select {
		case l, ok := <-lines:
			open = ok
			sawCancel = sawCancel || strings.Contains(l, "TASK_STATE_CANCELED")
		case <-end:
			t.Fatal("the relayed stream did not end after the cancel")
		}
	}
	if !sawCancel {
		t.Fatal("the relayed stream ended without the cancel")
	}

	// A task in flight on n1; n1 is killed with -9.
	p := sendParams("lost", "")
	code, r, body = rpc(t, n1.url+"/a2a/agents/helper", "SendMessage", p[:len(p)-1]+`,"configuration":{"returnImmediately":true}}`)
	if code != 200 || r.id() == "" {
		t.Fatalf("SendMessage before the kill: %d %s", code, body)
	}
	lost := r.id()
	killed := n1.kill(t)
	<-n1.done
	n1.done <- nil
	deadline := time.Now().Add(25 * time.Second)
	for {
		code, r, body = rpc(t, n2.url+"/a2a", "GetTask", fmt.Sprintf(`{"id":%q}`, lost))
		if code == 200 && r.state() == "TASK_STATE_FAILED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetTask through n2 of the dead host's task: %d %s, want failed", code, body)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if m := r.Result.Status.Message; m == nil || !strings.Contains(m.Parts[0].Text, "cluster node n1") {
		t.Fatalf("the failed task's reason does not name the lost node: %s", body)
	}
	t.Logf("the dead host's task answered failed %.1f s after the kill", time.Since(killed).Seconds())
	// The finished task is still answered, by n3, from its final entry.
	if code, r, body := rpc(t, n3.url+"/a2a", "GetTask", fmt.Sprintf(`{"id":%q}`, done)); code != 200 || r.state() != "TASK_STATE_COMPLETED" {
		t.Fatalf("GetTask through n3 of the dead host's finished task: %d %s", code, body)
	}
	if code, body := do(t, "GET", n2.url+"/a2a/tasks/"+running, ""); code != 200 || !strings.Contains(string(body), "cancel") {
		t.Fatalf("GET /a2a/tasks through n2 of the dead host's cancelled task: %d %s", code, body)
	}
}
