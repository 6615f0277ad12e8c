package channel_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/httpretry"
)

// platform is an in-memory chat platform the fake adapter talks to.
type platform struct {
	mu       sync.Mutex
	token    string
	down     bool          // every call fails (an outage)
	limited  time.Duration // every call fails with a 429 asking for this wait
	deaf     bool          // Run stays "connected" but delivers nothing; Probe fails
	inbox    chan channel.Inbound
	sent     []channel.Outbound
	connects atomic.Int32
	probes   atomic.Int32
	rejectTo string
	resumed  []string // the "pos" cursor at each Run's start
	taken    string   // the MessageID of the last delivery the host confirmed
}

func newPlatform(token string) *platform {
	return &platform{token: token, inbox: make(chan channel.Inbound, 100)}
}

func (p *platform) set(fn func(p *platform)) { p.mu.Lock(); fn(p); p.mu.Unlock() }

func (p *platform) check(token string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return errors.New("connection refused")
	}
	if p.limited > 0 {
		return channel.RetryAfter(errors.New("429 Too Many Requests"), p.limited)
	}
	if token != p.token {
		return channel.Permanent(errors.New("401 Unauthorized: invalid token"))
	}
	return nil
}

func (p *platform) messages() []channel.Outbound {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]channel.Outbound(nil), p.sent...)
}

// fake is a fake Adapter over a platform.
type fake struct {
	p      *platform
	token  string
	secret string
}

func (f *fake) Run(ctx context.Context, h channel.Host) error {
	f.p.connects.Add(1)
	if err := f.p.check(f.token); err != nil {
		return err
	}
	pos, err := h.Cursor("pos")
	if err != nil {
		return err
	}
	f.p.set(func(p *platform) { p.resumed = append(p.resumed, pos) })
	h.Connected(channel.Identity{ID: "1", Name: "fakebot"})
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-f.p.inbox:
			deliver := func() error { return h.Deliver(ctx, m) }
			if m.MessageID != "" { // a platform with a position to resume from
				cur := channel.Cursor{Key: "pos", Value: m.MessageID}
				deliver = func() error { return h.DeliverAndSave(ctx, cur, m) }
			}
			if err := deliver(); err != nil {
				return err
			}
			f.p.set(func(p *platform) { p.taken = m.MessageID })
		case <-tick.C:
			f.p.mu.Lock()
			down, deaf := f.p.down, f.p.deaf
			f.p.mu.Unlock()
			if down {
				return errors.New("connection reset")
			}
			if !deaf {
				h.Alive()
			}
		}
	}
}

func (f *fake) Send(_ context.Context, m channel.Outbound) (string, error) {
	if err := f.p.check(f.token); err != nil {
		return "", err
	}
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if m.ChatID == f.p.rejectTo {
		return "", channel.Rejected(errors.New("chat not found"))
	}
	f.p.sent = append(f.p.sent, m)
	return fmt.Sprint(len(f.p.sent)), nil
}

func (f *fake) Probe(context.Context) (channel.Identity, error) {
	f.p.probes.Add(1)
	if err := f.p.check(f.token); err != nil {
		return channel.Identity{}, err
	}
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if f.p.deaf {
		return channel.Identity{}, errors.New("probe timed out")
	}
	return channel.Identity{ID: "1", Name: "fakebot"}, nil
}

func (f *fake) Capabilities() channel.Capabilities {
	return channel.Capabilities{MaxMessageLength: 20, Markdown: "none"}
}

// Webhook accepts {"chat","user","text"} signed with hex HMAC-SHA256 in
// X-Signature.
func (f *fake) Webhook(_ context.Context, r *channel.WebhookRequest) (*channel.WebhookResponse, []channel.Inbound, error) {
	mac := hmac.New(sha256.New, []byte(f.secret))
	mac.Write(r.Body)
	if !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(r.Header.Get("X-Signature"))) {
		return nil, nil, channel.ErrBadSignature
	}
	var b struct{ Chat, User, Text string }
	if err := json.Unmarshal(r.Body, &b); err != nil {
		return nil, nil, err
	}
	return &channel.WebhookResponse{Status: 200, Body: []byte("ok")}, []channel.Inbound{{ChatID: b.Chat, UserID: b.User, Text: b.Text}}, nil
}

