package webhook_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/webhook"
	"github.com/fangd/fangd/actors/channel/webhook/webhooktest"
)

const secret = "0123456789abcdef-shared"

func setup(t *testing.T, receiverSecret string) (*channeltest.Harness, *webhooktest.Receiver, string) {
	rcv := webhooktest.NewReceiver(receiverSecret)
	t.Cleanup(rcv.Close)
	h := channeltest.New(t, channel.Builders{"webhook": webhook.New})
	return h, rcv, h.WebhookURL("webhook")
}

func configure(h *channeltest.Harness, rcv *webhooktest.Receiver) {
	h.Configure("webhook", map[string]any{"token": secret, "callback_url": rcv.URL, "agent_name": channeltest.AgentName})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func message(text string) func(webhooktest.Callback) bool {
	return func(c webhooktest.Callback) bool { return c.Event == "" && c.Message == text }
}

func TestSignedInboundReachesAgentAndReplyIsSignedCallback(t *testing.T) {
	h, rcv, endpoint := setup(t, secret)
	configure(h, rcv)
	h.WaitState("webhook", channel.StateConnected)
	status, err := webhooktest.Send(endpoint, secret, webhooktest.Inbound{SenderID: "crm-42", SenderName: "CRM", Message: "new lead", ThreadID: "t-1"})
	if err != nil || status != http.StatusOK {
		t.Fatalf("inbound status %d %v", status, err)
	}
	cb, err := rcv.Wait(ctx(t), message("echo: new lead"))
	if err != nil {
		t.Fatal(err)
	}
	if cb.RecipientID != "crm-42" || cb.ThreadID != "t-1" || cb.SenderID != "fangd" {
		t.Fatalf("callback %+v", cb)
	}
	if rcv.Rejected() != 0 {
		t.Fatal("receiver refused fangd's signature")
	}
}

func TestBadSignatureIs401AndNothingRouted(t *testing.T) {
	h, rcv, endpoint := setup(t, secret)
	configure(h, rcv)
	h.WaitState("webhook", channel.StateConnected)
	for _, sig := range []string{"", "sha256=00", webhooktest.Sign("wrong-secret-wrong", []byte(`{"sender_id":"x","message":"hi"}`))} {
		status, err := webhooktest.Post(endpoint, []byte(`{"sender_id":"x","message":"hi"}`), sig)
		if err != nil || status != http.StatusUnauthorized {
			t.Fatalf("signature %q: status %d %v", sig, status, err)
		}
	}
	if v := h.Get("webhook"); v.MessagesIn != 0 || len(h.Agents.Turns()) != 0 {
		t.Fatalf("routed a forged message: %+v", v.Status)
	}
}

func TestWrongSecretAtReceiverIsErrorWithoutRetryStorm(t *testing.T) {
	h, rcv, _ := setup(t, "the-receivers-other-secret")
	configure(h, rcv)
	v := h.WaitState("webhook", channel.StateError)
	if !strings.Contains(v.LastError, "HTTP 401") {
		t.Fatalf("last_error = %q", v.LastError)
	}
	time.Sleep(300 * time.Millisecond)
	if n := rcv.Requests(); n != 1 {
		t.Fatalf("receiver called %d times, want 1", n)
	}
}

func TestOutageBacksOffAndRecovers(t *testing.T) {
	h, rcv, endpoint := setup(t, secret)
	rcv.SetDown(true)
	configure(h, rcv)
	h.WaitState("webhook", channel.StateBackoff)
	h.WaitFor("retries", func() bool { return rcv.Requests() >= 3 })
	rcv.SetDown(false)
	h.WaitState("webhook", channel.StateConnected)
	if _, err := webhooktest.Send(endpoint, secret, webhooktest.Inbound{SenderID: "s", Message: "up?"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rcv.Wait(ctx(t), message("echo: up?")); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimitedCallbackIsRetried(t *testing.T) {
	h, rcv, endpoint := setup(t, secret)
	configure(h, rcv)
	h.WaitState("webhook", channel.StateConnected)
	rcv.RateLimitNext(1, 1)
	if _, err := webhooktest.Send(endpoint, secret, webhooktest.Inbound{SenderID: "s", Message: "slow"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rcv.Wait(ctx(t), message("echo: slow")); err != nil {
		t.Fatal(err)
	}
}

func TestRepliesQueuedSurviveRestart(t *testing.T) {
	h, rcv, endpoint := setup(t, secret)
	configure(h, rcv)
	h.WaitState("webhook", channel.StateConnected)
	h.Agents.SetReply(func(_, m string) (string, error) {
		rcv.SetDown(true)
		return "pong", nil
	})
	if _, err := webhooktest.Send(endpoint, secret, webhooktest.Inbound{SenderID: "s", Message: "ping"}); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("reply queued", func() bool { return h.Get("webhook").OutboxPending == 1 })
	h.Restart()
	h.WaitFor("reply still queued", func() bool { return h.Get("webhook").OutboxPending == 1 })
	rcv.SetDown(false)
	if _, err := rcv.Wait(ctx(t), message("pong")); err != nil {
		t.Fatal(err)
	}
}
