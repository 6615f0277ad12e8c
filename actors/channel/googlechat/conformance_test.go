package googlechat_test

import (
	"context"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/googlechat"
	"github.com/fangd/fangd/actors/channel/googlechat/googlechattest"
)

// platform: Chat posts Alice's signed interaction events to fangd's
// endpoint; replies are created in her room through the Chat API.
type platform struct {
	*googlechattest.Server
	endpoint string
}

func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("google_chat")
	configure(h, p.Server, channeltest.Credential(bad, p.ServiceAccountJSON(), p.UnknownServiceAccountJSON()), nil)
}

func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(p.SendMessage(p.endpoint, googlechattest.Event{Space: room, Sender: alice, Text: text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.WaitCreated(ctx, func(c googlechattest.Created) bool { return c.Space == room.Name && c.Message.Text == text })
	return err
}

// InjectForged signs for another project's audience.
func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	return p.Post(p.endpoint, p.EventBody(googlechattest.Event{Space: room, Sender: alice, Text: text}), p.SignedToken("999999999999"))
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name: "google_chat", Builder: googlechat.New, LinkRoute: "POST " + googlechattest.TokenPath,
		Pushed: true, NoRetryAfter: true, // Chat's RESOURCE_EXHAUSTED names no wait
		New: func(t *testing.T) channeltest.Platform {
			return &platform{Server: channeltest.Cleanup(t, googlechattest.New())}
		},
		BadTokenError: "invalid_grant",
	})
}
