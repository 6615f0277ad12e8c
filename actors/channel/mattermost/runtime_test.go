package mattermost_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/mattermost"
	mm "github.com/fangd/fangd/actors/channel/mattermost/mattermosttest"
)

// These tests drive the adapter through the channels runtime: configure,
// connect, route to the (fake) agent, reply through the outbox.

func setup(t *testing.T) (*channeltest.Harness, *mm.Server) {
	srv := mm.New()
	t.Cleanup(srv.Close)
	h := channeltest.New(t, channel.Builders{"mattermost": mattermost.New})
	return h, srv
}

func configure(h *channeltest.Harness, srv *mm.Server, token string) {
	h.Configure("mattermost", map[string]any{"token": token, "server_url": srv.URL, "agent_name": channeltest.AgentName})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestInboundReachesAgentAndReplyArrives(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, mm.BotToken)
	v := h.WaitState("mattermost", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "fangbot" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	if err := srv.WaitConnected(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	p := srv.Say(mm.Alice, mm.TownSquare.ID, "hello agent", "")
	reply, err := srv.WaitPost(ctx(t), func(q mm.Post) bool { return q.UserID == mm.Bot.ID })
	if err != nil {
		t.Fatal(err)
	}
	if reply.Message != "echo: hello agent" || reply.ChannelID != mm.TownSquare.ID || reply.RootID != p.ID {
		t.Fatalf("reply = %+v", reply)
	}
	turns := h.Agents.Turns()
	if len(turns) != 1 || turns[0].AgentID != channeltest.AgentID || turns[0].Message != "hello agent" {
		t.Fatalf("turns = %+v", turns)
	}
	if len(h.Bus.Events(channel.EventReceived)) == 0 {
		t.Fatal("no message.received event")
	}
	// The bot's reply came back over the websocket; it must not start a
	// conversation with itself.
	srv.Say(mm.Alice, mm.TownSquare.ID, "second", p.ID)
	h.WaitFor("second reply", func() bool { return len(srv.Posts(mm.TownSquare.ID)) == 4 })
	if n := len(h.Agents.Turns()); n != 2 {
		t.Fatalf("agent turns = %d, want 2 (no loop on own posts)", n)
	}
}

func TestBadTokenIsErrorWithoutRetryStorm(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, "not-a-token")
	v := h.WaitState("mattermost", channel.StateError)
	if !strings.Contains(v.LastError, "Invalid or expired session") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	time.Sleep(300 * time.Millisecond) // several FastBackoff periods
	if n := srv.Requests("GET /api/v4/users/me"); n != 1 {
		t.Fatalf("users/me called %d times with a bad token, want 1", n)
	}
	configure(h, srv, mm.BotToken)
	h.WaitState("mattermost", channel.StateConnected)
}

func TestOutageBacksOffAndRecovers(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, mm.BotToken)
	h.WaitState("mattermost", channel.StateConnected)
	srv.SetDown(true)
	v := h.WaitState("mattermost", channel.StateBackoff)
	if v.LastError == "" || v.NextRetryAt == nil {
		t.Fatalf("backoff view = %+v", v.Status)
	}
	before := srv.Requests("GET /api/v4/users/me")
	h.WaitFor("reconnect attempts", func() bool { return srv.Requests("GET /api/v4/users/me") >= before+2 })
	srv.SetDown(false)
	h.WaitState("mattermost", channel.StateConnected)
	if err := srv.WaitConnected(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	srv.Say(mm.Alice, mm.TownSquare.ID, "back?", "")
	if _, err := srv.WaitPost(ctx(t), func(q mm.Post) bool { return q.Message == "echo: back?" }); err != nil {
		t.Fatal(err)
	}
}

func TestRepliesQueuedSurviveRestart(t *testing.T) {
	h, srv := setup(t)
	configure(h, srv, mm.BotToken)
	h.WaitState("mattermost", channel.StateConnected)
	_ = srv.WaitConnected(ctx(t), 1)
	h.Agents.SetReply(func(_, m string) (string, error) {
		srv.SetDown(true) // the server goes away while the agent thinks
		return "pong", nil
	})
	srv.Say(mm.Alice, mm.TownSquare.ID, "ping", "")
	h.WaitFor("reply queued", func() bool { return h.Get("mattermost").OutboxPending == 1 })
	if _, err := h.Service.SendMessage(context.Background(), "mattermost", mm.TownSquare.ID, "queued by comms", "system"); err != nil {
		t.Fatal(err)
	}
	h.Restart()
	h.WaitFor("replies still queued after restart", func() bool { return h.Get("mattermost").OutboxPending == 2 })
	srv.SetDown(false)
	h.WaitFor("queued replies delivered", func() bool { return len(srv.Posts(mm.TownSquare.ID)) == 3 })
	posts := srv.Posts(mm.TownSquare.ID)
	if posts[1].Message != "pong" || posts[1].RootID != posts[0].ID || posts[2].Message != "queued by comms" {
		t.Fatalf("posts = %+v", posts)
	}
}

func TestPostsMissedDuringOutageAreAnswered(t *testing.T) {
	h, srv := setup(t)
	h.Configure("mattermost", map[string]any{"token": mm.BotToken, "server_url": srv.URL,
		"agent_name": channeltest.AgentName, "allowed_users": []string{"alice"}})
	h.WaitState("mattermost", channel.StateConnected)
	_ = srv.WaitConnected(ctx(t), 1)
	srv.Say(mm.Alice, mm.TownSquare.ID, "before", "")
	if _, err := srv.WaitPost(ctx(t), func(q mm.Post) bool { return q.Message == "echo: before" }); err != nil {
		t.Fatal(err)
	}
	srv.SetDown(true)
	h.WaitState("mattermost", channel.StateBackoff)
	// Typed while fangd could not listen.
	missed := srv.Say(mm.Alice, mm.TownSquare.ID, "during", "")
	srv.SetDown(false)
	reply, err := srv.WaitPost(ctx(t), func(q mm.Post) bool { return q.Message == "echo: during" })
	if err != nil {
		t.Fatal(err)
	}
	if reply.RootID != missed.ID {
		t.Fatalf("reply %+v not threaded under %s", reply, missed.ID)
	}
	h.Restart() // and nothing is answered twice after a restart
	h.WaitState("mattermost", channel.StateConnected)
	srv.Say(mm.Alice, mm.TownSquare.ID, "after", "")
	if _, err := srv.WaitPost(ctx(t), func(q mm.Post) bool { return q.Message == "echo: after" }); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, tr := range h.Agents.Turns() {
		msgs = append(msgs, tr.Message)
	}
	if strings.Join(msgs, ",") != "before,during,after" {
		t.Fatalf("agent saw %v", msgs)
	}
}