// connected is the fake platform (token "good") with channel "telegram"
// configured by body and connected.
func connected(t *testing.T, body map[string]any) (*platform, *channeltest.Harness) {
	p := newPlatform("good")
	h := setup(t, p)
	h.Connect("telegram", body)
	return p, h
}

// The fake runs as "telegram" so it has that registry row's schema.
func setup(t *testing.T, p *platform, opts ...channeltest.Option) *channeltest.Harness {
	builders := channel.Builders{"telegram": func(cfg *channel.Config) (channel.Adapter, error) {
		if u := cfg.Text("api_url"); !strings.HasPrefix(u, "http") {
			return nil, &channel.FieldError{Field: "api_url", Msg: "must be an http(s) URL"}
		}
		return &fake{p: p, token: cfg.Secret("bot_token"), secret: cfg.Secret("webhook_secret")}, nil
	}}
	return channeltest.New(t, builders, opts...)
}

func TestInboundReachesAgentAndReplyIsSplit(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	res := h.Configure("telegram", map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	if res.Status != "configured" || !res.Activated || !res.Created {
		t.Fatalf("configure = %+v", res)
	}
	v := h.WaitState("telegram", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "fakebot" || !v.HasToken || v.ConnectedSince == nil {
		t.Fatalf("view = %+v", v)
	}
	p.inbox <- channel.Inbound{ChatID: "42", UserID: "7", Text: "hello there, this is long", MessageID: "m1"}
	h.WaitFor("reply", func() bool { return len(p.messages()) == 2 })
	got := p.messages()
	// "echo: hello there, this is long" is 31 runes: split at 20 on a space.
	if got[0].Text != "echo: hello there," || got[1].Text != "this is long" || got[0].ChatID != "42" || got[0].ReplyTo != "m1" {
		t.Fatalf("sent = %+v", got)
	}
	turns := h.Agents.Turns()
	if len(turns) != 1 || turns[0].AgentID != channeltest.AgentID || turns[0].Session != "channel:telegram:42" {
		t.Fatalf("turns = %+v", turns)
	}
	if ev := h.Bus.Events(channel.EventReceived); len(ev) != 1 || ev[0].Source != "channel:telegram:42" || ev[0].Target != "agent:"+channeltest.AgentID {
		t.Fatalf("received events = %+v", ev)
	}
	h.WaitFor("sent events", func() bool { return len(h.Bus.Events(channel.EventSent)) == 2 })
	// The counters are updated by the channel actor after the send is
	// confirmed, which may come just after the "sent" event: wait for them.
	h.WaitFor("counters", func() bool {
		v = h.Get("telegram")
		return v.MessagesOut == 2 && v.OutboxPending == 0
	})
	if v.MessagesIn != 1 || v.LastMessageAt == nil {
		t.Fatalf("counters = %+v", v.Status)
	}
}

func TestAllowListFilters(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName, "allowed_users": "7, @alice"})
	p.inbox <- channel.Inbound{ChatID: "1", UserID: "8", UserName: "mallory", Text: "hi"}
	p.inbox <- channel.Inbound{ChatID: "2", UserID: "9", UserName: "alice", Text: "hi"}
	h.WaitFor("reply to alice", func() bool { return len(p.messages()) == 1 })
	if m := p.messages()[0]; m.ChatID != "2" {
		t.Fatalf("answered %+v", m)
	}
	if v := h.Get("telegram"); v.Filtered != 1 || v.MessagesIn != 1 {
		t.Fatalf("status = %+v", v.Status)
	}
}

func TestBadTokenIsErrorWithoutRetryStorm(t *testing.T) {
	p := newPlatform("good")
	clock := channeltest.NewFakeClock() // held still: a reconnect would be a pending timer
	h := setup(t, p, channeltest.WithClock(clock))
	h.Configure("telegram", map[string]any{"token": "bad"})
	v := h.WaitState("telegram", channel.StateError)
	if !strings.Contains(v.LastError, "invalid token") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	for _, d := range clock.PendingSince(0) {
		if d <= channeltest.FastBackoff.Max {
			t.Fatalf("a timer is pending in %s: a refused token must not be retried", d)
		}
	}
	if n := p.connects.Load(); n != 1 {
		t.Fatalf("adapter connected %d times with a bad token, want 1", n)
	}
	// Reconfiguring with the right token recovers.
	h.Connect("telegram", map[string]any{"token": "good"})
}

