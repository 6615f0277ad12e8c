package webhook_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/webhook"
	"github.com/fangd/fangd/actors/channel/webhook/webhooktest"
)

// platform: a CRM posts signed messages to fangd's endpoint and takes
// signed callbacks. A bad credential is a channel secret the receiver
// does not share: it refuses fangd's callbacks with 401.
type platform struct {
	*webhooktest.Receiver
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("webhook")
	h.Configure("webhook", map[string]any{"token": channeltest.Credential(bad, secret, "the-receivers-other-secret"),
		"callback_url": p.URL, "agent_name": channeltest.AgentName})
}

func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(webhooktest.Send(p.endpoint, secret, webhooktest.Inbound{SenderID: "crm-42", Message: text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.Wait(ctx, message(text))
	return err
}

func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	body := []byte(`{"sender_id":"x","message":"` + text + `"}`)
	return webhooktest.Post(p.endpoint, body, webhooktest.Sign("wrong-secret-wrong", body))
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "webhook", Builder: webhook.New, LinkRoute: webhooktest.CallbackRoute, Pushed: true,
		New: func(t *testing.T) channeltest.Platform {
			return &platform{Receiver: channeltest.Cleanup(t, webhooktest.NewReceiver(secret))}
		},
		BadTokenError: "HTTP 401",
	})
}
