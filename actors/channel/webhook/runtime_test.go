package webhook_test

import (
	"net/http"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/webhook"
	"github.com/fangd/fangd/actors/channel/webhook/webhooktest"
)

const secret = "0123456789abcdef-shared"

func setup(t *testing.T, receiverSecret string) (*channeltest.Harness, *webhooktest.Receiver, string) {
	rcv := channeltest.Cleanup(t, webhooktest.NewReceiver(receiverSecret))
	h := channeltest.New(t, channel.Builders{"webhook": webhook.New})
	return h, rcv, h.WebhookURL("webhook")
}

func configure(h *channeltest.Harness, rcv *webhooktest.Receiver) {
	h.Configure("webhook", map[string]any{"token": secret, "callback_url": rcv.URL, "agent_name": channeltest.AgentName})
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
	cb, err := rcv.Wait(channeltest.Context(t), message("echo: new lead"))
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
