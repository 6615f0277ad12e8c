package mattermost

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/mattermost/mattermosttest"
	"github.com/fangd/fangd/transport/httpretry"
)

func build(t *testing.T, srv *mattermosttest.Server, token string) *Adapter {
	t.Helper()
	return channeltest.Build(t, New, "mattermost", map[string]string{"server_url": srv.URL},
		map[string]string{"token": token}).(*Adapter)
}

func TestConnectReceiveReply(t *testing.T) {
	srv := channeltest.Cleanup(t, mattermosttest.New())
	a := build(t, srv, mattermosttest.BotToken)
	h := channeltest.NewHost()
	ctx := context.Background()
	cancel, done := channeltest.Run(a, h)

	id := channeltest.Recv(t, h.Connections)
	if id.ID != mattermosttest.Bot.ID || id.Name != "fangbot" {
		t.Fatalf("identity = %+v", id)
	}
	// The bot's own post (echoed by the server) must not come back in.
	srv.Say(mattermosttest.Bot, mattermosttest.TownSquare.ID, "I am the bot", "")
	p := srv.Say(mattermosttest.Alice, mattermosttest.TownSquare.ID, "hello bot", "")
	in := channeltest.Recv(t, h.Delivered)
	if in.Text != "hello bot" || in.ChatID != mattermosttest.TownSquare.ID || in.UserID != mattermosttest.Alice.ID ||
		in.UserName != "alice" || in.MessageID != p.ID || in.Direct {
		t.Fatalf("inbound = %+v", in)
	}

	id2, err := a.Send(ctx, channel.Outbound{ChatID: in.ChatID, Text: "hi alice", ReplyTo: in.MessageID, ThreadID: in.ThreadID})
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.WaitPost(ctx, func(q mattermosttest.Post) bool { return q.ID == id2 })
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != "hi alice" || got.RootID != p.ID || got.UserID != mattermosttest.Bot.ID {
		t.Fatalf("reply post = %+v", got)
	}
	select {
	case extra := <-h.Delivered:
		t.Fatalf("unexpected inbound %+v", extra)
	default:
	}
	cancel()
	if err := channeltest.Recv(t, done); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func TestBadTokenIsPermanent(t *testing.T) {
	srv := channeltest.Cleanup(t, mattermosttest.New())
	a := build(t, srv, "wrong-token")
	err := a.Run(context.Background(), channeltest.NewHost())
	if !channel.IsPermanent(err) {
		t.Fatalf("Run = %v, want permanent", err)
	}
	if got := srv.Requests("GET /api/v4/users/me"); got != 1 {
		t.Fatalf("users/me called %d times", got)
	}
	if srv.Requests("GET /api/v4/websocket") != 0 {
		t.Fatal("websocket dialled with a bad token")
	}
	if _, err := a.Send(context.Background(), channel.Outbound{ChatID: mattermosttest.TownSquare.ID, Text: "x"}); !channel.IsPermanent(err) {
		t.Fatalf("Send = %v, want permanent", err)
	}
}

func TestOutageIsTransientAndRecovers(t *testing.T) {
	srv := channeltest.Cleanup(t, mattermosttest.New())
	a := build(t, srv, mattermosttest.BotToken)
	h, done := channeltest.RunConnected(t, a)

	channeltest.Outage(t, a, h, done, func() { srv.SetDown(true) })
	srv.SetDown(false)
	channeltest.Rerun(t, a, h)
	srv.Say(mattermosttest.Alice, mattermosttest.TownSquare.ID, "back?", "")
	if in := channeltest.Recv(t, h.Delivered); in.Text != "back?" {
		t.Fatalf("inbound = %+v", in)
	}
}

func TestSendErrors(t *testing.T) {
	srv := channeltest.Cleanup(t, mattermosttest.New())
	a := build(t, srv, mattermosttest.BotToken)
	ctx := context.Background()

	srv.RateLimitNext(1, 7)
	_, err := a.Send(ctx, channel.Outbound{ChatID: mattermosttest.TownSquare.ID, Text: "x"})
	if channel.IsPermanent(err) || channel.IsRejected(err) || channel.RetryHint(err) != 7*time.Second {
		t.Fatalf("429: err=%v hint=%v", err, channel.RetryHint(err))
	}
	srv.RateLimitNext(1, 999999999) // hostile or buggy: must not park the channel for decades
	_, err = a.Send(ctx, channel.Outbound{ChatID: mattermosttest.TownSquare.ID, Text: "x"})
	if channel.RetryHint(err) != httpretry.MaxWait {
		t.Fatalf("hostile 429: hint=%v, want the cap %v", channel.RetryHint(err), httpretry.MaxWait)
	}
	if _, err := a.Send(ctx, channel.Outbound{ChatID: "nochannel00000000000000000", Text: "x"}); !channel.IsRejected(err) {
		t.Fatalf("unknown channel: %v, want rejected", err)
	}
	srv.SetDown(true)
	_, err = a.Send(ctx, channel.Outbound{ChatID: mattermosttest.TownSquare.ID, Text: "x"})
	var se *channel.StatusError
	if !errors.As(err, &se) || se.Status != 503 || channel.IsPermanent(err) || channel.IsRejected(err) {
		t.Fatalf("503: %v", err)
	}
}

func TestBuildRejectsBadURL(t *testing.T) {
	spec, _ := channel.Lookup("mattermost")
	_, err := New(&channel.Config{Spec: spec, Values: map[string]string{"server_url": "mattermost.example.com"}, Secrets: map[string]string{"token": "x"}})
	var fe *channel.FieldError
	if !errors.As(err, &fe) || fe.Field != "server_url" {
		t.Fatalf("err = %v", err)
	}
}

func TestRetriedSendIsNotDuplicated(t *testing.T) {
	srv := channeltest.Cleanup(t, mattermosttest.New())
	a := build(t, srv, mattermosttest.BotToken)
	if _, err := a.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	msg := channel.Outbound{ChatID: mattermosttest.TownSquare.ID, Text: "once", Key: "mattermost-7"}
	id1, err := a.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := a.Send(context.Background(), msg) // the outbox retrying after a lost answer
	if err != nil || id2 != id1 || len(srv.Posts(mattermosttest.TownSquare.ID)) != 1 {
		t.Fatalf("retry posted again: %s %s %v %d", id1, id2, err, len(srv.Posts("")))
	}
	msg.Key = "mattermost-8"
	if _, err := a.Send(context.Background(), msg); err != nil || len(srv.Posts("")) != 2 {
		t.Fatalf("next message: %v", err)
	}
}
