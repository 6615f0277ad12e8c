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

// host records what an adapter reports, standing in for the runtime;
// wait takes its next report.
var newHost = channeltest.NewHost

func wait[T any](t *testing.T, ch <-chan T) T { return channeltest.Recv(t, ch) }

func build(t *testing.T, srv *gotifytest.Server, app, client string) *Adapter {
	t.Helper()
	return channeltest.Build(t, New, "gotify", map[string]string{"server_url": srv.URL},
		map[string]string{"app_token": app, "client_token": client}).(*Adapter)
}

func TestStreamReceiveReplyNoEcho(t *testing.T) {
	srv := gotifytest.New()
	defer srv.Close()
	_, _ = srv.Push(gotifytest.PhoneAppToken, "old", "history before fangd started")
	a := build(t, srv, gotifytest.BotAppToken, gotifytest.BotClientToken)
	h := newHost()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, h) }()
	if id := wait(t, h.Connections); id.Name != "admin" || id.DisplayName != "fangd" {
		t.Fatalf("identity %+v", id)
	}
	if err := srv.WaitStreams(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m, _ := srv.Push(gotifytest.PhoneAppToken, "phone", "ping from phone")
	in := wait(t, h.Delivered)
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
	if in := wait(t, h.Delivered); in.Text != "second" {
		t.Fatalf("own reply delivered: %+v", in)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestOutageCatchUp(t *testing.T) {
	srv := gotifytest.New()
	defer srv.Close()
	a := build(t, srv, gotifytest.BotAppToken, gotifytest.BotClientToken)
	h := newHost()
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background(), h) }()
	wait(t, h.Connections)
	_ = srv.WaitStreams(context.Background(), 1)
	srv.SetDown(true)
	if err := wait(t, done); err == nil || channel.IsPermanent(err) {
		t.Fatalf("outage: %v", err)
	}
	if err := a.Run(context.Background(), h); err == nil || channel.IsPermanent(err) {
		t.Fatalf("during outage: %v", err)
	}
	srv.SetDown(false)
	_, _ = srv.Push(gotifytest.PhoneAppToken, "phone", "sent while fangd was away")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- a.Run(ctx, h) }()
	wait(t, h.Connections)
	if in := wait(t, h.Delivered); in.Text != "sent while fangd was away" {
		t.Fatalf("catch-up got %+v", in)
	}
}

func TestBadTokens(t *testing.T) {
	srv := gotifytest.New()
	defer srv.Close()
	if err := build(t, srv, gotifytest.BotAppToken, "Cwrong").Run(context.Background(), newHost()); !channel.IsPermanent(err) {
		t.Fatalf("bad client token: %v", err)
	}
	if n := srv.Requests("GET /current/user"); n != 1 {
		t.Fatalf("probed %d times", n)
	}
	if err := build(t, srv, "Awrong", gotifytest.BotClientToken).Run(context.Background(), newHost()); !channel.IsPermanent(err) {
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
