package http

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
)

// suspend holds the messages of the root actor name in its mailbox until
// the returned func resumes it: the actor is alive but does not answer.
func suspend(t *testing.T, k *kernel.Kernel, name string) (resume func()) {
	t.Helper()
	pid := actor.NewPID(k.System.Address(), name)
	p, ok := k.System.ProcessRegistry.Get(pid)
	if !ok {
		t.Fatalf("no actor %s", name)
	}
	p.SendSystemMessage(pid, &actor.SuspendMailbox{})
	return func() { p.SendSystemMessage(pid, &actor.ResumeMailbox{}) }
}

// The request's deadline is [http] request_timeout_secs (Config.
// RequestTimeout), and it reaches the domain call: an actor that does not
// answer makes the request 503 actor_timeout after the configured time,
// not after kernel.DefaultAskTimeout.
func TestRequestTimeoutReachesTheActorAsk(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	ts := newTestServer(t, func(c *Config) { c.RequestTimeout = timeout })
	if r := ts.authed(t, "GET", "/api/audit/verify", ""); r.status != 200 {
		t.Fatalf("verify = %d %s", r.status, r.body)
	}
	resume := suspend(t, ts.deps.Kernel, "audit")
	start := time.Now()
	r := ts.authed(t, "GET", "/api/audit/verify", "")
	took := time.Since(start)
	resume()
	if r.status != 503 || r.envelope(t).Code != "actor_timeout" {
		t.Fatalf("verify with a silent audit actor = %d %s, want 503 actor_timeout", r.status, r.body)
	}
	if took < timeout || took >= kernel.DefaultAskTimeout {
		t.Fatalf("the request took %v, want the configured %v (not the %v default)", took, timeout, kernel.DefaultAskTimeout)
	}
	// The actor answers again once resumed: nothing was left broken.
	if r := ts.authed(t, "GET", "/api/audit/verify", ""); r.status != 200 {
		t.Fatalf("verify after resume = %d %s", r.status, r.body)
	}
}

// The request's contexts end when its handler returns, and carry the
// deadline from the request's arrival.
func TestRequestContextsEndWithTheHandler(t *testing.T) {
	t.Parallel()
	var timedOK, waitOK bool
	var ended func() bool
	// Registered before Serve starts (the extra hook), so no request races it.
	ts := newTestServer(t, func(c *Config) { c.RequestTimeout = time.Minute }, func(s *Server) {
		s.router.GET("/test/reqctx", s.chain("/test/reqctx", routeOpts{}, func(rc *fasthttp.RequestCtx) error {
			timed, wait := s.reqCtx(rc), s.reqCtxWait(rc)
			d, ok := timed.Deadline()
			timedOK = ok && time.Until(d) > 50*time.Second && timed == s.reqCtx(rc)
			_, has := wait.Deadline()
			waitOK = !has && timed.Err() == nil && wait.Err() == nil
			ended = func() bool { return timed.Err() != nil && wait.Err() != nil }
			return nil
		}))
	})
	if r := ts.authed(t, "GET", "/test/reqctx", ""); r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	if !timedOK || !waitOK {
		t.Fatalf("during the handler: timed ok %v, wait ok %v", timedOK, waitOK)
	}
	if !ended() {
		t.Fatal("the request's contexts were not cancelled when its handler returned")
	}
}

// An export's walk runs under its stream's context, which fasthttp's
// Close of the body stream (the response is done, or the client went
// away and the write failed) cancels.
func TestExportStreamCloseCancelsItsWalk(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.seedMany(t, 3)
	w, err := ts.audit.Walk(context.Background(), audit.Filter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := ts.streamCtx()
	x := &exportStream{w: w, ctx: sctx, cancel: cancel, format: "jsonl", left: 1 << 30, closing: ts.closing}
	if _, err := x.Read(make([]byte, 16)); err != nil || sctx.Err() != nil {
		t.Fatalf("read %v, ctx %v: the stream's context ended early", err, sctx.Err())
	}
	x.Close()
	if sctx.Err() == nil {
		t.Fatal("closing the export stream left its context running")
	}
}
