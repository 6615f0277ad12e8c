package gotify

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
)

func build(t *testing.T, srv *gotifytest.Server, app, client string) *Adapter {
	t.Helper()
	return channeltest.Build(t, New, "gotify", map[string]string{"server_url": srv.URL},
		map[string]string{"app_token": app, "client_token": client}).(*Adapter)
}

func TestStreamReceiveReplyNoEcho(t *testing.T) {
	srv := channeltest.Cleanup(t, gotifytest.New())
	_, _ = srv.Push(gotifytest.PhoneAppToken, "old", "history before fangd started")
	a := build(t, srv, gotifytest.BotAppToken, gotifytest.BotClientToken)
	h := channeltest.NewHost()
	ctx := context.Background()
	cancel, done := channeltest.Run(a, h)
	if id := channeltest.Recv(t, h.Connections); id.Name != "admin" || id.DisplayName != "fangd" {
		t.Fatalf("identity %+v", id)
	}
	if err := srv.WaitStreams(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m, _ := srv.Push(gotifytest.PhoneAppToken, "phone", "ping from phone")
	in := channeltest.Recv(t, h.Delivered)
	if in.Text != "ping from phone" || in.MessageID != strconv.FormatInt(m.ID, 10) || in.UserName != "phone" || in.ChatID != "2" {
		t.Fatalf("inbound %+v (history must not be replayed on first start)", in)
	}
	id, err := a.Send(ctx, channel.Outbound{ChatID: in.ChatID, Text: "pong"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.WaitMessage(ctx, func(x gotifytest.Message) bool { return strconv.FormatInt(x.ID, 10) == id })
	if err != nil || got.Message != "pong" || got.AppID != 1 {
		t.Fatalf("reply %+v %v", got, err)
	}
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "second")
	if in := channeltest.Recv(t, h.Delivered); in.Text != "second" {
		t.Fatalf("own reply delivered: %+v", in)
	}
	cancel()
	if err := channeltest.Recv(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestOutageCatchUp(t *testing.T) {
	srv := channeltest.Cleanup(t, gotifytest.New())
	a := build(t, srv, gotifytest.BotAppToken, gotifytest.BotClientToken)
	h, done := channeltest.RunConnected(t, a)
	_ = srv.WaitStreams(context.Background(), 1)
	channeltest.Outage(t, a, h, done, func() { srv.SetDown(true) })
	srv.SetDown(false)
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "sent while fangd was away")
	channeltest.Rerun(t, a, h)
	if in := channeltest.Recv(t, h.Delivered); in.Text != "sent while fangd was away" {
		t.Fatalf("catch-up got %+v", in)
	}
}

func TestBadTokens(t *testing.T) {
	srv := channeltest.Cleanup(t, gotifytest.New())
	if err := build(t, srv, gotifytest.BotAppToken, "Cwrong").Run(context.Background(), channeltest.NewHost()); !channel.IsPermanent(err) {
		t.Fatalf("bad client token: %v", err)
	}
	if n := srv.Requests("GET /current/user"); n != 1 {
		t.Fatalf("probed %d times", n)
	}
	if err := build(t, srv, "Awrong", gotifytest.BotClientToken).Run(context.Background(), channeltest.NewHost()); !channel.IsPermanent(err) {
		t.Fatalf("foreign app token: %v", err)
	}
	if srv.Requests("GET /stream") != 0 {
		t.Fatal("stream opened with bad credentials")
	}
	if _, err := build(t, srv, "Awrong", gotifytest.BotClientToken).Send(context.Background(), channel.Outbound{Text: "x"}); !channel.IsPermanent(err) {
		t.Fatalf("send with bad app token: %v", err)
	}
	a := build(t, srv, gotifytest.BotAppToken, gotifytest.BotClientToken)
	srv.RateLimitNext(1, 1)
	_, err := a.Send(context.Background(), channel.Outbound{Text: "x"})
	if channel.RetryHint(err) != time.Second || channel.IsPermanent(err) {
		t.Fatalf("429: %v", err)
	}
}