func TestOutageBacksOffAndRecovers(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	p.set(func(p *platform) { p.down = true })
	v := h.WaitState("telegram", channel.StateBackoff)
	if v.NextRetryAt == nil || v.LastError == "" {
		t.Fatalf("backoff view = %+v", v.Status)
	}
	h.WaitFor("several attempts", func() bool { return p.connects.Load() >= 3 })
	p.set(func(p *platform) { p.down = false })
	v = h.WaitState("telegram", channel.StateConnected)
	if v.Restarts == 0 {
		t.Fatal("restarts not counted")
	}
	p.inbox <- channel.Inbound{ChatID: "5", Text: "back?"}
	h.WaitFor("reply after recovery", func() bool { return len(p.messages()) == 1 })
}

// A hostile or buggy platform answering "Retry-After: 999999999" must not
// park the channel for 31 years: the hint is capped at httpretry.MaxWait.
func TestHostileRetryHintIsCapped(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	p.set(func(p *platform) { p.limited = 999999999 * time.Second })
	h.Configure("telegram", map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	v := h.WaitState("telegram", channel.StateBackoff)
	if v.NextRetryAt == nil || time.Until(*v.NextRetryAt) > httpretry.MaxWait {
		t.Fatalf("next retry at %v, more than %v away", v.NextRetryAt, httpretry.MaxWait)
	}
}

func TestRepliesQueuedDuringOutageSurviveRestart(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	// Sends fail (platform down for outbound) but the message was accepted.
	p.set(func(p *platform) { p.rejectTo = "" })
	blocked := make(chan struct{})
	h.Agents.SetReply(func(_, m string) (string, error) {
		p.set(func(p *platform) { p.down = true }) // the platform goes away mid-turn
		close(blocked)
		return "pong", nil
	})
	p.inbox <- channel.Inbound{ChatID: "9", Text: "ping"}
	<-blocked
	h.WaitFor("reply queued", func() bool { return h.Get("telegram").OutboxPending == 1 })
	if _, err := h.Service.SendMessage(context.Background(), "telegram", "10", "queued by comms", "system"); err != nil {
		t.Fatal(err)
	}
	h.Restart()
	h.WaitFor("both replies still queued after restart", func() bool { return h.Get("telegram").OutboxPending == 2 })
	p.set(func(p *platform) { p.down = false })
	h.WaitFor("queued replies delivered", func() bool { return len(p.messages()) == 2 })
	// Different chats are sent concurrently: compare per chat.
	got := map[string]string{}
	for _, m := range p.messages() {
		got[m.ChatID] = m.Text
	}
	if got["9"] != "pong" || got["10"] != "queued by comms" {
		t.Fatalf("delivered %+v", p.messages())
	}
}

// DeliverAndSave stores the cursor with the messages it acknowledges, also
// when nothing in the batch is for the inbox; a restarted adapter resumes
// from it, and each message was answered once.
func TestDeliverAndSaveKeepsTheCursorWithTheMessages(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	p.inbox <- channel.Inbound{ChatID: "5", Text: "one", MessageID: "101"}
	p.inbox <- channel.Inbound{ChatID: "5", Text: "two", MessageID: "102"}
	h.WaitFor("both answered", func() bool { return len(p.messages()) == 2 })
	p.inbox <- channel.Inbound{ChatID: "5", Text: "  ", MessageID: "103"} // nothing to answer
	h.WaitFor("the last delivery confirmed", func() bool {
		var id string
		p.set(func(p *platform) { id = p.taken })
		return id == "103"
	})
	h.Restart()
	h.WaitState("telegram", channel.StateConnected)
	h.WaitFor("the adapter resumed", func() bool {
		var n int
		p.set(func(p *platform) { n = len(p.resumed) })
		return n == 2
	})
	var resumed []string
	p.set(func(p *platform) { resumed = append(resumed, p.resumed...) })
	if resumed[0] != "" || resumed[1] != "103" {
		t.Fatalf("cursor at each start %q, want \"\" then 103", resumed)
	}
	if sent := p.messages(); len(sent) != 2 || sent[0].Text != "echo: one" || sent[1].Text != "echo: two" {
		t.Fatalf("sent %+v", sent)
	}
}

func TestInboxTurnRerunsAfterRestart(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName})
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	t.Cleanup(func() { close(release) })
	h.Agents.SetReply(func(_, m string) (string, error) {
		if calls.Add(1) == 1 {
			close(started)
			<-release // the first turn never answers before the daemon stops
			return "too late", nil
		}
		return "yes", nil
	})
	go func() { p.inbox <- channel.Inbound{ChatID: "3", Text: "are you there"} }()
	<-started
	done := make(chan struct{})
	go func() { h.Restart(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("restart hung on a running turn")
	}
	h.WaitFor("the turn redone and answered", func() bool { return len(p.messages()) == 1 })
	if p.messages()[0].Text != "yes" || p.messages()[0].ChatID != "3" {
		t.Fatalf("sent %+v", p.messages())
	}
}

