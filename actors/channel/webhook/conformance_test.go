package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/webhook"
	"github.com/fangd/fangd/actors/channel/webhook/webhooktest"
)

// platform drives webhooktest for the conformance suite: a CRM posts
// signed messages to fangd's endpoint and takes signed callbacks.
type platform struct {
	*webhooktest.Receiver
	endpoint string
}

// Configure with bad gives the channel a secret the receiver does not
// share: its signed callbacks are refused with 401.
func (p *platform) Configure(h *channeltest.Harness, bad bool) {
	p.endpoint = h.WebhookURL("webhook")
	token := secret
	if bad {
		token = "the-receivers-other-secret"
	}
	h.Configure("webhook", map[string]any{"token": token, "callback_url": p.URL, "agent_name": channeltest.AgentName})
}

func (p *platform) Ready(context.Context) error { return nil }

func (p *platform) Inject(_ context.Context, text string) error {
	return channeltest.Accepted(webhooktest.Send(p.endpoint, secret, webhooktest.Inbound{SenderID: "crm-42", Message: text}))
}

func (p *platform) WaitReply(ctx context.Context, text string) error {
	_, err := p.Wait(ctx, message(text))
	return err
}

func (p *platform) LinkRequests() int { return p.Requests() }

func (p *platform) RateLimitNext(n int) time.Duration {
	p.Receiver.RateLimitNext(n, 1)
	return time.Second
}

func (p *platform) InjectForged(_ context.Context, text string) (int, error) {
	body := []byte(`{"sender_id":"x","message":"` + text + `"}`)
	return webhooktest.Post(p.endpoint, body, webhooktest.Sign("wrong-secret-wrong", body))
}

func TestConformance(t *testing.T) {
	channeltest.Conformance(t, channeltest.Suite{
		Name:     "webhook",
		Builders: channel.Builders{"webhook": webhook.New},
		New: func(t *testing.T) channeltest.Platform {
			rcv := webhooktest.NewReceiver(secret)
			t.Cleanup(rcv.Close)
			return &platform{Receiver: rcv}
		},
		BadTokenError: "HTTP 401",
		Pushed:        true,
	})
}
