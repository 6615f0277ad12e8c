package http

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// /api/ready is public, answers 200 with each check named while the
// daemon can serve, and 503 once it is shutting down.
func TestReadyAnswersChecksAndTurnsUnreadyOnShutdown(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	res := ts.do(t, "GET", "/api/ready", "")
	code, body := res.status, res.body
	var r struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	json.Unmarshal(body, &r)
	if code != 200 || !r.Ready || r.Checks["store"] != "ok" || r.Checks["audit"] != "ok" || r.Checks["shutting_down"] != "ok" {
		t.Fatalf("ready: %d %s", code, body)
	}
	ts.closeOnce.Do(func() { close(ts.closing) })
	res = ts.do(t, "GET", "/api/ready", "")
	code, body = res.status, res.body
	if code != 503 || !strings.Contains(string(body), `"shutting_down":"failed"`) {
		t.Fatalf("ready while shutting down: %d %s", code, body)
	}
}

// With [log] access_log one line per request names the route, status,
// duration in ms and the request id, and never the API key.
func TestAccessLogLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := &Server{cfg: Config{AccessLog: true}, log: zerolog.New(&buf)}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/api/agents?x=1")
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.Header.Set("Authorization", "Bearer sekrit-key")
	ctx.SetUserValue(userActor, "api_key")
	ctx.SetStatusCode(404)
	s.accessLog(&ctx, "/api/agents", ctx.Time())
	line := buf.String()
	for _, want := range []string{`"method":"GET"`, `"route":"/api/agents"`, `"status":404`, `"duration_ms":`, `"identity":"api_key"`, `"message":"request"`} {
		if !strings.Contains(line, want) {
			t.Fatalf("access log lacks %s: %s", want, line)
		}
	}
	if strings.Contains(line, "sekrit") {
		t.Fatal("the credential reached the access log")
	}
}