func TestDeafLinkIsProbedAndReconnected(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "watchdog_secs": 1})
	p.set(func(p *platform) { p.deaf = true })
	h.WaitFor("watchdog probe and reconnect", func() bool { return p.probes.Load() >= 1 && p.connects.Load() >= 2 })
	p.set(func(p *platform) { p.deaf = false })
	v := h.WaitState("telegram", channel.StateConnected)
	if v.Restarts == 0 {
		t.Fatal("reconnect not counted")
	}
}

func TestRejectedMessageIsDropped(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good"})
	p.set(func(p *platform) { p.rejectTo = "nope" })
	h.Service.SendMessage(context.Background(), "telegram", "nope", "x", "")
	h.Service.SendMessage(context.Background(), "telegram", "ok", "y", "")
	h.WaitFor("second delivered", func() bool { return len(p.messages()) == 1 })
	h.WaitFor("failure counted", func() bool { v := h.Get("telegram"); return v.MessagesFailed == 1 && v.OutboxPending == 0 })
}

func TestConfigureValidation(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	cases := []struct {
		name string
		body map[string]any
		kind kernel.Kind
		want string
	}{
		{"telegram", map[string]any{}, kernel.KindInvalid, "bot_token"},
		{"telegram", map[string]any{"token": "x", "nope": 1}, kernel.KindInvalid, "nope"},
		{"telegram", map[string]any{"token": "x", "poll_interval_secs": "soon"}, kernel.KindInvalid, "poll_interval_secs"},
		{"telegram", map[string]any{"token": "x", "allowed_users": 5}, kernel.KindInvalid, "allowed_users"},
		{"telegram", map[string]any{"token": "x", "api_url": "ftp://x"}, kernel.KindInvalid, "api_url"},
		{"telegram", map[string]any{"token": "x", "agent_name": "ghost"}, kernel.KindNotFound, "ghost"},
		{"reddit", map[string]any{"token": "x"}, kernel.KindUnsupported, "not built"},
		{"nosuch", map[string]any{"token": "x"}, kernel.KindNotFound, "nosuch"},
		{"Bad Name", map[string]any{"token": "x"}, kernel.KindInvalid, "name"},
	}
	for _, c := range cases {
		_, err := h.TryConfigure(c.name, c.body)
		e := kernel.AsError(err)
		if e == nil || e.Kind != c.kind || !strings.Contains(e.Msg, c.want) {
			t.Errorf("configure %s %v: err = %v, want kind %d mentioning %q", c.name, c.body, err, c.kind, c.want)
		}
	}
	if _, err := h.TryConfigure("reddit", map[string]any{"token": "x"}); kernel.AsError(err).Code != "adapter_not_supported" {
		t.Fatalf("code = %v", err)
	}
	if v := h.Get("telegram"); v.Configured {
		t.Fatal("a rejected configure left a configuration")
	}
	// LibreFang's {"fields": {...}} form with a "<secret>_env" key.
	if _, err := h.TryConfigure("telegram", map[string]any{"fields": map[string]any{"bot_token_env": "good", "default_agent": channeltest.AgentName}}); err != nil {
		t.Fatal(err)
	}
	v := h.WaitState("telegram", channel.StateConnected)
	if v.AgentName == nil || *v.AgentName != channeltest.AgentName {
		t.Fatalf("agent = %v", v.AgentName)
	}
	for _, f := range v.Fields {
		if f.Type == channel.TypeSecret && f.Value != nil {
			t.Fatalf("secret field %s shows a value", f.Key)
		}
		if f.Key == "bot_token" && !f.HasValue {
			t.Fatal("bot_token has_value false")
		}
	}
	// A reconfigure need not repeat the token.
	h.Connect("telegram", map[string]any{"allowed_users": []string{"1", "2"}})
}

