package ntfy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
)

func build(t *testing.T, srv *ntfytest.Server, token string) *Adapter {
	t.Helper()
	return channeltest.Build(t, New, "ntfy", map[string]string{"server_url": srv.URL, "topic": "fang"},
		map[string]string{"token": token}).(*Adapter)
}

func TestSubscribeReceiveReplyNoEcho(t *testing.T) {
	srv := channeltest.Cleanup(t, ntfytest.New())
	a := build(t, srv, ntfytest.BotToken)
	h := channeltest.NewHost()
	ctx := context.Background()
	cancel, done := channeltest.Run(a, h)
	if id := channeltest.Recv(t, h.Connections); id.Name != "fangbot" {
		t.Fatalf("identity %+v", id)
	}
	if err := srv.WaitSubscribers(ctx, "fang", 1); err != nil {
		t.Fatal(err)
	}
	m := srv.Publish("fang", "phone", "what's up?")
	in := channeltest.Recv(t, h.Delivered)
	if in.Text != "what's up?" || in.ChatID != "fang" || in.UserName != "phone" || in.MessageID != m.ID {
		t.Fatalf("inbound %+v", in)
	}
	id, err := a.Send(ctx, channel.Outbound{ChatID: in.ChatID, Text: "all good"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.WaitMessage(ctx, func(x ntfytest.Message) bool { return x.ID == id })
	if err != nil || got.Message != "all good" || got.Title != "fangd" {
		t.Fatalf("reply %+v %v", got, err)
	}
	// The reply comes back on the stream; it must not be delivered. A
	// later user message proves the stream moved past it.
	srv.Publish("fang", "phone", "thanks")
	if in := channeltest.Recv(t, h.Delivered); in.Text != "thanks" {
		t.Fatalf("echo delivered: %+v", in)
	}
	if c, _ := h.Cursor("since"); c == "" {
		t.Fatal("cursor not saved")
	}
	cancel()
	if err := channeltest.Recv(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestResumeFromCursorAfterOutage(t *testing.T) {
	srv := channeltest.Cleanup(t, ntfytest.New())
	a := build(t, srv, ntfytest.BotToken)
	h, done := channeltest.RunConnected(t, a)
	_ = srv.WaitSubscribers(context.Background(), "fang", 1)
	srv.Publish("fang", "phone", "one")
	channeltest.Recv(t, h.Delivered)

	channeltest.Outage(t, a, h, done, func() { srv.SetDown(true) })
	// Messages published while fangd was away (the server caches them).
	srv.SetDown(false)
	srv.Publish("fang", "phone", "two")
	channeltest.Rerun(t, a, h)
	if in := channeltest.Recv(t, h.Delivered); in.Text != "two" {
		t.Fatalf("after outage got %+v", in)
	}
	select {
	case extra := <-h.Delivered:
		t.Fatalf("replayed %+v", extra)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestBadTokenPermanentNoStorm(t *testing.T) {
	srv := channeltest.Cleanup(t, ntfytest.New())
	a := build(t, srv, "tk_wrong")
	if err := a.Run(context.Background(), channeltest.NewHost()); !channel.IsPermanent(err) {
		t.Fatalf("Run = %v", err)
	}
	if n := srv.Requests("GET /v1/account"); n != 1 {
		t.Fatalf("account probed %d times", n)
	}
	if srv.Requests("GET /fang/json") != 0 {
		t.Fatal("subscribed with a bad token")
	}
	// Anonymous on a protected server: 403 on subscribe is permanent too.
	anon := build(t, srv, "")
	if err := anon.Run(context.Background(), channeltest.NewHost()); !channel.IsPermanent(err) {
		t.Fatalf("anonymous Run = %v", err)
	}
}

func TestSendLimitsAndSplit(t *testing.T) {
	srv := channeltest.Cleanup(t, ntfytest.New())
	a := build(t, srv, ntfytest.BotToken)
	ctx := context.Background()
	srv.RateLimitNext(1, 1)
	if _, err := a.Send(ctx, channel.Outbound{ChatID: "fang", Text: "x"}); channel.IsPermanent(err) || channel.IsRejected(err) || err == nil {
		t.Fatalf("429: %v", err)
	}
	long := strings.Repeat("é", 3000) // 6000 bytes, 3000 runes
	if _, err := a.Send(ctx, channel.Outbound{ChatID: "fang", Text: long}); err != nil {
		t.Fatal(err)
	}
	var joined string
	for _, m := range srv.Messages("fang") {
		if len(m.Message) > ntfytest.MaxMessageBytes {
			t.Fatalf("message of %d bytes", len(m.Message))
		}
		joined += m.Message
	}
	if joined != long {
		t.Fatal("split lost text")
	}
	if _, err := a.Send(ctx, channel.Outbound{ChatID: "bad topic!", Text: "x"}); !channel.IsRejected(err) {
		t.Fatalf("bad topic: %v", err)
	}
}
