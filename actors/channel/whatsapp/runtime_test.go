package whatsapp_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
)

const (
	accessToken = "EAAGfangdAccessToken"
	appSecret   = "whatsapp-app-secret"
	verifyToken = "fangd-verify-me"
)

func setup(t *testing.T) (*channeltest.Harness, *whatsapptest.Server, string) {
	srv := channeltest.Cleanup(t, whatsapptest.New(accessToken, appSecret))
	h := channeltest.New(t, channel.Builders{"whatsapp": whatsapp.New})
	return h, srv, h.WebhookURL("whatsapp")
}

func configure(h *channeltest.Harness, srv *whatsapptest.Server, token string) {
	h.Configure("whatsapp", map[string]any{"access_token": token, "app_secret": appSecret, "verify_token": verifyToken,
		"phone_number_id": srv.PhoneNumberID, "api_url": srv.URL + "/" + whatsapptest.Version, "agent_name": channeltest.AgentName})
}

func TestVerifyHandshake(t *testing.T) {
	h, srv, endpoint := setup(t)
	configure(h, srv, accessToken)
	h.WaitState("whatsapp", channel.StateConnected)
	status, body, err := whatsapptest.Verify(endpoint, verifyToken, "1158201444")
	if err != nil || status != http.StatusOK || body != "1158201444" {
		t.Fatalf("handshake: %d %q %v", status, body, err)
	}
	if status, _, _ := whatsapptest.Verify(endpoint, "guess", "1"); status != http.StatusForbidden {
		t.Fatalf("wrong verify token: %d", status)
	}
}

func TestInboundReachesAgentAndReplyArrives(t *testing.T) {
	h, srv, endpoint := setup(t)
	configure(h, srv, accessToken)
	v := h.WaitState("whatsapp", channel.StateConnected)
	if v.Identity == nil || v.Identity.DisplayName != "Fang Test Bot" {
		t.Fatalf("identity %+v", v.Identity)
	}
	status, err := srv.Deliver(endpoint, whatsapptest.Inbound{From: "15551234567", Name: "Alice", Text: "hola", ID: "wamid.in1"})
	if err != nil || status != http.StatusOK {
		t.Fatalf("delivery: %d %v", status, err)
	}
	got, err := srv.WaitSent(channeltest.Context(t), func(m whatsapptest.Sent) bool { return m.To == "15551234567" })
	if err != nil {
		t.Fatal(err)
	}
	if got.Body != "echo: hola" || got.ContextID != "wamid.in1" {
		t.Fatalf("sent %+v", got)
	}
	// Status callbacks carry no message and must not reach the agent.
	body := srv.StatusBody(got.ID, "15551234567")
	if st, _ := whatsapptest.Post(endpoint, body, whatsapptest.Signature(appSecret, body)); st != http.StatusOK {
		t.Fatalf("status callback: %d", st)
	}
	if n := len(h.Agents.Turns()); n != 1 {
		t.Fatalf("turns = %d", n)
	}
}

func TestBadSignatureIs401(t *testing.T) {
	h, srv, endpoint := setup(t)
	configure(h, srv, accessToken)
	h.WaitState("whatsapp", channel.StateConnected)
	body := srv.NotificationBody(whatsapptest.Inbound{From: "15550000000", Text: "forged"})
	for _, sig := range []string{"", "sha256=deadbeef", whatsapptest.Signature("not-the-secret", body)} {
		if st, _ := whatsapptest.Post(endpoint, body, sig); st != http.StatusUnauthorized {
			t.Fatalf("signature %q: %d", sig, st)
		}
	}
	if len(h.Agents.Turns()) != 0 || h.Get("whatsapp").MessagesIn != 0 {
		t.Fatal("forged message routed")
	}
}

func TestGatewayModeSendsThroughGateway(t *testing.T) {
	gw := channeltest.Cleanup(t, whatsapptest.NewGateway())
	h := channeltest.New(t, channel.Builders{"whatsapp": whatsapp.New})
	h.Configure("whatsapp", map[string]any{"gateway_url": gw.URL})
	// Not linked yet: the channel waits (backoff), it does not give up.
	h.WaitState("whatsapp", channel.StateBackoff)
	gw.Authenticate()
	h.WaitState("whatsapp", channel.StateConnected)
	if _, err := h.Service.SendMessage(context.Background(), "whatsapp", "+15559998888", "from comms", "system"); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("gateway send", func() bool { return len(gw.Sent()) == 1 })
	if s := gw.Sent()[0]; s["to"] != "15559998888" || s["text"] != "from comms" {
		t.Fatalf("gateway got %v", s)
	}
}
