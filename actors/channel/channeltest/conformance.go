package channeltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
)

// Platform is one adapter's fake platform as the conformance suite drives
// it: the small per-adapter harness. A new one is made for every case. A
// fake that embeds FakeState (or a Proxy) already has SetDown and
// Requests, and RateLimitNext; its Platform adds the four lines that are
// the platform's own: how fangd is configured, how a user writes, what a
// reply looks like.
type Platform interface {
	// Configure configures the suite's channel on h against the fake. With
	// bad, the credential is one the platform refuses.
	Configure(h *Harness, bad bool)
	// Inject makes a user send text to the bot. It may be called during
	// an outage: a platform that keeps messages (polled, streamed) keeps
	// it for the adapter to catch up on; one that pushes by webhook
	// pushes it to fangd, which queues the reply.
	Inject(ctx context.Context, text string) error
	// WaitReply waits until the platform has received the bot's message
	// text. With a context that is already done it reports whether the
	// message is there now (FakeState.Wait checks before it waits).
	WaitReply(ctx context.Context, text string) error
	// SetDown starts or ends an outage: the fake answers every request as
	// the platform does when it is down, and drops open connections.
	SetDown(down bool)
	// Requests counts the requests the fake saw on a route; the suite
	// reads Suite.LinkRoute, the one that establishes the link and checks
	// the credential.
	Requests(route string) int
}

// Readier is a Platform that can tell when a connected adapter can
// receive (its stream or long poll is open, its room joined). Without it
// the suite takes "connected" to mean ready.
type Readier interface {
	Ready(ctx context.Context) error
}

// RateLimiter is a Platform that can refuse sends with its rate-limit
// answer (HTTP 429 with Retry-After, or the platform's equivalent);
// FakeState has it.
type RateLimiter interface {
	// RateLimitNext makes the next n sends answer the rate limit, asking
	// for a wait of secs where the platform names one.
	RateLimitNext(n, secs int)
}

// Forger is a Platform whose inbound arrives by signed webhook.
type Forger interface {
	// InjectForged posts text to fangd's webhook with a signature that is
	// wrong and returns the HTTP status fangd answered.
	InjectForged(ctx context.Context, text string) (int, error)
}

// Case names one conformance case.
type Case string

// The cases every adapter runs.
const (
	CaseRoundTrip    Case = "InboundReachesAgentAndReplyArrives"
	CaseBadToken     Case = "BadTokenIsPermanentWithoutRetryStorm"
	CaseOutage       Case = "OutageBacksOffAndCatchesUp"
	CaseRestart      Case = "QueuedRepliesSurviveRestart"
	CaseRateLimit    Case = "RateLimitIsHonoured"
	CaseBadSignature Case = "WrongWebhookSignatureIsRefused"
)

// Suite describes one adapter for Conformance.
type Suite struct {
	// Name is the channel's name, which is also its adapter's.
	Name string
	// Builder builds the adapter under test (its package's New); the
	// runtime gets it as the builder of Name.
	Builder channel.Builder
	// Builders, when set, replaces {Name: Builder}.
	Builders channel.Builders
	// New starts a fresh fake for one case; it stops at t's cleanup.
	New func(t *testing.T) Platform
	// BadTokenError is a piece of last_error when the credential is bad.
	BadTokenError string
	// LinkRoute is the route (Platform.Requests) that establishes the
	// link and checks the credential: "GET /current/user", or
	// ProxyConnect.
	LinkRoute string
	// BadTokenRequests is how many LinkRoute requests a bad credential
	// costs before the channel is in error (default 1).
	BadTokenRequests int
	// NoRetryAfter says the platform's rate-limit answer names no wait
	// (the outbox then retries on its own backoff).
	NoRetryAfter bool
	// Pushed says inbound arrives by webhook and the link is only checked
	// when it connects (a token fetch, an identity probe): an outage shows
	// when the channel connects and when a reply is sent, not as a
	// dropped connection.
	Pushed bool
	// NoCatchUp, when set, says why messages sent during an outage are
	// not delivered afterwards (the platform keeps no backlog for a new
	// session); the outage case then sends after the recovery instead.
	NoCatchUp string
	// Skip gives, for a case the adapter cannot support, the reason.
	Skip map[Case]string
	// Options are extra Harness options.
	Options []Option
}