func TestOneAccountOneChannel(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	h.Configure("telegram", map[string]any{"token": "good"})
	_, err := h.TryConfigure("support", map[string]any{"adapter": "telegram", "token": "good"})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindConflict {
		t.Fatalf("second channel with the same token: %v", err)
	}
	// Another token is fine, and the instance is listed after the 44.
	p2 := newPlatform("other")
	_ = p2
	h.Configure("support", map[string]any{"adapter": "telegram", "token": "other"})
	// Reconfiguring the instance need not repeat its adapter (it was a 404
	// "Unknown channel" although the channel was listed).
	if _, err := h.TryConfigure("support", map[string]any{"allowed_users": []string{"1"}}); err != nil {
		t.Fatalf("reconfigure an extra instance without its adapter: %v", err)
	}
	if _, err := h.TryConfigure("nosuch", map[string]any{"token": "x"}); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("an unknown name without an adapter: %v, want not found", err)
	}
	list, err := h.Service.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 45 || list[44].Name != "support" || list[44].Adapter != "telegram" {
		t.Fatalf("list has %d entries, last %+v", len(list), list[len(list)-1].Name)
	}
	conf, _ := h.Service.List(context.Background(), true)
	if len(conf) != 2 {
		t.Fatalf("configured = %d", len(conf))
	}
	unsupported := 0
	for _, v := range list {
		if !v.Supported {
			unsupported++
			if v.State != channel.StateUnsupported {
				t.Fatalf("%s state %s", v.Name, v.State)
			}
		}
	}
	if unsupported != 43 {
		t.Fatalf("unsupported = %d", unsupported)
	}
}

func TestRemoveStopsAndForgets(t *testing.T) {
	_, h := connected(t, map[string]any{"token": "good"})
	if err := h.Service.Remove(context.Background(), "telegram"); err != nil {
		t.Fatal(err)
	}
	if v := h.Get("telegram"); v.Configured || v.State != channel.StateUnconfigured {
		t.Fatalf("after delete: %+v", v)
	}
	if ok, _ := h.Vault.Has("channel/telegram/bot_token"); ok {
		t.Fatal("secret left in the vault")
	}
	if err := h.Service.Remove(context.Background(), "telegram"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatalf("second delete: %v", err)
	}
	// Same token again is allowed after delete.
	h.Connect("telegram", map[string]any{"token": "good"})
}

func TestWebhookSignature(t *testing.T) {
	p, h := connected(t, map[string]any{"token": "good", "agent_name": channeltest.AgentName, "webhook_secret": "s3cret"})
	body := []byte(`{"chat":"77","user":"u","text":"via hook"}`)
	_, err := h.Service.Webhook(context.Background(), "telegram", &channel.WebhookRequest{Method: "POST", Header: http.Header{"X-Signature": {"00"}}, Body: body})
	if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindUnauthorized {
		t.Fatalf("bad signature: %v", err)
	}
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	resp, err := h.Service.Webhook(context.Background(), "telegram", &channel.WebhookRequest{Method: "POST",
		Header: http.Header{"X-Signature": {hex.EncodeToString(mac.Sum(nil))}}, Body: body})
	if err != nil || string(resp.Body) != "ok" {
		t.Fatalf("good signature: %v %v", resp, err)
	}
	h.WaitFor("webhook message answered", func() bool { return len(p.messages()) == 1 })
	if len(h.Agents.Turns()) != 1 {
		t.Fatal("bad-signature webhook was routed")
	}
}

