package whatsapp_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
)

const customer = "15551234567"

// platform (Cloud API mode): Meta posts the customer's signed
// notifications to fangd's endpoint; replies go to the Graph API.
type platform struct {
	*whatsapptest.Server
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("whatsapp")
	configure(h, p.Server, channeltest.Credential(bad, accessToken, "EAAGexpired"))
}

func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(p.Deliver(p.endpoint, whatsapptest.Inbound{From: customer, Name: "Alice", Text: text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitSent(ctx, func(m whatsapptest.Sent) bool { return m.To == customer && m.Body == text })
	return err
}

// InjectForged signs with a secret that is not the app's.
func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	body := p.NotificationBody(whatsapptest.Inbound{From: customer, Text: text})
	return whatsapptest.Post(p.endpoint, body, whatsapptest.Signature("not-the-secret", body))
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "whatsapp", Builder: whatsapp.New, LinkRoute: "GET /{version}/" + whatsapptest.PhoneNumberID,
		Pushed: true, NoRetryAfter: true, // the Graph API's 130429 names no wait
		New: func(t *testing.T) channeltest.Platform {
			return &platform{Server: channeltest.Cleanup(t, whatsapptest.New(accessToken, appSecret))}
		},
		BadTokenError: "Error validating access token",
	})
}
