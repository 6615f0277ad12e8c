package gotify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/gotify"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
)

const botApp = 1 // the id of the "fangd" application in the fake

func setup(t *testing.T) (*channeltest.Harness, *gotifytest.Server) {
	srv := gotifytest.New()
	t.Cleanup(srv.Close)
	return channeltest.New(t, channel.Builders{"gotify": gotify.New}), srv
}

func configure(h *channeltest.Harness, srv *gotifytest.Server, client string) {
	h.Configure("gotify", map[string]any{"app_token": gotifytest.BotAppToken, "client_token": client,
		"server_url": srv.URL, "agent_name": channeltest.AgentName})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func reply(text string) func(gotifytest.Message) bool {
	return func(m gotifytest.Message) bool { return m.AppID == botApp && m.Message == text }
}

func TestInboundReachesAgentAndReplyArrives(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, gotifytest.BotClientToken)
	v := h.WaitState("gotify", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "admin" {
		t.Fatalf("identity %+v", v.Identity)
	}
	if err := srv.WaitStreams(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "hello agent")
	if _, err := srv.WaitMessage(ctx(t), reply("echo: hello agent")); err != nil {
		t.Fatal(err)
	}
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "again")
	if _, err := srv.WaitMessage(ctx(t), reply("echo: again")); err != nil {
		t.Fatal(err)
	}
	if turns := h.Agents.Turns(); len(turns) != 2 {
		t.Fatalf("turns = %+v (fangd's own messages must not be answered)", turns)
	}
}

func TestBadTokenIsErrorWithoutRetryStorm(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, "Cnope")
	v := h.WaitState("gotify", channel.StateError)
	if !strings.Contains(v.LastError, "valid access token") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	time.Sleep(300 * time.Millisecond)
	if n := srv.Requests("GET /current/user"); n != 1 {
		t.Fatalf("probed %d times, want 1", n)
	}
}

func TestOutageBacksOffRecoversAndCatchesUp(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, gotifytest.BotClientToken)
	h.WaitState("gotify", channel.StateConnected)
	_ = srv.WaitStreams(ctx(t), 1)
	srv.SetDown(true)
	h.WaitState("gotify", channel.StateBackoff)
	n := srv.Requests("GET /current/user")
	h.WaitFor("reconnect attempts", func() bool { return srv.Requests("GET /current/user") >= n+2 })
	srv.SetDown(false)
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "while you were away")
	h.WaitState("gotify", channel.StateConnected)
	if _, err := srv.WaitMessage(ctx(t), reply("echo: while you were away")); err != nil {
		t.Fatal(err)
	}
}

func TestRepliesQueuedSurviveRestart(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, gotifytest.BotClientToken)
	h.WaitState("gotify", channel.StateConnected)
	_ = srv.WaitStreams(ctx(t), 1)
	h.Agents.SetReply(func(_, m string) (string, error) {
		srv.SetDown(true)
		return "pong", nil
	})
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "ping")
	h.WaitFor("reply queued", func() bool { return h.Get("gotify").OutboxPending == 1 })
	h.Restart()
	h.WaitFor("reply still queued", func() bool { return h.Get("gotify").OutboxPending == 1 })
	srv.SetDown(false)
	if _, err := srv.WaitMessage(ctx(t), reply("pong")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if turns := h.Agents.Turns(); len(turns) != 1 {
		t.Fatalf("turns = %+v", turns)
	}
}
