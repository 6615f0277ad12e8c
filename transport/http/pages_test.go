package http

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// pageEnvelope is the paging fields added beside a seed object's list.
type pageEnvelope struct {
	Total  int  `json:"total"`
	Offset int  `json:"offset"`
	Limit  int  `json:"limit"`
	Next   *int `json:"next_offset"`
}

// checkEnvelope asserts an object list's paging fields and its page length.
func checkEnvelope(t *testing.T, body []byte, key string, n, total, offset, limit int, next *int) {
	t.Helper()
	var env pageEnvelope
	var items map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &items); err != nil {
		t.Fatal(err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(items[key], &list); err != nil || list == nil {
		t.Fatalf("%q in %s: %v", key, body, err)
	}
	if len(list) != n || env.Total != total || env.Offset != offset || env.Limit != limit ||
		(next == nil) != (env.Next == nil) || (next != nil && *next != *env.Next) {
		t.Fatalf("page %s: want %d items total %d offset %d limit %d next %v", body, n, total, offset, limit, next)
	}
	if _, ok := items["next_offset"]; !ok {
		t.Fatalf("no next_offset in %s", body)
	}
}

func intp(n int) *int { return &n }

// /api/webhooks and /api/webhooks/events answered every webhook at once;
// they page with ?offset=&limit=.
func TestWebhookListsPaged(t *testing.T) {
	cs := newCommsServer(t)
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"name":"w%d","url":"http://127.0.0.1:9/in","events":["agent.*"]}`, i)
		kerneltest.WaitFor(t, "webhook engine", func() bool { return cs.authed(t, "POST", "/api/webhooks", body).status != 503 })
		ev := fmt.Sprintf(`{"url":"http://127.0.0.1:9/e%d","event_type":"agent.spawned"}`, i)
		if r := cs.authed(t, "POST", "/api/webhooks/events", ev); r.status/100 != 2 {
			t.Fatalf("event webhook: %d %s", r.status, r.body)
		}
	}
	r := cs.mustStatus(t, 200, "GET", "/api/webhooks?limit=1", "")
	checkEnvelope(t, r.body, "webhooks", 1, 3, 0, 1, intp(1))
	r = cs.mustStatus(t, 200, "GET", "/api/webhooks?offset=2&limit=1", "")
	checkEnvelope(t, r.body, "webhooks", 1, 3, 2, 1, nil)
	r = cs.mustStatus(t, 200, "GET", "/api/webhooks?offset=9", "")
	checkEnvelope(t, r.body, "webhooks", 0, 3, 9, 1000, nil)
	cs.mustStatus(t, 400, "GET", "/api/webhooks?limit=0", "")

	r = cs.mustStatus(t, 200, "GET", "/api/webhooks/events?limit=2", "")
	var arr []map[string]any
	if err := json.Unmarshal(r.body, &arr); err != nil || len(arr) != 2 {
		t.Fatalf("events page %s: %v", r.body, err)
	}
	if r.header.Get("X-Total-Count") != "3" || !strings.Contains(r.header.Get("Link"), "offset=2&limit=2") {
		t.Fatalf("headers %v", r.header)
	}
	cs.mustStatus(t, 400, "GET", "/api/webhooks/events?offset=x", "")
}
