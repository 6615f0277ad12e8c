package ntfy_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/ntfy"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
)

func setup(t *testing.T) (*channeltest.Harness, *ntfytest.Server) {
	srv := ntfytest.New()
	t.Cleanup(srv.Close)
	return channeltest.New(t, channel.Builders{"ntfy": ntfy.New}), srv
}

func configure(h *channeltest.Harness, srv *ntfytest.Server, token string) {
	h.Configure("ntfy", map[string]any{"token": token, "server_url": srv.URL, "topic": "fang", "agent_name": channeltest.AgentName})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func isReply(text string) func(ntfytest.Message) bool {
	return func(m ntfytest.Message) bool { return m.Message == text && slices.Contains(m.Tags, ntfy.ReplyTag) }
}

func TestInboundReachesAgentAndReplyArrives(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, ntfytest.BotToken)
	h.WaitState("ntfy", channel.StateConnected)
	if err := srv.WaitSubscribers(ctx(t), "fang", 1); err != nil {
		t.Fatal(err)
	}
	srv.Publish("fang", "phone", "hello agent")
	if _, err := srv.WaitMessage(ctx(t), isReply("echo: hello agent")); err != nil {
		t.Fatal(err)
	}
	srv.Publish("fang", "phone", "again")
	if _, err := srv.WaitMessage(ctx(t), isReply("echo: again")); err != nil {
		t.Fatal(err)
	}
	if turns := h.Agents.Turns(); len(turns) != 2 || turns[0].Message != "hello agent" {
		t.Fatalf("turns = %+v (replies must not be answered)", turns)
	}
}

func TestBadTokenIsErrorWithoutRetryStorm(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, "tk_nope")
	v := h.WaitState("ntfy", channel.StateError)
	if !strings.Contains(v.LastError, "unauthorized") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	time.Sleep(300 * time.Millisecond)
	if n := srv.Requests("GET /v1/account"); n != 1 {
		t.Fatalf("account checked %d times, want 1", n)
	}
}

func TestOutageBacksOffRecoversAndCatchesUp(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, ntfytest.BotToken)
	h.WaitState("ntfy", channel.StateConnected)
	_ = srv.WaitSubscribers(ctx(t), "fang", 1)
	srv.Publish("fang", "phone", "before")
	if _, err := srv.WaitMessage(ctx(t), isReply("echo: before")); err != nil {
		t.Fatal(err)
	}
	srv.SetDown(true)
	h.WaitState("ntfy", channel.StateBackoff)
	n := srv.Requests("GET /v1/account")
	h.WaitFor("reconnect attempts", func() bool { return srv.Requests("GET /v1/account") >= n+2 })
	// Published while fangd could not listen; the server caches it.
	srv.SetDown(false)
	srv.Publish("fang", "phone", "during")
	h.WaitState("ntfy", channel.StateConnected)
	if _, err := srv.WaitMessage(ctx(t), isReply("echo: during")); err != nil {
		t.Fatal(err)
	}
	if turns := h.Agents.Turns(); len(turns) != 2 {
		t.Fatalf("turns = %+v (nothing replayed twice)", turns)
	}
}

func TestRepliesQueuedSurviveRestart(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, ntfytest.BotToken)
	h.WaitState("ntfy", channel.StateConnected)
	_ = srv.WaitSubscribers(ctx(t), "fang", 1)
	h.Agents.SetReply(func(_, m string) (string, error) {
		srv.SetDown(true)
		return "pong", nil
	})
	srv.Publish("fang", "phone", "ping")
	h.WaitFor("reply queued", func() bool { return h.Get("ntfy").OutboxPending == 1 })
	h.Restart()
	h.WaitFor("reply still queued after restart", func() bool { return h.Get("ntfy").OutboxPending == 1 })
	srv.SetDown(false)
	if _, err := srv.WaitMessage(ctx(t), isReply("pong")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if turns := h.Agents.Turns(); len(turns) != 1 {
		t.Fatalf("turns = %+v: the message must not be answered twice after restart", turns)
	}
}