func TestReloadReconciles(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p, channeltest.WithEnv(map[string]string{"TG_TOKEN": "good", "TELEGRAM_BOT_TOKEN": "other"}))
	res, err := h.Service.Apply(context.Background(), map[string]map[string]any{
		"telegram": {"bot_token_env": "TG_TOKEN", "agent_name": channeltest.AgentName},
		"second":   {"adapter": "telegram", "bot_token": "literal"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Started, ",") != "second,telegram" || len(res.Errors) != 0 {
		t.Fatalf("first apply = %+v", res)
	}
	h.WaitState("telegram", channel.StateConnected)
	res, _ = h.Service.Apply(context.Background(), map[string]map[string]any{
		"telegram": {"bot_token_env": "TG_TOKEN", "agent_name": channeltest.AgentName},
		"third":    {"adapter": "telegram", "api_url": "ftp://bad", "bot_token": "x"},
	})
	if strings.Join(res.Unchanged, ",") != "telegram" || strings.Join(res.Stopped, ",") != "second" || len(res.Errors) != 1 {
		t.Fatalf("second apply = %+v", res)
	}
	res, _ = h.Service.Apply(context.Background(), map[string]map[string]any{
		"telegram": {"bot_token_env": "TG_TOKEN", "allowed_users": []any{"1"}},
	})
	if strings.Join(res.Restarted, ",") != "telegram" {
		t.Fatalf("third apply = %+v", res)
	}
	// An API-configured channel is left alone by reload.
	h.Configure("api-one", map[string]any{"adapter": "telegram", "token": "api-token"})
	res, _ = h.Service.Apply(context.Background(), map[string]map[string]any{})
	if strings.Join(res.Stopped, ",") != "telegram" {
		t.Fatalf("fourth apply = %+v", res)
	}
	h.WaitFor("second gone", func() bool { v, _ := h.Service.Get(context.Background(), "second"); return v == nil })
	if !h.Service.Has("api-one") {
		t.Fatal("reload stopped an API-configured channel")
	}
}

// Check reports what Apply would skip and starts nothing.
func TestCheckValidatesWithoutApplying(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p, channeltest.WithEnv(map[string]string{"TG_TOKEN": "good"}))
	problems := h.Service.Check(context.Background(), map[string]map[string]any{
		"telegram": {"bot_token_env": "TG_TOKEN"},
		"third":    {"adapter": "telegram", "api_url": "ftp://bad", "bot_token": "x"},
		"fourth":   {"adapter": "telegram", "bot_token_env": "UNSET_VAR"},
	})
	if len(problems) != 2 || !strings.HasPrefix(problems[0], "channels.fourth: ") || !strings.Contains(problems[0], "UNSET_VAR") ||
		!strings.HasPrefix(problems[1], "channels.third: ") {
		t.Fatalf("problems = %q", problems)
	}
	if h.Service.Has("telegram") {
		t.Fatal("Check started a channel")
	}
}

func TestTestEndpoint(t *testing.T) {
	p := newPlatform("good")
	h := setup(t, p)
	if _, err := h.Service.Test(context.Background(), "telegram", ""); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindPreconditionFailed {
		t.Fatalf("unconfigured test: %v", err)
	}
	h.Configure("telegram", map[string]any{"token": "good"})
	r, err := h.Service.Test(context.Background(), "telegram", "")
	if err != nil || r.Identity == nil || r.Identity.Name != "fakebot" {
		t.Fatalf("probe test: %+v %v", r, err)
	}
	r, err = h.Service.Test(context.Background(), "telegram", "123")
	if err != nil || r.Status != "ok" || len(p.messages()) != 1 || p.messages()[0].Text != channel.TestText {
		t.Fatalf("send test: %+v %v", r, err)
	}
	p.set(func(p *platform) { p.down = true })
	if _, err := h.Service.Test(context.Background(), "telegram", "123"); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindUpstream {
		t.Fatalf("test while down: %v", err)
	}
}