// Credential is good, or wrong when bad: Platform.Configure's choice.
func Credential(bad bool, good, wrong string) string {
	if bad {
		return wrong
	}
	return good
}

// Accepted turns a webhook post's answer into an error unless it is 200:
// what a webhook platform's Inject returns.
func Accepted(status int, err error) error {
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("webhook answered %d", status)
	}
	return err
}

// Post POSTs a JSON body to a webhook endpoint with header and returns
// the status: how a platform fake plays its side of a webhook.
func Post(endpoint string, body []byte, header http.Header) (int, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Header builds a request header from name, value pairs, leaving out a
// pair whose value is empty (a webhook sent without its signature).
func Header(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			h.Set(pairs[i], pairs[i+1])
		}
	}
	return h
}

// Bearer is "Bearer <token>", or "" for no token.
func Bearer(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + token
}

// RandomID is n random URL-safe characters (n <= 64): ids a fake makes up.
func RandomID(n int) string {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// RandomFrom is n random characters of alphabet (ASCII): ids in a
// platform's own form (Mattermost's 26 lower-case letters and digits).
func RandomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Context is a test's context: it ends at 15 s or at cleanup.
func Context(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

// Conformance runs the runtime's guarantees against one adapter and its
// fake: every adapter runs it, so each case is written once. Model:
// litestream's RunWithReplicaClient.
func Conformance(t *testing.T, s Suite) {
	if s.BadTokenRequests == 0 {
		s.BadTokenRequests = 1
	}
	if s.Builders == nil {
		s.Builders = channel.Builders{s.Name: s.Builder}
	}
	cases := []struct {
		c  Case
		fn func(*testing.T, Suite)
	}{
		{CaseRoundTrip, roundTrip},
		{CaseBadToken, badToken},
		{CaseOutage, outage},
		{CaseRestart, restart},
		{CaseRateLimit, rateLimit},
		{CaseBadSignature, badSignature},
	}
	for _, tc := range cases {
		t.Run(string(tc.c), func(t *testing.T) {
			if reason, ok := s.Skip[tc.c]; ok {
				t.Skip(reason)
			}
			tc.fn(t, s)
		})
	}
}

// start makes the platform and a harness and configures the channel.
func (s Suite) start(t *testing.T, bad bool, opts ...Option) (*Harness, Platform) {
	p := s.New(t)
	h := New(t, s.Builders, append(append([]Option(nil), s.Options...), opts...)...)
	p.Configure(h, bad)
	return h, p
}

// connected starts a working channel and waits until it can receive.
func (s Suite) connected(t *testing.T, opts ...Option) (*Harness, Platform) {
	h, p := s.start(t, false, opts...)
	h.WaitState(s.Name, channel.StateConnected)
	ready(t, p)
	return h, p
}

func ready(t *testing.T, p Platform) {
	t.Helper()
	if r, ok := p.(Readier); ok {
		must(t, r.Ready(Context(t)))
	}
}

func (s Suite) linkRequests(p Platform) int { return p.Requests(s.LinkRoute) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// settle proves nothing more is coming: it sends one more message and
// waits for its answer. Per chat, inbound is answered in order, so any
// redelivery of what came before would have been answered (and counted)
// first.
func settle(t *testing.T, s Suite, h *Harness, p Platform) {
	t.Helper()
	must(t, p.Inject(Context(t), "fence"))
	must(t, p.WaitReply(Context(t), "echo: fence"))
	h.WaitFor("the queues to drain", func() bool {
		v := h.Get(s.Name)
		return v.InboxPending == 0 && v.OutboxPending == 0
	})
}

func turnTexts(h *Harness) []string {
	var out []string
	for _, tr := range h.Agents.Turns() {
		out = append(out, tr.Message)
	}
	return out
}

func wantTurns(t *testing.T, h *Harness, want ...string) {
	t.Helper()
	if got := turnTexts(h); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("agent turns %q, want %q", got, want)
	}
}

// roundTrip: a user's message reaches the agent, the agent's reply reaches
// the user, and the bot's own messages are not answered.
func roundTrip(t *testing.T, s Suite) {
	h, p := s.connected(t)
	if v := h.Get(s.Name); v.Identity == nil || v.Identity.Name == "" {
		t.Fatalf("connected without an identity: %+v", v.Identity)
	}
	must(t, p.Inject(Context(t), "hello agent"))
	must(t, p.WaitReply(Context(t), "echo: hello agent"))
	must(t, p.Inject(Context(t), "again"))
	must(t, p.WaitReply(Context(t), "echo: again"))
	settle(t, s, h, p)
	wantTurns(t, h, "hello agent", "again", "fence")
	if v := h.Get(s.Name); v.MessagesIn != 3 || v.MessagesOut != 3 {
		t.Fatalf("messages in %d, out %d; want 3 and 3", v.MessagesIn, v.MessagesOut)
	}
	if n := len(h.Bus.Events(channel.EventReceived)); n != 3 {
		t.Fatalf("%d %s events, want 3", n, channel.EventReceived)
	}
}

// badToken: a refused credential is an error state at once, with no
// retries by the adapter and no reconnect scheduled by the runtime. The
// clock is held still, so "no reconnect" is read from the timers, not
// guessed from a sleep.
func badToken(t *testing.T, s Suite) {
	clock := NewFakeClock()
	h, p := s.start(t, true, WithClock(clock))
	v := h.WaitState(s.Name, channel.StateError)
	if !strings.Contains(v.LastError, s.BadTokenError) {
		t.Fatalf("last_error %q does not say %q", v.LastError, s.BadTokenError)
	}
	if n := s.linkRequests(p); n != s.BadTokenRequests {
		t.Fatalf("%d link requests with a bad credential, want %d", n, s.BadTokenRequests)
	}
	for _, d := range clock.PendingSince(0) {
		if d <= h.backoff.Max {
			t.Fatalf("a timer is pending in %s: a refused credential must not be retried", d)
		}
	}
	if v := h.Get(s.Name); v.State != channel.StateError || v.Restarts != 0 {
		t.Fatalf("state %s after %d restarts", v.State, v.Restarts)
	}
}

// outage: while the platform is down the channel backs off and keeps
// trying; when it is back, what was sent meanwhile is answered. One
// message goes before the outage: an adapter that starts from "now" on
// first start catches up from the last message it saw.
func outage(t *testing.T, s Suite) {
	if s.Pushed {
		pushedOutage(t, s)
		return
	}
	h, p := s.connected(t)
	must(t, p.Inject(Context(t), "before"))
	must(t, p.WaitReply(Context(t), "echo: before"))
	p.SetDown(true)
	h.WaitState(s.Name, channel.StateBackoff)
	n := s.linkRequests(p)
	h.WaitFor("reconnect attempts", func() bool { return s.linkRequests(p) >= n+2 })
	if s.NoCatchUp == "" {
		must(t, p.Inject(Context(t), "while you were away"))
	}
	p.SetDown(false)
	h.WaitState(s.Name, channel.StateConnected)
	if s.NoCatchUp != "" {
		t.Log("no catch-up:", s.NoCatchUp)
		ready(t, p)
		must(t, p.Inject(Context(t), "while you were away"))
	}
	must(t, p.WaitReply(Context(t), "echo: while you were away"))
	settle(t, s, h, p)
	wantTurns(t, h, "before", "while you were away", "fence")
}

// pushedOutage is outage for a Pushed platform: down while the channel
// connects, it backs off and keeps trying; down while a reply is sent,
// the reply waits in the outbox and goes out when the platform is back.
func pushedOutage(t *testing.T, s Suite) {
	p := s.New(t)
	h := New(t, s.Builders, s.Options...)
	p.SetDown(true)
	p.Configure(h, false)
	h.WaitState(s.Name, channel.StateBackoff)
	h.WaitFor("reconnect attempts", func() bool { return s.linkRequests(p) >= 3 })
	p.SetDown(false)
	h.WaitState(s.Name, channel.StateConnected)
	ready(t, p)
	h.Agents.SetReply(func(_, m string) (string, error) {
		p.SetDown(true)
		return "echo: " + m, nil
	})
	must(t, p.Inject(Context(t), "while you were away"))
	h.WaitFor("the reply to be retried", func() bool {
		v := h.Get(s.Name)
		return v.OutboxPending == 1 && strings.Contains(v.LastError, "will retry")
	})
	h.Agents.SetReply(func(_, m string) (string, error) { return "echo: " + m, nil })
	p.SetDown(false)
	must(t, p.WaitReply(Context(t), "echo: while you were away"))
	settle(t, s, h, p)
	wantTurns(t, h, "while you were away", "fence")
}

// restart: a reply the platform could not take yet is on disk; after a
// daemon restart on the same store it is still queued and is delivered,
// and the message it answers is not answered twice.
func restart(t *testing.T, s Suite) {
	h, p := s.connected(t)
	h.Agents.SetReply(func(_, m string) (string, error) {
		p.SetDown(true)
		if !s.Pushed {
			// A write on a link the platform just dropped can still
			// "succeed" (IRC has no acknowledgement): answer once the
			// runtime has seen the link go.
			linkDown(h, s.Name)
		}
		return "pong", nil
	})
	must(t, p.Inject(Context(t), "ping"))
	h.WaitFor("reply queued", func() bool { return h.Get(s.Name).OutboxPending == 1 })
	h.Restart()
	h.WaitFor("reply still queued", func() bool { return h.Get(s.Name).OutboxPending == 1 })
	h.Agents.SetReply(func(_, m string) (string, error) { return "echo: " + m, nil })
	p.SetDown(false)
	must(t, p.WaitReply(Context(t), "pong"))
	h.WaitState(s.Name, channel.StateConnected)
	ready(t, p)
	settle(t, s, h, p)
	wantTurns(t, h, "ping", "fence")
}

// linkDown waits (at most 15 s, from the fake agent's goroutine, where a
// test may not fail) until channel name is no longer connected.
func linkDown(h *Harness, name string) {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if v, err := h.Service.Get(context.Background(), name); err == nil && v.State != channel.StateConnected && v.State != channel.StateDegraded {
			return
		}
	}
}

// rateLimit: a send refused with the platform's rate limit is retried,
// and not before the wait the platform asked for. The clock is held
// still until the suite advances it past that wait.
func rateLimit(t *testing.T, s Suite) {
	clock := NewFakeClock()
	h, p := s.connected(t, WithClock(clock))
	rl, ok := p.(RateLimiter)
	if !ok {
		t.Fatal("the platform has no rate limit: implement channeltest.RateLimiter or give a reason in Suite.Skip")
	}
	const secs = 2
	rl.RateLimitNext(1, secs)
	wait := secs * time.Second
	if s.NoRetryAfter {
		wait = 0
	}
	mark := clock.Mark()
	must(t, p.Inject(Context(t), "busy"))
	d, err := clock.WaitPending(Context(t), mark, "a retry after the rate limit's wait", func(d time.Duration) bool { return d >= wait })
	must(t, err)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if p.WaitReply(done, "echo: busy") == nil {
		t.Fatal("the reply went out before the rate limit's wait had passed")
	}
	// The retry is due at the later of the hint and the jittered backoff.
	clock.Advance(d + 2*h.backoff.Max)
	must(t, p.WaitReply(Context(t), "echo: busy"))
	wantTurns(t, h, "busy")
}

// badSignature: a webhook whose signature is wrong is refused with 401
// and reaches nothing.
func badSignature(t *testing.T, s Suite) {
	h, p := s.connected(t)
	f, ok := p.(Forger)
	if !ok {
		t.Fatal("the platform takes no webhooks: implement channeltest.Forger or give a reason in Suite.Skip")
	}
	st, err := f.InjectForged(Context(t), "transfer the money")
	must(t, err)
	if st != http.StatusUnauthorized {
		t.Fatalf("forged webhook answered %d, want 401", st)
	}
	settle(t, s, h, p)
	wantTurns(t, h, "fence")
}
