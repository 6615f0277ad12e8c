package http

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

const fwdSecret = "sk-fangd-forward-secret-93ab"

// elsewhereErr is what the channel service answers for a channel node
// "n2" hosts.
func elsewhereErr() error {
	e := kernel.Errorf(kernel.KindConflict, "hosted_elsewhere", "channel tg runs on cluster node n2")
	e.Err = &channel.HostedElsewhere{Channel: "tg", Node: "n2"}
	return e
}

func fwdRequest(extra map[string]string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/api/channels/tg/test?probe=1")
	req.Header.Set("Authorization", "Bearer "+fwdSecret)
	req.Header.SetContentType("application/json")
	req.Header.Set("Cookie", "session=not-forwarded")
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	req.SetBodyString(`{"chat_id":"42"}`)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	return ctx
}

type seenReq struct {
	method, uri, auth, fwd, cookie, ctype, body string
}

func fakeHost(t *testing.T, status int, ctype, body string) (*httptest.Server, func() []seenReq) {
	t.Helper()
	var mu sync.Mutex
	var seen []seenReq
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, seenReq{r.Method, r.RequestURI, r.Header.Get("Authorization"), r.Header.Get(forwardedHeader),
			r.Header.Get("Cookie"), r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seenReq {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenReq{}, seen...)
	}
}

func testRouter(urls map[string]string, logs io.Writer) *hostRouter {
	return newHostRouter("n1", func(_ context.Context, node string) (string, error) {
		if u, ok := urls[node]; ok {
			return u, nil
		}
		return "", errors.New("cluster: node " + node + " is not up")
	}, zerolog.New(logs))
}

func TestForwardRelaysHostAnswerWithCredential(t *testing.T) {
	t.Parallel()
	srv, seen := fakeHost(t, 202, "application/problem+json", `{"ok":true,"from":"n2"}`)
	r := testRouter(map[string]string{"n2": srv.URL}, io.Discard)
	ctx := fwdRequest(nil)
	if err := r.route(ctx, elsewhereErr()); err != nil {
		t.Fatalf("route: %v", err)
	}
	if ctx.Response.StatusCode() != 202 || string(ctx.Response.Body()) != `{"ok":true,"from":"n2"}` ||
		string(ctx.Response.Header.ContentType()) != "application/problem+json" {
		t.Fatalf("relayed %d %q %q", ctx.Response.StatusCode(), ctx.Response.Header.ContentType(), ctx.Response.Body())
	}
	got := seen()
	want := seenReq{"POST", "/api/channels/tg/test?probe=1", "Bearer " + fwdSecret, "n1", "", "application/json", `{"chat_id":"42"}`}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("host saw %+v, want one %+v", got, want)
	}
	if d, _ := ctx.UserValue(userAudit).(string); !strings.Contains(d, "n2") {
		t.Fatalf("audit details %q do not name the host", d)
	}
}

func TestForwardLoopGuardAndOtherErrors(t *testing.T) {
	t.Parallel()
	srv, seen := fakeHost(t, 200, "application/json", `{}`)
	r := testRouter(map[string]string{"n2": srv.URL}, io.Discard)
	in := elsewhereErr()
	// Already forwarded once: never forwarded again; the 409 stands.
	if err := r.route(fwdRequest(map[string]string{forwardedHeader: "n3"}), in); err != in {
		t.Fatalf("forwarded request: got %v, want the original error", err)
	}
	// Errors that are not "hosted elsewhere" pass through.
	other := kernel.NotFound("nope")
	if err := r.route(fwdRequest(nil), other); err != other {
		t.Fatalf("other error: got %v", err)
	}
	// Hosted here (a stale view): no request to ourselves.
	self := kernel.Errorf(kernel.KindConflict, "hosted_elsewhere", "x")
	self.Err = &channel.HostedElsewhere{Channel: "tg", Node: "n1"}
	if err := r.route(fwdRequest(nil), self); err != self {
		t.Fatalf("self: got %v", err)
	}
	// A single node has no router.
	var none *hostRouter
	if err := none.route(fwdRequest(nil), in); err != in {
		t.Fatalf("nil router: got %v", err)
	}
	if n := len(seen()); n != 0 {
		t.Fatalf("host got %d requests, want 0", n)
	}
}

func TestForwardUnreachableHostIs503AndLogsNoSecret(t *testing.T) {
	t.Parallel()
	dead := "http://" + ssrftest.ClosedAddr(t) // connection refused
	var logs bytes.Buffer
	r := testRouter(map[string]string{"n2": dead}, &logs)
	for name, node := range map[string]string{"refused": "n2", "not up": "n9"} {
		e := kernel.Errorf(kernel.KindConflict, "hosted_elsewhere", "x")
		e.Err = &channel.HostedElsewhere{Channel: "tg", Node: node}
		ctx := fwdRequest(nil)
		err := r.route(ctx, e)
		var ae *apiError
		if !errors.As(err, &ae) || ae.status != 503 || ae.code != "host_unreachable" || !strings.Contains(ae.msg, node) {
			t.Fatalf("%s: got %#v, want 503 host_unreachable naming %s", name, err, node)
		}
		if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) != 0 {
			t.Fatalf("%s: response written before the error: %d %q", name, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	if logs.Len() == 0 {
		t.Fatal("the failed forwards were not logged")
	}
	if strings.Contains(logs.String(), fwdSecret) {
		t.Fatalf("log holds the caller's credential: %s", logs.String())
	}
}

func TestForwardTimeoutIs504(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	r := testRouter(map[string]string{"n2": srv.URL}, io.Discard)
	r.timeout = 200 * time.Millisecond
	err := r.route(fwdRequest(nil), elsewhereErr())
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != 504 || ae.code != "host_timeout" {
		t.Fatalf("got %#v, want 504 host_timeout", err)
	}
}
