package a2a

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// masked replaces what differs between two runs of the same request (new
// task and message ids, timestamps) so the two answers compare.
func masked(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, raw)
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				switch k {
				case "id", "taskId", "contextId", "messageId", "timestamp":
					if _, ok := e.(string); ok {
						x[k] = "*"
						continue
					}
				}
				x[k] = walk(e)
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	return walk(v)
}

// ServeSendMessage answers a SendMessage as the SDK's JSON-RPC handler
// does (the same bytes but for the new task's ids and times), errors
// included, and leaves every request it does not take untouched.
func TestServeSendMessageAnswersAsTheSDKDoes(t *testing.T) {
	h := newHarness(t, nil)
	rh := h.svc.JSONRPC("")
	sdk := func(body string, header http.Header) []byte {
		r := httptest.NewRequest(http.MethodPost, "/a2a", strings.NewReader(body)).WithContext(admin())
		for k, v := range header {
			r.Header[k] = v
		}
		w := httptest.NewRecorder()
		rh.ServeHTTP(w, r)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("SDK answer %d %q", w.Code, w.Header().Get("Content-Type"))
		}
		return w.Body.Bytes()
	}
	for _, c := range []struct {
		name, body, want string
	}{
		{"completed", `{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hi <there> & you"}]}}}`, `"TASK_STATE_COMPLETED"`},
		{"string id, history trimmed", `{"jsonrpc":"2.0","id":"a","method":"SendMessage","params":{"message":{"messageId":"m2","role":"ROLE_USER","parts":[{"text":"x"}]},"configuration":{"historyLength":1}}}`, `"TASK_STATE_COMPLETED"`},
		{"handler error", `{"jsonrpc":"2.0","id":8,"method":"SendMessage","params":{"message":{"messageId":"m3","role":"ROLE_USER","taskId":"no-such-task","parts":[{"text":"x"}]}}}`, `"error"`},
	} {
		fast, ok := rh.ServeSendMessage(admin(), []byte(c.body), http.Header{})
		if !ok {
			t.Fatalf("%s: not taken", c.name)
		}
		if !strings.HasSuffix(string(fast), "}\n") || !strings.Contains(string(fast), c.want) {
			t.Fatalf("%s: %s", c.name, fast)
		}
		slow := sdk(c.body, nil)
		if !reflect.DeepEqual(masked(t, fast), masked(t, slow)) {
			t.Fatalf("%s: the shortcut answered\n%s\nthe SDK\n%s", c.name, fast, slow)
		}
	}
	// Everything else is the SDK's to answer: nothing runs.
	turns := func() int {
		h.agents.mu.Lock()
		defer h.agents.mu.Unlock()
		return len(h.agents.calls)
	}
	before := turns()
	for _, c := range []struct {
		name, body, version string
	}{
		{"0.3 name", `{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"messageId":"m","role":"user","parts":[{"kind":"text","text":"x"}]}}}`, ""},
		{"LibreFang draft", `{"jsonrpc":"2.0","id":1,"method":"tasks/send","params":{"message":{"role":"user","parts":[{"type":"text","text":"x"}]}}}`, ""},
		{"other method", `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}`, ""},
		{"not 2.0", `{"jsonrpc":"1.0","id":1,"method":"SendMessage","params":{}}`, ""},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"SendMessage","params":{}}`, ""},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"x"}]}}} x`, ""},
		{"params of the wrong type", `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":7}}`, ""},
		{"no params", `{"jsonrpc":"2.0","id":1,"method":"SendMessage"}`, ""},
		{"unsupported version", `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"x"}]}}}`, "2.0"},
		{"not JSON", `{`, ""},
	} {
		header := http.Header{}
		if c.version != "" {
			header.Set("A2A-Version", c.version)
		}
		if answer, ok := rh.ServeSendMessage(admin(), []byte(c.body), header); ok {
			t.Fatalf("%s: taken, answered %s", c.name, answer)
		}
	}
	if after := turns(); after != before {
		t.Fatalf("requests the shortcut refused ran %d turns", after-before)
	}
}
