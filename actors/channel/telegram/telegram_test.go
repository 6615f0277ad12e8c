package telegram_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/kernel"
)

const token = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

func setup(t *testing.T) (*channeltest.Harness, *telegramtest.Server) {
	fake := channeltest.Cleanup(t, telegramtest.New(token))
	h := channeltest.New(t, channel.Builders{"telegram": telegram.New})
	return h, fake
}

func configure(h *channeltest.Harness, fake *telegramtest.Server, extra map[string]any) {
	body := map[string]any{"token": token, "agent_name": channeltest.AgentName, "api_url": fake.URL(), "poll_interval_secs": 1}
	for k, v := range extra {
		body[k] = v
	}
	h.Configure("telegram", body)
}

func TestRoundTrip(t *testing.T) {
	h, fake := setup(t)
	configure(h, fake, nil)
	v := h.WaitState("telegram", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "@fangd_test_bot" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	fake.UserMessage(42, 7, "alice", "hello bot")
	h.WaitFor("reply at the fake", func() bool { return len(fake.Sent()) == 1 })
	s := fake.Sent()[0]
	if s.ChatID != "42" || s.Text != "echo: hello bot" || s.ReplyTo == 0 {
		t.Fatalf("sent = %+v", s)
	}
	if turns := h.Agents.Turns(); len(turns) != 1 || turns[0].Message != "hello bot" || turns[0].Session != "channel:telegram:42" {
		t.Fatalf("turns = %+v", turns)
	}
	// The update was confirmed: a restart does not answer it twice.
	h.WaitFor("offset confirmed", func() bool { return fake.Pending() == 0 })
	h.Restart()
	h.WaitState("telegram", channel.StateConnected)
	fake.UserMessage(42, 7, "alice", "second")
	// Updates are answered in order: had "hello bot" been redelivered, it
	// would have been answered before "second".
	if _, err := fake.WaitSent(channeltest.Context(t), func(s telegramtest.Sent) bool { return s.Text == "echo: second" }); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Agents.Turns()); n != 2 {
		t.Fatalf("%d turns after restart, want 2 (an update was redelivered)", n)
	}
}

func TestLongReplyIsSplit(t *testing.T) {
	h, fake := setup(t)
	h.Agents.SetReply(func(_, _ string) (string, error) {
		return strings.Repeat("word ", 1000) + "\n\n" + strings.Repeat("äöü ", 500), nil
	})
	configure(h, fake, nil)
	h.WaitState("telegram", channel.StateConnected)
	fake.UserMessage(1, 7, "alice", "talk a lot")
	h.WaitFor("pieces", func() bool { return len(fake.Sent()) == 2 })
	for _, s := range fake.Sent() {
		if n := len([]rune(s.Text)); n > telegram.MaxMessageLength {
			t.Fatalf("piece of %d characters", n)
		}
	}
}

func TestTestWithBadTokenIsUpstreamError(t *testing.T) {
	h, fake := setup(t)
	h.Configure("telegram", map[string]any{"token": "999:wrong", "api_url": fake.URL()})
	h.WaitState("telegram", channel.StateError)
	if _, err := h.Service.Test(context.Background(), "telegram", ""); kernel.AsError(err) == nil || kernel.AsError(err).Kind != kernel.KindUpstream {
		t.Fatalf("test with bad token: %v", err)
	}
}

// The webhook is registered with its secret and nothing polls; the
// suite's webhook mode covers what arrives through it.
func TestWebhookModeRegistersAndDoesNotPoll(t *testing.T) {
	h, fake := setup(t)
	configure(h, fake, map[string]any{"webhook_url": "https://bot.example.org/channels/telegram/webhook", "webhook_secret": "s3cret-token"})
	h.WaitState("telegram", channel.StateConnected)
	if url, secret := fake.Webhook(); url != "https://bot.example.org/channels/telegram/webhook" || secret != "s3cret-token" {
		t.Fatalf("setWebhook got %q %q", url, secret)
	}
	if fake.Calls("getUpdates") != 0 {
		t.Fatal("polled in webhook mode")
	}
}
func TestConfigValidation(t *testing.T) {
	h, _ := setup(t)
	for field, body := range map[string]map[string]any{
		"api_url":            {"token": token, "api_url": "telegram.org"},
		"webhook_secret":     {"token": token, "webhook_url": "https://x.example/channels/telegram/webhook"},
		"webhook_url":        {"token": token, "webhook_url": "http://x.example/hook", "webhook_secret": "abc"},
		"poll_interval_secs": {"token": token, "poll_interval_secs": 90},
		"bot_token":          {"token": "12/34"},
	} {
		_, err := h.TryConfigure("telegram", body)
		if e := kernel.AsError(err); e == nil || e.Kind != kernel.KindInvalid || !strings.Contains(e.Msg, field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

// Stopping the channel ends its long poll at once: the Bot API server sees
// the connection of the waiting getUpdates close, long before the poll's
// 50 s would have run out.
func TestStopCancelsLongPoll(t *testing.T) {
	fake := channeltest.Cleanup(t, telegramtest.New(token))
	// Connections in a request (a waiting poll), by the server's view.
	var mu sync.Mutex
	active := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(fake.Server.Config.Handler)
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		if st == http.StateActive {
			active[c] = true
		} else {
			delete(active, c) // idle in the pool, or closed
		}
	}
	inRequest := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(active)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	h := channeltest.New(t, channel.Builders{"telegram": telegram.New})
	h.Connect("telegram", map[string]any{"token": token, "agent_name": channeltest.AgentName, "api_url": srv.URL,
		"poll_interval_secs": 50})
	// Counted at the fake's front door: the poll is in a request.
	h.WaitFor("a getUpdates waiting", func() bool { return fake.Calls("getUpdates") >= 1 })
	h.Stop()
	h.WaitFor("the poll's connection closed", func() bool { return inRequest() == 0 },
		func() string { return fmt.Sprintf("%d connections still in a request", inRequest()) })
}
